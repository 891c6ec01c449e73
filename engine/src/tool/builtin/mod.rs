//! The builtin tools: deterministic, working on the task's sandbox folder.

pub mod answer;
pub mod calculator;
pub mod files;
pub mod image;
pub mod search;
pub mod sql;

use std::sync::Arc;

use super::Tool;

/// Every builtin tool.
pub fn all() -> Vec<Arc<dyn Tool>> {
    let mut v = vec![
        calculator::Calculator::tool(),
        files::InspectFile::tool(),
        sql::SqlQuery::tool(),
        search::SearchText::tool(),
        answer::FinalAnswer::tool(),
    ];
    v.extend(image::tools());
    v
}
