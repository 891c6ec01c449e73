//! LoRA: low-rank adapters beside a layer's projections (Hu et al., 2021), trained with the
//! base frozen and saved as a PEFT adapter folder.
//!
//! ```text
//! y = x·W (+ b)  +  dropout(x)·A·B · α/r      A: [in, r] ~ U(±1/√in)   B: [r, out] = 0
//! ```
//!
//! [`attach`] freezes every base weight (`require_grad = false`): the backward pass computes no
//! gradient for them, so the optimizer holds state for the adapters alone. B starts at zero, so
//! the adapted model computes exactly what the base did. [`save_adapter`] writes PEFT's layout —
//! `adapter_config.json`, and `adapter_model.safetensors` holding
//! `base_model.model.<module>.lora_A.weight` `[r, in]` and `…lora_B.weight` `[out, r]` — which
//! `peft.PeftModel.from_pretrained` loads; [`load_adapter`] reads such a folder back (ours or
//! one peft wrote), and `hf::save` merges adapters into the full weights it writes.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use burn::module::{Module, Param};
use burn::nn::Dropout;
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::error::{Error, IoContext, Result};
use crate::hf::{self, StoredDtype};
use crate::model::{DecoderLayer, Qwen2};
pub use crate::proj::Lora;
use crate::proj::Proj;

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
fn projections<B: Backend>(layer: &DecoderLayer<B>) -> [(&'static str, &Proj<B>); 7] {
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

fn projections_mut<B: Backend>(layer: &mut DecoderLayer<B>) -> [(&'static str, &mut Proj<B>); 7] {
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
fn targeted(path: &str, targets: &[String]) -> bool {
    let short = path.rsplit('.').next().unwrap_or(path);
    targets.iter().any(|t| t == short)
}

/// Freezes every weight of `model` and attaches fresh adapters (seeded by `seed`) to the
/// targeted projections. Adapters already attached are merged into the base first.
pub fn attach<B: Backend>(model: Qwen2<B>, cfg: &LoraConfig, seed: u64) -> Result<Qwen2<B>> {
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
pub fn merge<B: Backend>(mut model: Qwen2<B>) -> Qwen2<B> {
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
pub fn adapter_params<B: Backend>(model: &Qwen2<B>) -> usize {
    model
        .layers
        .iter()
        .flat_map(|l| projections(l).into_iter().filter_map(|(_, p)| p.lora.as_ref()))
        .map(|l| l.a.val().dims().iter().product::<usize>() + l.b.val().dims().iter().product::<usize>())
        .sum()
}

/// The PEFT name of a tensor of layer `n`'s adapter at `path`.
fn peft_name(n: usize, path: &str, which: &str) -> String {
    format!("base_model.model.model.layers.{n}.{path}.lora_{which}.weight")
}

/// Writes the attached adapters as a PEFT folder (`adapter_config.json`,
/// `adapter_model.safetensors`); `base` names the base model in the config.
pub fn save_adapter<B: Backend>(model: &Qwen2<B>, cfg: &LoraConfig, base: &str, dir: &Path) -> Result<Vec<PathBuf>> {
    let mut tensors = Vec::new();
    for (n, layer) in model.layers.iter().enumerate() {
        for (path, proj) in projections(layer) {
            let Some(lora) = &proj.lora else { continue };
            for (which, t) in [("A", lora.a.val()), ("B", lora.b.val())] {
                let t = t.transpose();
                let shape = t.dims().to_vec();
                tensors.push((peft_name(n, path, which), shape, hf::to_vec(t)?));
            }
        }
    }
    if tensors.is_empty() {
        return Err(Error::Config("the model has no LoRA adapters to save".into()));
    }
    std::fs::create_dir_all(dir).at(dir)?;
    let weights = dir.join("adapter_model.safetensors");
    hf::write_safetensors(&weights, tensors, StoredDtype::F32)?;
    let config = json!({
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "base_model_name_or_path": base,
        "r": cfg.rank,
        "lora_alpha": cfg.alpha,
        "lora_dropout": cfg.dropout,
        "target_modules": cfg.targets,
        "bias": "none",
        "fan_in_fan_out": false,
        "use_rslora": false,
        "use_dora": false,
        "init_lora_weights": true,
        "inference_mode": true,
        "modules_to_save": null,
    });
    let path = dir.join("adapter_config.json");
    std::fs::write(&path, serde_json::to_string_pretty(&config).unwrap_or_default()).at(&path)?;
    Ok(vec![path, weights])
}

/// Reads a PEFT LoRA folder and attaches its adapters to `model` (frozen, as [`attach`] does).
pub fn load_adapter<B: Backend>(model: Qwen2<B>, dir: &Path) -> Result<(LoraConfig, Qwen2<B>)> {
    let config_path = dir.join("adapter_config.json");
    let text = std::fs::read_to_string(&config_path).at(&config_path)?;
    let bad = |reason: String| Error::BadModel { path: config_path.clone(), reason };
    let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
    if v["peft_type"].as_str() != Some("LORA") {
        return Err(bad(format!("peft_type is {}, expected \"LORA\"", v["peft_type"])));
    }
    for (key, ok) in [
        ("use_dora", v["use_dora"].as_bool() != Some(true)),
        ("bias", v["bias"].as_str().is_none_or(|b| b == "none")),
        ("fan_in_fan_out", v["fan_in_fan_out"].as_bool() != Some(true)),
        ("rank_pattern", v["rank_pattern"].as_object().is_none_or(|m| m.is_empty())),
        ("alpha_pattern", v["alpha_pattern"].as_object().is_none_or(|m| m.is_empty())),
        ("modules_to_save", v["modules_to_save"].as_array().is_none_or(|m| m.is_empty())),
    ] {
        if !ok {
            return Err(bad(format!("{key} = {} is not supported", v[key])));
        }
    }
    let rank = v["r"].as_u64().ok_or_else(|| bad("no integer r".into()))? as usize;
    let alpha = v["lora_alpha"].as_f64().ok_or_else(|| bad("no lora_alpha".into()))?;
    let targets: Vec<String> = match &v["target_modules"] {
        serde_json::Value::Array(a) => a.iter().filter_map(|t| t.as_str().map(str::to_string)).collect(),
        other => return Err(bad(format!("target_modules {other} is not a list of module names"))),
    };
    let cfg = LoraConfig { rank, alpha, dropout: v["lora_dropout"].as_f64().unwrap_or(0.0), targets };
    cfg.validate().map_err(|e| bad(e.to_string()))?;
    let scale = if v["use_rslora"].as_bool() == Some(true) { alpha / (rank as f64).sqrt() } else { cfg.scale() };

    let weights = dir.join("adapter_model.safetensors");
    let mut arrays = BTreeMap::new();
    hf::read_shard(&weights, &mut arrays)?;
    let bad_w = |reason: String| Error::BadModel { path: weights.clone(), reason };
    let mut model = merge(model).no_grad();
    for (n, layer) in model.layers.iter_mut().enumerate() {
        for (path, proj) in projections_mut(layer) {
            let (name_a, name_b) = (peft_name(n, path, "A"), peft_name(n, path, "B"));
            let (Some(a), Some(b)) = (arrays.remove(&name_a), arrays.remove(&name_b)) else {
                if targeted(path, &cfg.targets) {
                    return Err(bad_w(format!("missing {name_a} or {name_b}")));
                }
                continue;
            };
            let device = proj.base.weight.device();
            let [d_in, d_out] = proj.base.weight.dims();
            if a.shape != [rank, d_in] || b.shape != [d_out, rank] {
                return Err(bad_w(format!(
                    "{name_a} is {:?} and {name_b} is {:?}; the base layer implies [{rank}, {d_in}] and [{d_out}, {rank}]",
                    a.shape, b.shape
                )));
            }
            let t =
                |data: Vec<f32>, shape: [usize; 2]| Tensor::<B, 2>::from_data(TensorData::new(data, shape), &device);
            proj.lora = Some(Lora {
                a: Param::from_tensor(t(a.data, [rank, d_in]).transpose()),
                b: Param::from_tensor(t(b.data, [d_out, rank]).transpose()),
                scale,
                dropout: Dropout { prob: cfg.dropout },
            });
        }
    }
    if !arrays.is_empty() {
        let rest: Vec<&String> = arrays.keys().take(4).collect();
        return Err(bad_w(format!("{} tensors match no layer of the base model: {rest:?}", arrays.len())));
    }
    Ok((cfg, model))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Qwen2Config;
    use burn::backend::NdArray;
    use burn::tensor::Int;

    type B = NdArray<f32>;

    fn logits(model: &Qwen2<B>) -> Vec<f32> {
        let ids = Tensor::<B, 2, Int>::from_data(TensorData::new(vec![3i64, 9, 1, 20, 7], [1, 5]), &Default::default());
        model.forward(ids).into_data().to_vec().unwrap()
    }

    fn max_diff(a: &[f32], b: &[f32]) -> f32 {
        a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
    }

    #[test]
    fn a_fresh_adapter_changes_nothing_and_a_trained_one_round_trips_through_peft_and_merging() {
        let device = Default::default();
        let config = Qwen2Config::tiny(40);
        let base = Qwen2::<B>::init(&config, 1, &device);
        let before = logits(&base);
        let cfg = LoraConfig { targets: vec!["q_proj".into(), "down_proj".into()], ..LoraConfig::new(4) };
        let mut adapted = attach(base, &cfg, 7).unwrap();
        assert_eq!(max_diff(&before, &logits(&adapted)), 0.0, "B = 0: the adapted model is the base");
        // Stand-in for training: give every B values.
        for layer in &mut adapted.layers {
            for (_, p) in projections_mut(layer) {
                if let Some(l) = &mut p.lora {
                    let [r, out] = l.b.val().dims();
                    let v: Vec<f32> = (0..r * out).map(|i| ((i % 7) as f32 - 3.0) * 0.05).collect();
                    l.b = Param::from_tensor(Tensor::from_data(TensorData::new(v, [r, out]), &device));
                }
            }
        }
        let want = logits(&adapted);
        assert!(max_diff(&before, &want) > 1e-3);
        let per_layer = 4 * (64 + 64) + 4 * (config.intermediate_size + 64);
        assert_eq!(adapter_params(&adapted), config.num_hidden_layers * per_layer);

        let dir = tempfile::tempdir().unwrap();
        save_adapter(&adapted, &cfg, "tiny", &dir.path().join("adapter")).unwrap();
        let fresh = Qwen2::<B>::init(&config, 1, &device);
        let (read, loaded) = load_adapter(fresh, &dir.path().join("adapter")).unwrap();
        assert_eq!(read, cfg);
        assert!(max_diff(&want, &logits(&loaded)) < 1e-6);

        // A full export merges the adapters: the reloaded model has none and the same logits.
        hf::save(&config, &adapted, &dir.path().join("merged")).unwrap();
        let (_, merged) = hf::load::<B>(&dir.path().join("merged"), &device).unwrap();
        assert_eq!(adapter_params(&merged), 0);
        assert!(max_diff(&want, &logits(&merged)) < 1e-5);
        assert!(max_diff(&want, &logits(&merge(adapted))) < 1e-5);
    }

    #[test]
    fn bad_configs_and_mismatched_adapters_are_errors_that_say_what() {
        let err = LoraConfig { targets: vec!["lm_head".into()], ..LoraConfig::new(4) }.validate().unwrap_err();
        assert!(err.to_string().contains("lm_head"), "{err}");
        assert!(LoraConfig::new(0).validate().is_err());
        let device = Default::default();
        let model = attach(Qwen2::<B>::init(&Qwen2Config::tiny(40), 1, &device), &LoraConfig::new(2), 0).unwrap();
        let dir = tempfile::tempdir().unwrap();
        save_adapter(&model, &LoraConfig::new(2), "tiny", dir.path()).unwrap();
        let wider = Qwen2Config::shaped(40, 96, 2);
        let err = load_adapter(Qwen2::<B>::init(&wider, 1, &device), dir.path()).unwrap_err().to_string();
        assert!(err.contains("q_proj.lora_A") && err.contains("96"), "{err}");
    }
}
