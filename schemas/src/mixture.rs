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

/// The first 64 bits of [`order_key`] as a number: the same order (short of a 64-bit tie),
/// for readers that cannot hold every key.
pub fn order_key64(seed: u64, id: &str) -> u64 {
    u64::from_str_radix(&order_key(seed, id)[..16], 16).expect("sha256 hex")
}

/// Finds the rows [`keep`] would keep without holding them: the `n` smallest keys of a stream,
/// in two passes over it with bounded memory (a histogram of the keys' top 20 bits, then the
/// keys of the one bucket where the `n`-th falls). A row is kept when its key is at most the
/// threshold. The first pass needs no `n`, so it can ride along with a pass that counts the
/// rows `n` is computed from.
#[derive(Debug, Clone)]
pub struct Selection {
    /// How many keys are selected (set by [`Selection::locate`]).
    n: usize,
    histogram: Vec<u32>,
    /// The bucket holding the `n`-th smallest key, and how many keys lie in buckets below it.
    bucket: Option<(usize, usize)>,
    in_bucket: Vec<u64>,
}

const SELECT_BITS: u32 = 20;

impl Default for Selection {
    fn default() -> Selection {
        Selection::new()
    }
}

impl Selection {
    /// A selection before its first pass.
    pub fn new() -> Selection {
        Selection { n: 0, histogram: vec![0; 1 << SELECT_BITS], bucket: None, in_bucket: Vec::new() }
    }

    /// First pass: every key.
    pub fn count(&mut self, key: u64) {
        self.histogram[(key >> (64 - SELECT_BITS)) as usize] += 1;
    }

    /// Between the passes: selects the `n` smallest keys and finds where the `n`-th lies.
    /// `None` when every key is kept.
    pub fn locate(&mut self, n: usize) -> Option<()> {
        self.n = n;
        let mut below = 0usize;
        for (b, c) in self.histogram.iter().enumerate() {
            let c = *c as usize;
            if below + c >= self.n && c > 0 {
                self.bucket = Some((b, below));
                self.histogram = Vec::new();
                return Some(());
            }
            below += c;
        }
        None
    }

    /// Second pass: every key again.
    pub fn refine(&mut self, key: u64) {
        if let Some((b, _)) = self.bucket
            && (key >> (64 - SELECT_BITS)) as usize == b
        {
            self.in_bucket.push(key);
        }
    }

    /// After the second pass: keep a row when its key is at most this (`u64::MAX`: keep all;
    /// `None`: keep none).
    pub fn threshold(mut self) -> Option<u64> {
        if self.n == 0 {
            return None;
        }
        let Some((_, below)) = self.bucket else { return Some(u64::MAX) };
        self.in_bucket.sort_unstable();
        self.in_bucket.get(self.n - below - 1).copied()
    }
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
    fn two_passes_keep_the_rows_keep_keeps() {
        let rows: Vec<String> = (0..5000).map(|i| format!("row{i}")).collect();
        for n in [0, 1, 17, 2500, 4999, 5000, 7000] {
            let mut sel = Selection::new();
            rows.iter().for_each(|r| sel.count(order_key64(3, r)));
            if sel.locate(n).is_some() {
                rows.iter().for_each(|r| sel.refine(order_key64(3, r)));
            }
            let kept: Vec<String> = match sel.threshold() {
                Some(t) => rows.iter().filter(|r| order_key64(3, r) <= t).cloned().collect(),
                None => vec![],
            };
            assert_eq!(kept, keep(rows.clone(), n, 3, |r| r), "n = {n}");
        }
    }

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
