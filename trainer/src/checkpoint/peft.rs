//! PEFT adapter folders ⇄ the LoRA adapters of a [`CausalLm`].
//!
//! [`save_adapter`] writes PEFT's layout — `adapter_config.json`, and `adapter_model.safetensors`
//! holding `base_model.model.<module>.lora_A.weight` `[r, in]` and `…lora_B.weight` `[out, r]` —
//! which `peft.PeftModel.from_pretrained` loads; [`load_adapter`] reads such a folder back (ours or
//! one peft wrote) and attaches its adapters, frozen, as [`crate::model::lora::attach`] does.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use burn::module::{Module, Param};
use burn::nn::Dropout;
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use serde_json::json;

use crate::checkpoint::hf::{self, StoredDtype};
use crate::error::{Error, IoContext, Result};
use crate::model::CausalLm;
use crate::model::lora::{Lora, LoraConfig, merge, projections, projections_mut, targeted};

/// The PEFT name of a tensor of layer `n`'s adapter at `path`.
fn peft_name(n: usize, path: &str, which: &str) -> String {
    format!("base_model.model.model.layers.{n}.{path}.lora_{which}.weight")
}

/// Writes the attached adapters as a PEFT folder (`adapter_config.json`,
/// `adapter_model.safetensors`); `base` names the base model in the config.
pub fn save_adapter<B: Backend>(model: &CausalLm<B>, cfg: &LoraConfig, base: &str, dir: &Path) -> Result<Vec<PathBuf>> {
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

/// Reads a PEFT LoRA folder and attaches its adapters to `model` (frozen, as [`crate::model::lora::attach`] does).
pub fn load_adapter<B: Backend>(model: CausalLm<B>, dir: &Path) -> Result<(LoraConfig, CausalLm<B>)> {
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
    use crate::CausalLmConfig;
    use crate::model::lora::{adapter_params, attach, merge};
    use burn::backend::NdArray;
    use burn::module::Param;
    use burn::tensor::Int;

    type B = NdArray<f32>;

    fn logits(model: &CausalLm<B>) -> Vec<f32> {
        let ids = Tensor::<B, 2, Int>::from_data(TensorData::new(vec![3i64, 9, 1, 20, 7], [1, 5]), &Default::default());
        model.forward(ids).into_data().to_vec().unwrap()
    }

    fn max_diff(a: &[f32], b: &[f32]) -> f32 {
        a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
    }

    #[test]
    fn a_fresh_adapter_changes_nothing_and_a_trained_one_round_trips_through_peft_and_merging() {
        let device = Default::default();
        let config = CausalLmConfig::tiny(40);
        let base = CausalLm::<B>::init(&config, 1, &device);
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
        let fresh = CausalLm::<B>::init(&config, 1, &device);
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
    fn mismatched_adapters_are_errors_that_say_what() {
        let device = Default::default();
        let model = attach(CausalLm::<B>::init(&CausalLmConfig::tiny(40), 1, &device), &LoraConfig::new(2), 0).unwrap();
        let dir = tempfile::tempdir().unwrap();
        save_adapter(&model, &LoraConfig::new(2), "tiny", dir.path()).unwrap();
        let wider = CausalLmConfig::shaped(40, 96, 2);
        let err = load_adapter(CausalLm::<B>::init(&wider, 1, &device), dir.path()).unwrap_err().to_string();
        assert!(err.contains("q_proj.lora_A") && err.contains("96"), "{err}");
    }
}
