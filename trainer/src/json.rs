//! JSON has no NaN: serde_json writes a NaN float as `null`, and these read it back as NaN
//! (for a figure that is not a number: a rate over no states, a KL that was not measured).

use serde::{Deserialize, Deserializer};

/// A float, NaN where the JSON holds `null`.
pub fn nan_if_null<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NAN))
}

/// A pair of floats, each NaN where the JSON holds `null`.
pub fn nan_pair_if_null<'de, D: Deserializer<'de>>(d: D) -> Result<(f64, f64), D::Error> {
    let (a, b) = <(Option<f64>, Option<f64>)>::deserialize(d)?;
    Ok((a.unwrap_or(f64::NAN), b.unwrap_or(f64::NAN)))
}
