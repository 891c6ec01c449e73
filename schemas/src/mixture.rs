//! The mixture rule: how a share of RoT rows against clean rows (and of each ErrorType among
//! the RoT rows) is met. Rows are **dropped**, in a seeded hash order of their ids, never
//! repeated: the mixture is a set of distinct rows. `regrpo publish --rot-fraction` writes that
//! set; SFT with a RoT fraction trains on it, taking the same share of each batch, so both kinds
//! go round at the same pace and no row is seen more often than another.
//!
//! A share of 0 or 1 keeps one kind only; for a share in between, when one kind is absent the
//! share cannot be met by dropping, and nothing is dropped.

use std::collections::BTreeMap;

use crate::error_type::ErrorType;
use crate::id::sha256_hex;

/// The seeded hash order rows are dropped in: a row with a smaller key is kept first.
pub fn order_key(seed: u64, id: &str) -> String {
    sha256_hex(format!("{seed}:{id}").as_bytes())
}

/// How many RoT and clean rows to keep of `rot` and `clean` for a RoT share of `f`.
pub fn share_quotas(rot: usize, clean: usize, f: f64) -> (usize, usize) {
    if f >= 1.0 {
        return (rot, 0);
    }
    if f <= 0.0 {
        return (0, clean);
    }
    if rot == 0 || clean == 0 {
        return (rot, clean);
    }
    let (r, c) = (rot as f64, clean as f64);
    let (keep_rot, keep_clean) =
        if r / (r + c) > f { ((f / (1.0 - f) * c).round(), c) } else { (r, ((1.0 - f) / f * r).round()) };
    (keep_rot as usize, keep_clean as usize)
}

/// The RoT rows to keep of each ErrorType so that they follow `target` (shares, summed to any
/// total): the largest total whose every share fits what is there (`have`).
pub fn error_quotas(target: &BTreeMap<ErrorType, f64>, have: &BTreeMap<String, usize>) -> BTreeMap<String, usize> {
    let total: f64 = target.values().sum();
    let n = target
        .iter()
        .filter(|(_, p)| **p > 0.0)
        .map(|(t, p)| *have.get(t.as_str()).unwrap_or(&0) as f64 / (p / total))
        .fold(f64::INFINITY, f64::min);
    let n = if n.is_finite() { n } else { 0.0 };
    target.iter().map(|(t, p)| (t.as_str().to_string(), (n * p / total).floor() as usize)).collect()
}

/// The `n` rows of `rows` that come first in the seeded hash order of their ids; the rows kept
/// stay in the order they had.
pub fn keep<T>(rows: Vec<T>, n: usize, seed: u64, id: impl Fn(&T) -> &str) -> Vec<T> {
    if n >= rows.len() {
        return rows;
    }
    let mut order: Vec<(String, usize)> = rows.iter().enumerate().map(|(i, r)| (order_key(seed, id(r)), i)).collect();
    order.sort();
    let mut chosen = vec![false; rows.len()];
    for (_, i) in &order[..n] {
        chosen[*i] = true;
    }
    rows.into_iter().zip(chosen).filter_map(|(r, c)| c.then_some(r)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_share_is_met_by_dropping_the_plentiful_kind() {
        assert_eq!(share_quotas(80, 100, 0.5), (80, 80));
        assert_eq!(share_quotas(300, 100, 0.5), (100, 100));
        assert_eq!(share_quotas(300, 100, 1.0), (300, 0));
        assert_eq!(share_quotas(300, 100, 0.0), (0, 100));
        assert_eq!(share_quotas(0, 100, 0.5), (0, 100), "nothing to mix with: nothing dropped");
    }

    #[test]
    fn keep_takes_a_seeded_subset_in_place() {
        let rows: Vec<String> = (0..50).map(|i| format!("r{i}")).collect();
        let a = keep(rows.clone(), 20, 1, |r| r);
        assert_eq!(a.len(), 20);
        assert!(a.windows(2).all(|w| rows.iter().position(|r| r == &w[0]) < rows.iter().position(|r| r == &w[1])));
        assert_ne!(a, keep(rows.clone(), 20, 2, |r| r));
        assert_eq!(a, keep(rows.clone(), 20, 1, |r| r));
        assert_eq!(keep(rows.clone(), 80, 1, |r| r), rows);
    }
}
