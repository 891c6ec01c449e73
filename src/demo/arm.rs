//! The demo's four arms — the policies it compares — named, so that a figure is asked for by
//! arm instead of by its position in a list.
//!
//! ```text
//!  clean SFT warm-up ─┬─ SFT clean            (Arm::SftClean)
//!                     └─ SFT clean + RoT      (Arm::SftRot)
//!                           ├─ ReGRPO η = 0.1 (Arm::Regrpo)
//!                           └─ ReGRPO η = 0   (Arm::RegrpoEta0, the control for the reflection cost)
//! ```

use serde::{Deserialize, Serialize};

/// A policy the demo trains and evaluates. The order of the variants is the table's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Arm {
    /// SFT on clean rows only, after the shared warm-up.
    SftClean,
    /// SFT on the same clean rows plus RoT rows, after the shared warm-up.
    SftRot,
    /// ReGRPO from the RoT arm, with the reflection cost η = 0.1.
    Regrpo,
    /// ReGRPO from the RoT arm with η = 0: the control for the reflection cost.
    RegrpoEta0,
}

impl Arm {
    /// Every arm, in table order.
    pub const ALL: [Arm; 4] = [Arm::SftClean, Arm::SftRot, Arm::Regrpo, Arm::RegrpoEta0];

    /// The two SFT branches, run side by side.
    pub const SFT: [Arm; 2] = [Arm::SftClean, Arm::SftRot];

    /// The two ReGRPO runs, run side by side.
    pub const REGRPO: [Arm; 2] = [Arm::Regrpo, Arm::RegrpoEta0];

    /// Its key in `report.json` (`arms.<key>`, `regrpo_steps.<key>`, `truncations.by_job`).
    pub fn key(self) -> &'static str {
        match self {
            Arm::SftClean => "sft_clean",
            Arm::SftRot => "sft_rot",
            Arm::Regrpo => "regrpo",
            Arm::RegrpoEta0 => "regrpo_eta0",
        }
    }

    /// Its column header in the printed table.
    pub fn label(self) -> &'static str {
        match self {
            Arm::SftClean => "SFT clean",
            Arm::SftRot => "SFT clean+RoT",
            Arm::Regrpo => "+ ReGRPO",
            Arm::RegrpoEta0 => "+ ReGRPO η=0",
        }
    }

    /// Its run folder under `runs/` (also its progress bar's name).
    pub fn run_name(self) -> &'static str {
        match self {
            Arm::SftClean => "sft-clean",
            Arm::SftRot => "sft-rot",
            Arm::Regrpo => "regrpo",
            Arm::RegrpoEta0 => "regrpo-eta0",
        }
    }

    /// The reflection cost η of a ReGRPO arm (`None` for the SFT arms).
    pub fn eta(self) -> Option<f64> {
        match self {
            Arm::SftClean | Arm::SftRot => None,
            Arm::Regrpo => Some(0.1),
            Arm::RegrpoEta0 => Some(0.0),
        }
    }
}

/// One value per arm, reached by name. Serialises as an object keyed by [`Arm::key`], in table
/// order.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PerArm<T> {
    /// [`Arm::SftClean`]'s.
    pub sft_clean: T,
    /// [`Arm::SftRot`]'s.
    pub sft_rot: T,
    /// [`Arm::Regrpo`]'s.
    pub regrpo: T,
    /// [`Arm::RegrpoEta0`]'s.
    pub regrpo_eta0: T,
}

impl<T> PerArm<T> {
    /// The value of `arm`.
    pub fn get(&self, arm: Arm) -> &T {
        match arm {
            Arm::SftClean => &self.sft_clean,
            Arm::SftRot => &self.sft_rot,
            Arm::Regrpo => &self.regrpo,
            Arm::RegrpoEta0 => &self.regrpo_eta0,
        }
    }

    /// `(arm, value)` in table order.
    pub fn iter(&self) -> impl Iterator<Item = (Arm, &T)> {
        Arm::ALL.into_iter().map(move |a| (a, self.get(a)))
    }

    /// A value per arm computed from this one's.
    pub fn map<U>(&self, mut f: impl FnMut(Arm, &T) -> U) -> PerArm<U> {
        PerArm {
            sft_clean: f(Arm::SftClean, &self.sft_clean),
            sft_rot: f(Arm::SftRot, &self.sft_rot),
            regrpo: f(Arm::Regrpo, &self.regrpo),
            regrpo_eta0: f(Arm::RegrpoEta0, &self.regrpo_eta0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serde_names_and_per_arm_fields_are_the_report_keys() {
        let keys = PerArm { sft_clean: 0, sft_rot: 1, regrpo: 2, regrpo_eta0: 3 };
        let object = serde_json::to_value(&keys).unwrap();
        let names: Vec<&str> = object.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(names, Arm::ALL.map(Arm::key));
        for (i, arm) in Arm::ALL.into_iter().enumerate() {
            assert_eq!(serde_json::to_value(arm).unwrap(), arm.key());
            assert_eq!(*keys.get(arm), i, "{arm:?}");
        }
    }

    #[test]
    fn only_the_regrpo_arms_have_a_reflection_cost() {
        assert_eq!(Arm::ALL.map(Arm::eta), [None, None, Some(0.1), Some(0.0)]);
        assert!(Arm::REGRPO.iter().all(|a| a.eta().is_some()) && Arm::SFT.iter().all(|a| a.eta().is_none()));
    }
}
