//! Hugging Face checkpoints: `config.json` + `model.safetensors` (or sharded with
//! `model.safetensors.index.json`) ⇄ [`crate::CausalLm`].
//!
//! Names map one to one (`model.layers.3.self_attn.q_proj.weight` …, `lm_head.weight` unless
//! tied); linear weights are stored `[out, in]` by PyTorch and `[in, out]` by Burn, so they are
//! transposed on the way in and out. bf16 and f16 checkpoints load as f32; saving writes f32,
//! which `transformers` loads unchanged.

use std::collections::BTreeMap;
use std::path::Path;

use burn::module::Param;
use burn::nn::{Linear, RmsNorm};
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use safetensors::{Dtype, SafeTensors};

use crate::error::{Error, IoContext, Result};
use crate::model::CausalLm;
use crate::model::config::CausalLmConfig;

/// A named f32 array.
pub(crate) struct Array {
    pub(crate) shape: Vec<usize>,
    pub(crate) data: Vec<f32>,
}

/// bf16 bits → f32 (exact: bf16 is the top half of an f32).
pub(crate) fn bf16_to_f32(bits: u16) -> f32 {
    f32::from_bits(u32::from(bits) << 16)
}

pub(crate) fn f16_to_f32(bits: u16) -> f32 {
    let sign = u32::from(bits >> 15) << 31;
    let exp = u32::from((bits >> 10) & 0x1f);
    let frac = u32::from(bits & 0x3ff);
    let out = match (exp, frac) {
        (0, 0) => sign,
        (0, f) => {
            // Subnormal: renormalise.
            let mut e = 127 - 15 + 1;
            let mut f = f;
            while f & 0x400 == 0 {
                f <<= 1;
                e -= 1;
            }
            sign | (e << 23) | ((f & 0x3ff) << 13)
        }
        (0x1f, f) => sign | 0x7f80_0000 | (f << 13),
        (e, f) => sign | ((e + 127 - 15) << 23) | (f << 13),
    };
    f32::from_bits(out)
}

/// Reads every tensor of one safetensors file as f32.
pub(crate) fn read_shard(path: &Path, into: &mut BTreeMap<String, Array>) -> Result<()> {
    let bytes = std::fs::read(path).at(path)?;
    let st = SafeTensors::deserialize(&bytes)
        .map_err(|e| Error::BadModel { path: path.to_path_buf(), reason: e.to_string() })?;
    for (name, view) in st.tensors() {
        let raw = view.data();
        let data: Vec<f32> = match view.dtype() {
            Dtype::F32 => raw.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect(),
            Dtype::BF16 => raw.chunks_exact(2).map(|c| bf16_to_f32(u16::from_le_bytes([c[0], c[1]]))).collect(),
            Dtype::F16 => raw.chunks_exact(2).map(|c| f16_to_f32(u16::from_le_bytes([c[0], c[1]]))).collect(),
            other => {
                return Err(Error::BadModel {
                    path: path.to_path_buf(),
                    reason: format!("tensor {name} has dtype {other:?}; expected f32, bf16 or f16"),
                });
            }
        };
        into.insert(name, Array { shape: view.shape().to_vec(), data });
    }
    Ok(())
}

/// Reads every tensor of a model folder; also returns the names of the files read.
fn read_all(dir: &Path) -> Result<(BTreeMap<String, Array>, Vec<String>)> {
    let mut out = BTreeMap::new();
    let mut files = vec![];
    let single = dir.join("model.safetensors");
    let index = dir.join("model.safetensors.index.json");
    if single.exists() {
        read_shard(&single, &mut out)?;
        files.push("model.safetensors".to_string());
    } else if index.exists() {
        let text = std::fs::read_to_string(&index).at(&index)?;
        let v: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| Error::BadModel { path: index.clone(), reason: e.to_string() })?;
        let mut shards: Vec<String> = v
            .get("weight_map")
            .and_then(|m| m.as_object())
            .ok_or_else(|| Error::BadModel { path: index.clone(), reason: "no weight_map".into() })?
            .values()
            .filter_map(|f| f.as_str().map(str::to_string))
            .collect();
        shards.sort();
        shards.dedup();
        for s in shards {
            read_shard(&dir.join(&s), &mut out)?;
            files.push(s);
        }
    } else {
        return Err(Error::BadModel {
            path: dir.to_path_buf(),
            reason: "neither model.safetensors nor model.safetensors.index.json".into(),
        });
    }
    Ok((out, files))
}

struct Loader<'a, B: Backend> {
    arrays: BTreeMap<String, Array>,
    /// The safetensors files the arrays came from, for messages.
    files: String,
    dir: &'a Path,
    device: &'a B::Device,
}

impl<B: Backend> Loader<'_, B> {
    fn take<const D: usize>(&mut self, name: &str, shape: [usize; D]) -> Result<Tensor<B, D>> {
        let a = self.arrays.remove(name).ok_or_else(|| Error::BadModel {
            path: self.dir.to_path_buf(),
            reason: format!("missing tensor {name}: config.json implies it, {} does not hold it", self.files),
        })?;
        if a.shape != shape {
            return Err(Error::BadModel {
                path: self.dir.to_path_buf(),
                reason: format!(
                    "tensor {name} has shape {:?} in {}, config.json implies {shape:?}",
                    a.shape, self.files
                ),
            });
        }
        Ok(Tensor::from_data(TensorData::new(a.data, shape), self.device))
    }

    fn linear(&mut self, prefix: &str, d_in: usize, d_out: usize, bias: bool) -> Result<Linear<B>> {
        let w = self.take::<2>(&format!("{prefix}.weight"), [d_out, d_in])?.transpose();
        let b = if bias { Some(Param::from_tensor(self.take::<1>(&format!("{prefix}.bias"), [d_out])?)) } else { None };
        Ok(Linear { weight: Param::from_tensor(w), bias: b })
    }

    fn norm(&mut self, name: &str, d: usize, eps: f64) -> Result<RmsNorm<B>> {
        Ok(RmsNorm { gamma: Param::from_tensor(self.take::<1>(name, [d])?), epsilon: eps })
    }
}

/// Loads `config.json` and the weights of a model folder.
pub fn load<B: Backend>(dir: &Path, device: &B::Device) -> Result<(CausalLmConfig, CausalLm<B>)> {
    let config = CausalLmConfig::load(&dir.join("config.json"))?;
    let (arrays, files) = read_all(dir)?;
    // The model is allocated from the config: a corrupt size there must not ask for more
    // memory than the weights on disk can fill.
    let stored: usize = arrays.values().map(|a| a.data.len()).sum();
    if config.num_params() > stored {
        return Err(Error::BadModel {
            path: dir.join("config.json"),
            reason: format!(
                "the config implies {} parameters, the weights ({}) hold {stored}: config.json does not match them",
                config.num_params(),
                files.join(", ")
            ),
        });
    }
    let mut model = CausalLm::<B>::zeros(&config, device);
    let mut l = Loader::<B> { arrays, files: files.join(", "), dir, device };
    let (h, i, hd, eps) = (config.hidden_size, config.intermediate_size, config.head_dim(), config.rms_norm_eps);
    let (q, kv, bias) = (config.num_attention_heads * hd, config.num_key_value_heads * hd, config.qkv_bias());
    model.embed_tokens.weight = Param::from_tensor(l.take::<2>("model.embed_tokens.weight", [config.vocab_size, h])?);
    for (n, layer) in model.layers.iter_mut().enumerate() {
        let p = format!("model.layers.{n}");
        layer.input_layernorm = l.norm(&format!("{p}.input_layernorm.weight"), h, eps)?;
        layer.post_attention_layernorm = l.norm(&format!("{p}.post_attention_layernorm.weight"), h, eps)?;
        layer.self_attn.q_proj = l.linear(&format!("{p}.self_attn.q_proj"), h, q, bias)?.into();
        layer.self_attn.k_proj = l.linear(&format!("{p}.self_attn.k_proj"), h, kv, bias)?.into();
        layer.self_attn.v_proj = l.linear(&format!("{p}.self_attn.v_proj"), h, kv, bias)?.into();
        layer.self_attn.o_proj = l.linear(&format!("{p}.self_attn.o_proj"), q, h, false)?.into();
        if config.qk_norm() {
            layer.self_attn.q_norm = Some(l.norm(&format!("{p}.self_attn.q_norm.weight"), hd, eps)?);
            layer.self_attn.k_norm = Some(l.norm(&format!("{p}.self_attn.k_norm.weight"), hd, eps)?);
        }
        layer.mlp.gate_proj = l.linear(&format!("{p}.mlp.gate_proj"), h, i, false)?.into();
        layer.mlp.up_proj = l.linear(&format!("{p}.mlp.up_proj"), h, i, false)?.into();
        layer.mlp.down_proj = l.linear(&format!("{p}.mlp.down_proj"), i, h, false)?.into();
    }
    model.norm = l.norm("model.norm.weight", h, eps)?;
    model.lm_head = if config.tie_word_embeddings {
        l.arrays.remove("lm_head.weight");
        None
    } else {
        Some(l.linear("lm_head", h, config.vocab_size, false)?)
    };
    // Rotary inverse frequencies are recomputed from rope_theta; anything else is unexpected.
    let rest: Vec<&String> = l.arrays.keys().filter(|k| !k.ends_with("rotary_emb.inv_freq")).collect();
    if !rest.is_empty() {
        return Err(Error::BadModel {
            path: dir.to_path_buf(),
            reason: format!("unexpected tensors in {}: {rest:?}", l.files),
        });
    }
    Ok((config, model))
}

/// A tensor's values as f32.
pub(crate) fn to_vec<B: Backend, const D: usize>(t: Tensor<B, D>) -> Result<Vec<f32>> {
    t.into_data().convert::<f32>().to_vec::<f32>().map_err(|e| Error::Internal(format!("{e:?}")))
}

/// Writes `config.json` and `model.safetensors` (f32) that `transformers` loads. Attached LoRA
/// adapters are merged into the weights written.
pub fn save<B: Backend>(config: &CausalLmConfig, model: &CausalLm<B>, dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).at(dir)?;
    let mut tensors: Vec<(String, Vec<usize>, Vec<f32>)> = Vec::new();
    let mut put = |name: String, t: Tensor<B, 2>, transpose: bool| -> Result<()> {
        let t = if transpose { t.transpose() } else { t };
        let shape = t.dims().to_vec();
        tensors.push((name, shape, to_vec(t)?));
        Ok(())
    };
    put("model.embed_tokens.weight".into(), model.embed_tokens.weight.val(), false)?;
    let mut vectors: Vec<(String, Tensor<B, 1>)> = Vec::new();
    for (n, layer) in model.layers.iter().enumerate() {
        let p = format!("model.layers.{n}");
        let a = &layer.self_attn;
        for (name, lin) in [
            ("self_attn.q_proj", &a.q_proj),
            ("self_attn.k_proj", &a.k_proj),
            ("self_attn.v_proj", &a.v_proj),
            ("self_attn.o_proj", &a.o_proj),
        ] {
            put(format!("{p}.{name}.weight"), lin.merged_weight(), true)?;
            if let Some(b) = &lin.base.bias {
                vectors.push((format!("{p}.{name}.bias"), b.val()));
            }
        }
        for (name, lin) in [
            ("mlp.gate_proj", &layer.mlp.gate_proj),
            ("mlp.up_proj", &layer.mlp.up_proj),
            ("mlp.down_proj", &layer.mlp.down_proj),
        ] {
            put(format!("{p}.{name}.weight"), lin.merged_weight(), true)?;
        }
        for (name, n) in [("self_attn.q_norm", &a.q_norm), ("self_attn.k_norm", &a.k_norm)] {
            if let Some(n) = n {
                vectors.push((format!("{p}.{name}.weight"), n.gamma.val()));
            }
        }
        vectors.push((format!("{p}.input_layernorm.weight"), layer.input_layernorm.gamma.val()));
        vectors.push((format!("{p}.post_attention_layernorm.weight"), layer.post_attention_layernorm.gamma.val()));
    }
    vectors.push(("model.norm.weight".into(), model.norm.gamma.val()));
    if let Some(head) = &model.lm_head {
        put("lm_head.weight".into(), head.weight.val(), true)?;
    }
    for (name, t) in vectors {
        let shape = t.dims().to_vec();
        tensors.push((name, shape, to_vec(t)?));
    }
    write_safetensors(&dir.join("model.safetensors"), tensors, StoredDtype::F32)?;
    config.save(&dir.join("config.json"))
}

/// How weights are stored in a written `model.safetensors`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum StoredDtype {
    F32,
    /// Rounded to nearest even; half the size, what most published checkpoints use.
    Bf16,
}

/// f32 → bf16 bits, rounding to nearest even (NaN stays NaN).
pub(crate) fn f32_to_bf16(x: f32) -> u16 {
    let bits = x.to_bits();
    if x.is_nan() {
        return ((bits >> 16) | 0x40) as u16;
    }
    let round = 0x7fff + ((bits >> 16) & 1);
    (bits.wrapping_add(round) >> 16) as u16
}

/// Writes named f32 arrays (`(name, shape, values)`) as one safetensors file that transformers
/// reads (`format: pt`).
pub(crate) fn write_safetensors(
    path: &Path,
    tensors: Vec<(String, Vec<usize>, Vec<f32>)>,
    dtype: StoredDtype,
) -> Result<()> {
    let bytes: Vec<(String, Vec<usize>, Vec<u8>)> = tensors
        .into_iter()
        .map(|(n, s, d)| {
            let raw = match dtype {
                StoredDtype::F32 => d.iter().flat_map(|f| f.to_le_bytes()).collect(),
                StoredDtype::Bf16 => d.iter().flat_map(|f| f32_to_bf16(*f).to_le_bytes()).collect(),
            };
            (n, s, raw)
        })
        .collect();
    let st_dtype = match dtype {
        StoredDtype::F32 => Dtype::F32,
        StoredDtype::Bf16 => Dtype::BF16,
    };
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = bytes
        .iter()
        .map(|(n, s, b)| safetensors::tensor::TensorView::new(st_dtype, s.clone(), b).map(|v| (n.clone(), v)))
        .collect::<std::result::Result<_, _>>()
        .map_err(|e| Error::Internal(e.to_string()))?;
    let meta = std::collections::HashMap::from([("format".to_string(), "pt".to_string())]);
    safetensors::serialize_to_file(views, Some(meta), path)
        .map_err(|e| Error::BadModel { path: path.to_path_buf(), reason: e.to_string() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn f16_conversion_matches_known_values() {
        assert_eq!(f16_to_f32(0x3c00), 1.0);
        assert_eq!(f16_to_f32(0xc000), -2.0);
        assert_eq!(f16_to_f32(0x3555), 0.333_251_95);
        assert_eq!(f16_to_f32(0x0001), 5.960_464_5e-8);
        assert!(f16_to_f32(0x7e00).is_nan());
    }

    #[test]
    fn bf16_rounds_to_nearest_even() {
        assert_eq!(f32_to_bf16(1.0), 0x3f80);
        // 1 + 2^-8 lies halfway between two bf16 values: ties go to the even one (1.0).
        assert_eq!(f32_to_bf16(f32::from_bits(0x3f80_8000)), 0x3f80);
        assert_eq!(f32_to_bf16(f32::from_bits(0x3f81_8000)), 0x3f82);
        assert_eq!(f32_to_bf16(f32::from_bits(0x3f80_8001)), 0x3f81);
        assert!(bf16_to_f32(f32_to_bf16(f32::NAN)).is_nan());
    }
}
