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
        calculator::Calculator::new(),
        files::InspectFile::new(),
        sql::SqlQuery::new(),
        search::SearchText::new(),
        answer::FinalAnswer::new(),
    ];
    v.extend(image::tools());
    v
}
