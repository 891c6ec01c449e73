//! Statistics for comparing policies on the same states: a confidence interval for a rate and a
//! paired test between two policies.
//!
//! - [`wilson`]: the Wilson score interval of `k` successes in `n` (good at small `n` and at
//!   rates near 0 or 1, where the normal interval is not).
//! - [`mcnemar`]: McNemar's exact test on paired outcomes: under "no difference" the states one
//!   policy solves and the other does not split as a fair coin, so the two-sided p-value is the
//!   binomial tail of the smaller count, doubled.

/// The 95% Wilson score interval of `k` successes in `n` trials; `(0, 1)` when `n = 0`.
pub fn wilson(k: usize, n: usize) -> (f64, f64) {
    if n == 0 {
        return (0.0, 1.0);
    }
    let z = 1.959_963_984_540_054_f64;
    let (n, p) = (n as f64, k as f64 / n as f64);
    let denom = 1.0 + z * z / n;
    let centre = (p + z * z / (2.0 * n)) / denom;
    let half = z * (p * (1.0 - p) / n + z * z / (4.0 * n * n)).sqrt() / denom;
    ((centre - half).max(0.0), (centre + half).min(1.0))
}

/// Paired outcomes of two policies on the same states.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Paired {
    /// States only the first policy solves.
    pub only_a: usize,
    /// States only the second policy solves.
    pub only_b: usize,
    pub both: usize,
    pub neither: usize,
}

impl Paired {
    /// Counts from outcomes in the same order.
    pub fn of(a: &[bool], b: &[bool]) -> Paired {
        let mut p = Paired::default();
        for (x, y) in a.iter().zip(b) {
            match (x, y) {
                (true, true) => p.both += 1,
                (true, false) => p.only_a += 1,
                (false, true) => p.only_b += 1,
                (false, false) => p.neither += 1,
            }
        }
        p
    }

    /// The two-sided exact McNemar p-value.
    pub fn p_value(&self) -> f64 {
        mcnemar(self.only_a, self.only_b)
    }
}

/// Two-sided exact McNemar test of `b` and `c` discordant pairs.
pub fn mcnemar(b: usize, c: usize) -> f64 {
    let n = b + c;
    if n == 0 {
        return 1.0;
    }
    // P(X ≤ min(b, c)) for X ~ Binomial(n, 1/2), summed in log space.
    let ln_half_n = n as f64 * 0.5f64.ln();
    let mut ln_choose = 0.0;
    let mut tail = 0.0;
    for i in 0..=b.min(c) {
        if i > 0 {
            ln_choose += ((n - i + 1) as f64).ln() - (i as f64).ln();
        }
        tail += (ln_choose + ln_half_n).exp();
    }
    (2.0 * tail).min(1.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wilson_matches_published_values() {
        // 8 of 10: 0.4902 – 0.9433 (Newcombe 1998, Table I).
        let (lo, hi) = wilson(8, 10);
        assert!((lo - 0.4902).abs() < 1e-4 && (hi - 0.9433).abs() < 1e-4, "{lo} {hi}");
        let (lo, hi) = wilson(0, 20);
        assert!(lo == 0.0 && (hi - 0.1611).abs() < 1e-4, "{hi}");
        assert_eq!(wilson(0, 0), (0.0, 1.0));
    }

    #[test]
    fn mcnemar_is_the_exact_binomial_tail() {
        // 1 vs 9 discordant: 2·P(X ≤ 1), X ~ Bin(10, ½) = 2·11/1024.
        assert!((mcnemar(1, 9) - 22.0 / 1024.0).abs() < 1e-12);
        assert!((mcnemar(9, 1) - mcnemar(1, 9)).abs() < 1e-15);
        assert_eq!(mcnemar(5, 5), 1.0);
        assert_eq!(mcnemar(0, 0), 1.0);
        assert!(mcnemar(3, 60) < 1e-12);
        let p = Paired::of(&[true, true, false, false], &[true, false, true, true]);
        assert_eq!((p.both, p.only_a, p.only_b, p.neither), (1, 1, 2, 0));
    }
}
