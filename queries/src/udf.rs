//! Functions curators need in every session.
//!
//! - `error_family(error_type)`: the coarse family of an ErrorType (perception, planning,
//!   execution, termination), `NULL` for anything else.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, StringArray};
use arrow::compute::cast;
use arrow::datatypes::DataType;
use datafusion::logical_expr::{ColumnarValue, Volatility, create_udf};
use datafusion::prelude::SessionContext;
use regrpo_schemas::ErrorType;

/// Registers every UDF on a context.
pub fn register_all(ctx: &SessionContext) {
    ctx.register_udf(create_udf(
        "error_family",
        vec![DataType::Utf8],
        DataType::Utf8,
        Volatility::Immutable,
        Arc::new(error_family),
    ));
}

fn error_family(args: &[ColumnarValue]) -> datafusion::error::Result<ColumnarValue> {
    let arrays = ColumnarValue::values_to_arrays(args)?;
    let input = cast(&arrays[0], &DataType::Utf8)?;
    let input = input.as_any().downcast_ref::<StringArray>().expect("cast to Utf8 gives a StringArray");
    let out: StringArray =
        input.iter().map(|v| v.and_then(|s| s.parse::<ErrorType>().ok()).map(ErrorType::family)).collect();
    Ok(ColumnarValue::Array(Arc::new(out) as ArrayRef))
}
