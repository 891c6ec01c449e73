//! LoRA: low-rank adapters beside a layer's projections (Hu et al., 2021), trained with the
//! base frozen. Their files (PEFT's adapter folder) are read and written in
//! [`crate::checkpoint::peft`].
//!
//! ```text
//! y = x·W (+ b)  +  dropout(x)·A·B · α/r      A: [in, r] ~ U(±1/√in)   B: [r, out] = 0
//! ```
//!
//! [`attach`] freezes every base weight (`require_grad = false`): the backward pass computes no
//! gradient for them, so the optimizer holds state for the adapters alone. B starts at zero, so
//! the adapted model computes exactly what the base did; [`merge`] folds adapters into the base
//! weights (as `checkpoint::hf::save` does for the full weights it writes).

use burn::module::{Module, Param};
use burn::nn::Dropout;
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
pub use crate::model::proj::Lora;
use crate::model::proj::Proj;
use crate::model::{CausalLm, DecoderLayer};

/// The projections an adapter can sit beside, by the names PEFT's `target_modules` use.
pub const TARGETS: [&str; 7] = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"];

/// PEFT's default targets for Llama and Qwen2.
pub const DEFAULT_TARGETS: [&str; 2] = ["q_proj", "v_proj"];

/// The shape of the adapters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoraConfig {
    pub rank: usize,
    /// The update is scaled by `alpha / rank`.
    pub alpha: f64,
    /// Dropout on the adapter's input while training (0: none, and runs stay deterministic).
    pub dropout: f64,
    /// Short names of the projections to adapt (see [`TARGETS`]).
    pub targets: Vec<String>,
}

impl LoraConfig {
    /// Rank `rank`, α = 2·rank, no dropout, PEFT's default targets.
    pub fn new(rank: usize) -> Self {
        LoraConfig {
            rank,
            alpha: 2.0 * rank as f64,
            dropout: 0.0,
            targets: DEFAULT_TARGETS.iter().map(|t| t.to_string()).collect(),
        }
    }

    pub fn scale(&self) -> f64 {
        self.alpha / self.rank as f64
    }

    pub fn validate(&self) -> Result<()> {
        let bad = |what: String| Err(Error::Config(format!("LoRA: {what}")));
        if self.rank == 0 {
            return bad("--lora-rank must be at least 1".into());
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return bad(format!("--lora-dropout {} is outside [0, 1)", self.dropout));
        }
        if !self.alpha.is_finite() || self.alpha <= 0.0 {
            return bad(format!("--lora-alpha {} must be positive", self.alpha));
        }
        if self.targets.is_empty() {
            return bad("no target modules".into());
        }
        if let Some(t) = self.targets.iter().find(|t| !TARGETS.contains(&t.as_str())) {
            return bad(format!("unknown target module {t:?}; expected some of {}", TARGETS.join(", ")));
        }
        Ok(())
    }
}

/// A layer's projections with their PEFT names (relative to `model.layers.N`).
pub(crate) fn projections<B: Backend>(layer: &DecoderLayer<B>) -> [(&'static str, &Proj<B>); 7] {
    let (a, m) = (&layer.self_attn, &layer.mlp);
    [
        ("self_attn.q_proj", &a.q_proj),
        ("self_attn.k_proj", &a.k_proj),
        ("self_attn.v_proj", &a.v_proj),
        ("self_attn.o_proj", &a.o_proj),
        ("mlp.gate_proj", &m.gate_proj),
        ("mlp.up_proj", &m.up_proj),
        ("mlp.down_proj", &m.down_proj),
    ]
}

pub(crate) fn projections_mut<B: Backend>(layer: &mut DecoderLayer<B>) -> [(&'static str, &mut Proj<B>); 7] {
    let (a, m) = (&mut layer.self_attn, &mut layer.mlp);
    [
        ("self_attn.q_proj", &mut a.q_proj),
        ("self_attn.k_proj", &mut a.k_proj),
        ("self_attn.v_proj", &mut a.v_proj),
        ("self_attn.o_proj", &mut a.o_proj),
        ("mlp.gate_proj", &mut m.gate_proj),
        ("mlp.up_proj", &mut m.up_proj),
        ("mlp.down_proj", &mut m.down_proj),
    ]
}

/// Whether a projection named `path` (`self_attn.q_proj`) is one of `targets` (`q_proj`).
pub(crate) fn targeted(path: &str, targets: &[String]) -> bool {
    let short = path.rsplit('.').next().unwrap_or(path);
    targets.iter().any(|t| t == short)
}

/// Freezes every weight of `model` and attaches fresh adapters (seeded by `seed`) to the
/// targeted projections. Adapters already attached are merged into the base first.
pub fn attach<B: Backend>(model: CausalLm<B>, cfg: &LoraConfig, seed: u64) -> Result<CausalLm<B>> {
    use rand::{Rng, SeedableRng};
    cfg.validate()?;
    let mut model = merge(model).no_grad();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    for layer in &mut model.layers {
        for (path, proj) in projections_mut(layer) {
            if !targeted(path, &cfg.targets) {
                continue;
            }
            let device = proj.base.weight.device();
            let [d_in, d_out] = proj.base.weight.dims();
            // PEFT's kaiming_uniform_(a = √5) on A: U(-1/√in, 1/√in).
            let bound = 1.0 / (d_in as f32).sqrt();
            let a: Vec<f32> = (0..d_in * cfg.rank).map(|_| rng.random_range(-bound..bound)).collect();
            proj.lora = Some(Lora {
                a: Param::from_tensor(Tensor::from_data(TensorData::new(a, [d_in, cfg.rank]), &device)),
                b: Param::from_tensor(Tensor::zeros([cfg.rank, d_out], &device)),
                scale: cfg.scale(),
                dropout: Dropout { prob: cfg.dropout },
            });
        }
    }
    Ok(model)
}

/// Folds every attached adapter into its base weight and removes it.
pub fn merge<B: Backend>(mut model: CausalLm<B>) -> CausalLm<B> {
    for layer in &mut model.layers {
        for (_, proj) in projections_mut(layer) {
            if proj.lora.is_some() {
                let merged = proj.merged_weight();
                proj.base.weight = Param::from_tensor(merged);
                proj.lora = None;
            }
        }
    }
    model
}

/// Number of adapter parameters attached.
pub fn adapter_params<B: Backend>(model: &CausalLm<B>) -> usize {
    model
        .layers
        .iter()
        .flat_map(|l| projections(l).into_iter().filter_map(|(_, p)| p.lora.as_ref()))
        .map(|l| l.a.val().dims().iter().product::<usize>() + l.b.val().dims().iter().product::<usize>())
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_configs_are_errors_that_say_what() {
        let err = LoraConfig { targets: vec!["lm_head".into()], ..LoraConfig::new(4) }.validate().unwrap_err();
        assert!(err.to_string().contains("lm_head"), "{err}");
        assert!(LoraConfig::new(0).validate().is_err());
    }
}
