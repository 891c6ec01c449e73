//! Functions curators need in every session.
//!
//! - `error_family(error_type)`: the coarse family of an ErrorType (perception, planning,
//!   execution, termination), `NULL` for anything else.
//! - `token_count(text)`: the number of pre-tokens of a text — runs of letters, runs of digits
//!   and runs of other non-space characters, the split a GPT-2-style pre-tokenizer makes before
//!   its merges. It is vocabulary-free, so counts agree across models; a model's own tokenizer
//!   gives more (sub-word pieces), never fewer.
//! - JSON access on the JSON-text columns (`action.arguments`, `tool_specs`, `meta`…), from
//!   `datafusion-functions-json`: `json_get_str(failed_action.arguments, 'path')`,
//!   `json_get_int`, `json_get_float`, `json_get_bool`, `json_get_json`, `json_as_text`,
//!   `json_contains`, `json_length`, `json_object_keys`, and the `->` / `->>` operators.

use std::sync::{Arc, OnceLock};

use arrow::array::{Array, ArrayRef, Int64Array, StringArray};
use arrow::compute::cast;
use arrow::datatypes::DataType;
use datafusion::logical_expr::{ColumnarValue, Volatility, create_udf};
use datafusion::prelude::SessionContext;
use regex::Regex;
use regrpo_schemas::ErrorType;

/// Registers every UDF on a context.
pub fn register_all(ctx: &mut SessionContext) -> datafusion::error::Result<()> {
    ctx.register_udf(create_udf(
        "error_family",
        vec![DataType::Utf8],
        DataType::Utf8,
        Volatility::Immutable,
        Arc::new(error_family),
    ));
    ctx.register_udf(create_udf(
        "token_count",
        vec![DataType::Utf8],
        DataType::Int64,
        Volatility::Immutable,
        Arc::new(token_count_udf),
    ));
    datafusion_functions_json::register_all(ctx)
}

fn utf8(arg: &ArrayRef) -> datafusion::error::Result<StringArray> {
    let input = cast(arg, &DataType::Utf8)?;
    Ok(input.as_any().downcast_ref::<StringArray>().expect("cast to Utf8 gives a StringArray").clone())
}

fn error_family(args: &[ColumnarValue]) -> datafusion::error::Result<ColumnarValue> {
    let arrays = ColumnarValue::values_to_arrays(args)?;
    let out: StringArray =
        utf8(&arrays[0])?.iter().map(|v| v.and_then(|s| s.parse::<ErrorType>().ok()).map(ErrorType::family)).collect();
    Ok(ColumnarValue::Array(Arc::new(out) as ArrayRef))
}

/// The pre-token count `token_count` computes.
pub fn token_count(text: &str) -> usize {
    static PRE: OnceLock<Regex> = OnceLock::new();
    PRE.get_or_init(|| Regex::new(r"\p{L}+|\p{N}+|[^\s\p{L}\p{N}]+").expect("valid pattern")).find_iter(text).count()
}

fn token_count_udf(args: &[ColumnarValue]) -> datafusion::error::Result<ColumnarValue> {
    let arrays = ColumnarValue::values_to_arrays(args)?;
    let out: Int64Array = utf8(&arrays[0])?.iter().map(|v| v.map(|s| token_count(s) as i64)).collect();
    Ok(ColumnarValue::Array(Arc::new(out) as ArrayRef))
}

#[cfg(test)]
mod tests {
    #[test]
    fn token_count_splits_words_numbers_and_punctuation() {
        assert_eq!(super::token_count(""), 0);
        assert_eq!(super::token_count("FileNotFoundError: 'b.png' (2 files)"), 11);
        assert_eq!(super::token_count("x1"), 2);
    }
}
