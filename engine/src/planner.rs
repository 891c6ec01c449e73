//! The planner: which steps to perturb, with which ErrorType and operator.
//!
//! Targets are shares of the six ErrorTypes: the four main ones follow a mix (`paper` =
//! 0.294 / 0.246 / 0.308 / 0.152 for GroundingDrift / ToolMismatch / ArgInvalid /
//! InfoInsufficient, `uniform`, or custom weights), scaled to leave `extra` for CodeError and
//! NonCommit. Choice is deficit-driven: for each of the K near-misses of a trajectory the
//! planner takes, among the types some operator can realise on some step, the one furthest
//! below its target given what was accepted so far and what is already planned. Ties and the
//! choice of step and operator are broken by a generator seeded from (seed, trajectory), so
//! the same input and seed give the same plan.

use std::collections::BTreeMap;

use rand::SeedableRng;
use rand::seq::IndexedRandom;
use rand_chacha::ChaCha8Rng;
use regrpo_schemas::{Action, ActionRecord, ErrorType};

use crate::error::{Error, Result};
use crate::perturb::{PerturbContext, Perturbation, Perturbed};
use crate::tool::ToolSpec;

/// Target shares of each ErrorType; they sum to 1.
#[derive(Debug, Clone, PartialEq)]
pub struct Mix {
    pub shares: BTreeMap<ErrorType, f64>,
}

/// The reference's mix over the four main types.
pub const PAPER_MIX: [f64; 4] = [0.294, 0.246, 0.308, 0.152];

impl Mix {
    /// Main-type weights (GroundingDrift, ToolMismatch, ArgInvalid, InfoInsufficient),
    /// normalised to `1 - extra`, and `extra / 2` each for CodeError and NonCommit.
    pub fn new(main: [f64; 4], extra: f64) -> Result<Mix> {
        let sum: f64 = main.iter().sum();
        if main.iter().any(|w| !w.is_finite() || *w < 0.0) || sum <= 0.0 || !(0.0..1.0).contains(&extra) {
            return Err(Error::Config(format!(
                "mix weights must be non-negative with a positive sum and extra in [0, 1): {main:?}, extra {extra}"
            )));
        }
        let mut shares = BTreeMap::new();
        for (t, w) in ErrorType::MAIN.iter().zip(main) {
            shares.insert(*t, w / sum * (1.0 - extra));
        }
        shares.insert(ErrorType::CodeError, extra / 2.0);
        shares.insert(ErrorType::NonCommit, extra / 2.0);
        Ok(Mix { shares })
    }

    /// `paper`, `uniform`, or four comma-separated weights (`0.3,0.2,0.3,0.2`).
    pub fn parse(text: &str, extra: f64) -> Result<Mix> {
        match text {
            "paper" => Mix::new(PAPER_MIX, extra),
            "uniform" => Mix::new([0.25; 4], extra),
            custom => {
                let w: Vec<f64> =
                    custom.split(',').map(|x| x.trim().parse::<f64>()).collect::<std::result::Result<_, _>>().map_err(
                        |e| {
                            Error::Config(format!(
                                "--mix `{custom}`: expected paper, uniform or four weights like 0.3,0.2,0.3,0.2 ({e})"
                            ))
                        },
                    )?;
                let arr: [f64; 4] =
                    w.try_into().map_err(|_| Error::Config(format!("--mix `{custom}`: expected four weights")))?;
                Mix::new(arr, extra)
            }
        }
    }

    pub fn share(&self, t: ErrorType) -> f64 {
        self.shares.get(&t).copied().unwrap_or(0.0)
    }
}

/// A step the planner may perturb: one whose action parsed.
pub struct Candidate<'a> {
    pub step_index: usize,
    /// The step's action, parsed.
    pub action: Action,
    /// The step's action as stored.
    pub record: &'a ActionRecord,
    pub spec: Option<&'a ToolSpec>,
    pub ctx: PerturbContext<'a>,
}

/// One planned near-miss: the step's action (the correction) and its perturbation.
#[derive(Debug, Clone)]
pub struct Planned {
    pub step_index: usize,
    /// The step's action, parsed: what the perturbation was made from.
    pub original: Action,
    /// The step's action as stored.
    pub original_record: ActionRecord,
    pub perturbed: Perturbed,
}

/// Deficit-driven planner.
pub struct Planner {
    pub mix: Mix,
    ops: Vec<Box<dyn Perturbation>>,
    accepted: BTreeMap<ErrorType, f64>,
    planned: BTreeMap<ErrorType, f64>,
}

fn seed_for(seed: u64, key: &str) -> u64 {
    let h = regrpo_schemas::id::content_id([key.as_bytes()]);
    seed ^ u64::from_str_radix(&h[..16], 16).unwrap_or(0)
}

impl Planner {
    pub fn new(mix: Mix) -> Self {
        Planner { mix, ops: crate::perturb::all(), accepted: BTreeMap::new(), planned: BTreeMap::new() }
    }

    /// Records accepted examples (at the end of a batch) and clears what was planned.
    pub fn settle(&mut self, accepted: &BTreeMap<ErrorType, usize>) {
        for (t, n) in accepted {
            *self.accepted.entry(*t).or_default() += *n as f64;
        }
        self.planned.clear();
    }

    fn deficit(&self, t: ErrorType) -> f64 {
        let total: f64 = self.accepted.values().sum::<f64>() + self.planned.values().sum::<f64>();
        self.mix.share(t) * (total + 1.0)
            - self.accepted.get(&t).copied().unwrap_or(0.0)
            - self.planned.get(&t).copied().unwrap_or(0.0)
    }

    /// Plans up to `k` near-misses of one trajectory.
    pub fn plan(&mut self, trajectory_id: &str, candidates: &[Candidate<'_>], k: usize, seed: u64) -> Vec<Planned> {
        // Every operator on every step, each with its own seeded generator so the options do
        // not depend on the order they are computed in.
        let mut options: Vec<(&Candidate<'_>, Perturbed)> = Vec::new();
        for c in candidates {
            let feasible = c.spec.map(|s| s.feasible.clone()).unwrap_or_default();
            for op in &self.ops {
                if !feasible.contains(&op.error_type()) || self.mix.share(op.error_type()) <= 0.0 {
                    continue;
                }
                let mut rng = ChaCha8Rng::seed_from_u64(seed_for(
                    seed,
                    &format!("{trajectory_id}/{}/{}", c.step_index, op.name()),
                ));
                if let Some(p) = op.apply(&c.action, &c.ctx, &mut rng)
                    && p.action.to_text() != c.action.to_text()
                {
                    options.push((c, p));
                }
            }
        }
        let mut rng = ChaCha8Rng::seed_from_u64(seed_for(seed, trajectory_id));
        let mut chosen: Vec<Planned> = Vec::new();
        for _ in 0..k {
            let open: Vec<&(&Candidate<'_>, Perturbed)> = options
                .iter()
                .filter(|(s, p)| {
                    !chosen.iter().any(|c| c.step_index == s.step_index && c.perturbed.error_type == p.error_type)
                })
                .collect();
            let mut types: Vec<ErrorType> = open.iter().map(|(_, p)| p.error_type).collect();
            types.sort();
            types.dedup();
            let Some(best) = types.iter().map(|t| self.deficit(*t)).max_by(f64::total_cmp) else { break };
            let top: Vec<ErrorType> = types.into_iter().filter(|t| (self.deficit(*t) - best).abs() < 1e-9).collect();
            let t = *top.choose(&mut rng).expect("non-empty");
            // Prefer a step not perturbed yet, then any.
            let of_type: Vec<&&(&Candidate<'_>, Perturbed)> = open.iter().filter(|(_, p)| p.error_type == t).collect();
            let fresh: Vec<&&(&Candidate<'_>, Perturbed)> =
                of_type.iter().copied().filter(|(s, _)| !chosen.iter().any(|c| c.step_index == s.step_index)).collect();
            let pool = if fresh.is_empty() { &of_type } else { &fresh };
            let (c, p) = **pool.choose(&mut rng).expect("non-empty");
            *self.planned.entry(t).or_default() += 1.0;
            chosen.push(Planned {
                step_index: c.step_index,
                original: c.action.clone(),
                original_record: c.record.clone(),
                perturbed: p.clone(),
            });
        }
        chosen
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mixes_parse_and_sum_to_one() {
        for m in ["paper", "uniform", "1,1,1,1"] {
            let mix = Mix::parse(m, 0.1).unwrap();
            assert!((mix.shares.values().sum::<f64>() - 1.0).abs() < 1e-12);
        }
        let p = Mix::parse("paper", 0.0).unwrap();
        assert!((p.share(ErrorType::GroundingDrift) - 0.294).abs() < 1e-12);
        assert!(Mix::parse("1,2", 0.0).is_err());
        assert!(Mix::parse("a,b,c,d", 0.0).is_err());
    }
}
