//! Statistics for comparing policies on the same states: a confidence interval for a rate and a
//! paired test between two policies.
//!
//! - [`wilson`]: the Wilson score interval of `k` successes in `n` (good at small `n` and at
//!   rates near 0 or 1, where the normal interval is not).
//! - [`mcnemar`]: McNemar's exact test on paired outcomes: under "no difference" the states one
//!   policy solves and the other does not split as a fair coin, so the two-sided p-value is the
//!   binomial tail of the smaller count, doubled.
//! - [`wilcoxon`]: the Wilcoxon signed-rank test of paired per-state values (sampled success
//!   rates of two policies on the same states), by the normal approximation with the tie and
//!   continuity corrections (the per-state rates are multiples of 1/k, so ties are the rule).

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

/// `erfc(x)` (Numerical Recipes' Chebyshev fit, relative error below 1.2e-7).
fn erfc(x: f64) -> f64 {
    let z = x.abs();
    let t = 1.0 / (1.0 + 0.5 * z);
    let poly = -z * z - 1.265_512_23
        + t * (1.000_023_68
            + t * (0.374_091_96
                + t * (0.096_784_18
                    + t * (-0.186_288_06
                        + t * (0.278_868_07
                            + t * (-1.135_203_98 + t * (1.488_515_87 + t * (-0.822_152_23 + t * 0.170_872_77))))))));
    let r = t * poly.exp();
    if x >= 0.0 { r } else { 2.0 - r }
}

/// The result of a Wilcoxon signed-rank test.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SignedRank {
    /// Pairs with a nonzero difference (the others are left out).
    pub n: usize,
    /// Of them, pairs where the first value is larger.
    pub positive: usize,
    /// Sum of the ranks of the positive differences.
    pub w_plus: f64,
    /// Two-sided p-value.
    pub p: f64,
}

/// Two-sided Wilcoxon signed-rank test of `a − b` over paired values (zero differences
/// dropped, average ranks for ties, the variance reduced for ties, and a continuity
/// correction of ½), as `scipy.stats.wilcoxon(a, b, correction=True, method="approx")`.
pub fn wilcoxon(a: &[f64], b: &[f64]) -> SignedRank {
    let mut d: Vec<f64> = a.iter().zip(b).map(|(x, y)| x - y).filter(|d| d.abs() > 1e-12).collect();
    let n = d.len();
    if n == 0 {
        return SignedRank { n: 0, positive: 0, w_plus: 0.0, p: 1.0 };
    }
    d.sort_by(|x, y| x.abs().total_cmp(&y.abs()));
    let (mut w_plus, mut ties) = (0.0, 0.0);
    let mut i = 0;
    while i < n {
        let mut j = i;
        while j + 1 < n && (d[j + 1].abs() - d[i].abs()).abs() <= 1e-12 {
            j += 1;
        }
        // Ranks i+1 ..= j+1 share their mean.
        let rank = (i + j + 2) as f64 / 2.0;
        let t = (j - i + 1) as f64;
        ties += t * t * t - t;
        w_plus += d[i..=j].iter().filter(|x| **x > 0.0).count() as f64 * rank;
        i = j + 1;
    }
    let nf = n as f64;
    let mean = nf * (nf + 1.0) / 4.0;
    let var = nf * (nf + 1.0) * (2.0 * nf + 1.0) / 24.0 - ties / 48.0;
    let z = if var > 0.0 { ((w_plus - mean).abs() - 0.5).max(0.0) / var.sqrt() } else { 0.0 };
    let positive = d.iter().filter(|x| **x > 0.0).count();
    SignedRank { n, positive, w_plus, p: erfc(z / std::f64::consts::SQRT_2).min(1.0) }
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

    #[test]
    fn wilcoxon_matches_scipy() {
        // scipy.stats.wilcoxon(a, b, correction=True, method="approx"), scipy 1.x: the
        // statistic is min(W+, W−) there; the p-values are compared.
        let a = [0.875, 0.5, 0.25, 0.0, 1.0, 0.625, 0.375, 0.125, 0.5, 0.75, 0.25, 0.0];
        let b = [0.5, 0.5, 0.125, 0.125, 0.75, 0.25, 0.375, 0.0, 0.25, 0.5, 0.25, 0.125];
        let r = wilcoxon(&a, &b);
        assert_eq!((r.n, r.positive), (9, 7));
        assert!((r.w_plus - 40.0).abs() < 1e-9, "{}", r.w_plus);
        assert!((r.p - 0.041_248_763).abs() < 1e-6, "{}", r.p);
        assert_eq!(wilcoxon(&a, &a).p, 1.0);
        // Symmetric in sign.
        assert!((wilcoxon(&b, &a).p - r.p).abs() < 1e-12);
        assert!((erfc(0.0) - 1.0).abs() < 1e-7 && (erfc(1.0) - 0.157_299_207).abs() < 1e-7);
    }
}
