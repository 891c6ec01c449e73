//! The Hugging Face `config.json` of a decoder of the Qwen2 / Llama family.
//!
//! One decoder serves the three (`model_type` `qwen2`, `llama` or `qwen3`): they differ in whether
//! the q/k/v projections carry a bias (always in Qwen2, `attention_bias` in the others), and Qwen3
//! RMS-normalises queries and keys per head and may set `head_dim` apart from the width. Rotary
//! frequencies follow `rope_theta` and, where the config has one, its `rope_scaling` (linear, or
//! Llama 3.1's `llama3`).

use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{Error, IoContext, Result};

/// The fields of a Qwen2, Llama or Qwen3 `config.json` the model needs; everything else is kept as read.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CausalLmConfig {
    /// `qwen2` (the default, as our own checkpoints were written before the field), `llama` or `qwen3`.
    #[serde(default = "default_model_type")]
    pub model_type: String,
    /// Llama's switch for q/k/v/o biases; Qwen2 has q/k/v biases whatever it says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attention_bias: Option<bool>,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: usize,
    #[serde(default = "default_eps")]
    pub rms_norm_eps: f64,
    #[serde(default = "default_theta")]
    pub rope_theta: f64,
    #[serde(default = "default_max_pos")]
    pub max_position_embeddings: usize,
    #[serde(default)]
    pub tie_word_embeddings: bool,
    #[serde(default = "default_act")]
    pub hidden_act: String,
    #[serde(default)]
    pub bos_token_id: Option<u32>,
    #[serde(default)]
    pub eos_token_id: Option<Value>,
    /// The rest of the file, written back unchanged.
    #[serde(flatten)]
    pub extra: serde_json::Map<String, Value>,
}

/// The rotary scaling types of `rope_scaling` / `rope_parameters` the decoder implements.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RopeScaling {
    /// `θ^(-2i/d)`.
    Default,
    /// Every frequency divided by `factor` (position interpolation).
    Linear { factor: f64 },
    /// Llama 3.1's piecewise scaling by wavelength.
    Llama3 { factor: f64, low_freq_factor: f64, high_freq_factor: f64, original_max_position_embeddings: f64 },
}

fn default_model_type() -> String {
    "qwen2".into()
}
fn default_eps() -> f64 {
    1e-6
}
fn default_theta() -> f64 {
    10_000.0
}
fn default_max_pos() -> usize {
    32_768
}
fn default_act() -> String {
    "silu".into()
}

impl CausalLmConfig {
    /// A tiny config for tests and the CPU demo.
    pub fn tiny(vocab_size: usize) -> Self {
        CausalLmConfig {
            model_type: default_model_type(),
            attention_bias: None,
            vocab_size,
            hidden_size: 64,
            intermediate_size: 160,
            num_hidden_layers: 2,
            num_attention_heads: 4,
            num_key_value_heads: 2,
            rms_norm_eps: 1e-6,
            rope_theta: 10_000.0,
            max_position_embeddings: 2048,
            tie_word_embeddings: true,
            hidden_act: "silu".into(),
            bos_token_id: None,
            eos_token_id: None,
            extra: Default::default(),
        }
    }

    /// A random model of `hidden` width and `layers` layers for CPU runs: heads of 64, half as
    /// many key/value heads, a SwiGLU of 8/3 the width (rounded to 32), tied embeddings.
    pub fn shaped(vocab_size: usize, hidden: usize, layers: usize) -> Self {
        let heads = (hidden / 64).max(1);
        let intermediate = (hidden * 8 / 3).div_ceil(32) * 32;
        CausalLmConfig {
            hidden_size: hidden,
            intermediate_size: intermediate,
            num_hidden_layers: layers,
            num_attention_heads: heads,
            num_key_value_heads: (heads / 2).max(1),
            ..CausalLmConfig::tiny(vocab_size)
        }
    }

    /// The size of one attention head: `head_dim` where the config sets it (Qwen3's 128 beside
    /// a 1024-wide model), else `hidden_size / num_attention_heads`.
    pub fn head_dim(&self) -> usize {
        match self.extra.get("head_dim").and_then(Value::as_u64) {
            Some(d) => d as usize,
            None => self.hidden_size / self.num_attention_heads.max(1),
        }
    }

    /// Whether q/k/v carry a bias: always in Qwen2, as `attention_bias` says in Llama and Qwen3.
    pub fn qkv_bias(&self) -> bool {
        self.model_type == "qwen2" || self.attention_bias == Some(true)
    }

    /// Whether queries and keys are RMS-normalised per head before RoPE (Qwen3).
    pub fn qk_norm(&self) -> bool {
        self.model_type == "qwen3"
    }

    /// The `architectures` entry transformers instantiates for this family.
    fn architecture(&self) -> &'static str {
        match self.model_type.as_str() {
            "llama" => "LlamaForCausalLM",
            "qwen3" => "Qwen3ForCausalLM",
            _ => "Qwen2ForCausalLM",
        }
    }

    /// Checks the shape constraints the model relies on.
    pub fn validate(&self) -> Result<()> {
        let bad = |r: String| Err(Error::Config(r));
        if !matches!(self.model_type.as_str(), "qwen2" | "llama" | "qwen3") {
            return bad(format!("model_type `{}` is not supported (expected qwen2, llama or qwen3)", self.model_type));
        }
        if self.model_type != "qwen2" && self.attention_bias == Some(true) {
            return bad("attention_bias: true is not supported (the o_proj bias is not modelled)".into());
        }
        if self.extra.get("mlp_bias").and_then(Value::as_bool) == Some(true) {
            return bad("mlp_bias: true is not supported".into());
        }
        if self.extra.get("use_sliding_window").and_then(Value::as_bool) == Some(true) {
            return bad("use_sliding_window: true is not supported (attention is always full)".into());
        }
        self.rope_scaling()?;
        if self.num_attention_heads == 0 || self.num_key_value_heads == 0 {
            return bad("num_attention_heads and num_key_value_heads must be positive".into());
        }
        let sizes = [
            ("vocab_size", self.vocab_size),
            ("hidden_size", self.hidden_size),
            ("intermediate_size", self.intermediate_size),
            ("num_hidden_layers", self.num_hidden_layers),
        ];
        if let Some((name, _)) = sizes.iter().find(|(_, v)| *v == 0) {
            return bad(format!("{name} must be positive"));
        }
        if self.checked_num_params().is_none() {
            return bad(format!(
                "the shape (vocab {}, hidden {}, intermediate {}, {} layers) overflows a parameter count",
                self.vocab_size, self.hidden_size, self.intermediate_size, self.num_hidden_layers
            ));
        }
        if !self.extra.contains_key("head_dim") && !self.hidden_size.is_multiple_of(self.num_attention_heads) {
            return bad(format!(
                "hidden_size {} is not a multiple of num_attention_heads {} (and no head_dim is given)",
                self.hidden_size, self.num_attention_heads
            ));
        }
        if !self.num_attention_heads.is_multiple_of(self.num_key_value_heads) {
            return bad(format!(
                "num_attention_heads {} is not a multiple of num_key_value_heads {}",
                self.num_attention_heads, self.num_key_value_heads
            ));
        }
        if !self.head_dim().is_multiple_of(2) {
            return bad(format!("head_dim {} must be even for rotary embeddings", self.head_dim()));
        }
        if self.hidden_act != "silu" {
            return bad(format!("hidden_act `{}` is not supported (CausalLm and Llama use silu)", self.hidden_act));
        }
        Ok(())
    }

    /// How the rotary frequencies are derived from `rope_theta`: `rope_scaling` as written by
    /// transformers 4, or `rope_parameters` (transformers 5, which also holds `rope_theta`).
    pub fn rope_scaling(&self) -> Result<RopeScaling> {
        let spec = match self.extra.get("rope_scaling") {
            None | Some(Value::Null) => self.extra.get("rope_parameters"),
            some => some,
        };
        let Some(spec) = spec.filter(|s| !s.is_null()) else { return Ok(RopeScaling::Default) };
        let kind = spec.get("rope_type").or_else(|| spec.get("type")).and_then(Value::as_str).unwrap_or("default");
        let field = |name: &str| {
            spec.get(name).and_then(Value::as_f64).ok_or_else(|| {
                Error::Config(format!("rope_scaling of type `{kind}` needs a number `{name}` (got {spec})"))
            })
        };
        match kind {
            "default" => Ok(RopeScaling::Default),
            "linear" => Ok(RopeScaling::Linear { factor: field("factor")? }),
            "llama3" => {
                let s = RopeScaling::Llama3 {
                    factor: field("factor")?,
                    low_freq_factor: field("low_freq_factor")?,
                    high_freq_factor: field("high_freq_factor")?,
                    original_max_position_embeddings: field("original_max_position_embeddings")?,
                };
                if let RopeScaling::Llama3 { low_freq_factor: lo, high_freq_factor: hi, .. } = s
                    && hi <= lo
                {
                    return Err(Error::Config(format!(
                        "rope_scaling llama3: high_freq_factor {hi} must exceed low_freq_factor {lo}"
                    )));
                }
                Ok(s)
            }
            other => Err(Error::Config(format!(
                "rope_scaling of type `{other}` is not supported yet (expected default, linear or llama3)"
            ))),
        }
    }

    /// The rotary inverse frequencies, one per pair of head dimensions, as transformers'
    /// `ROPE_INIT_FUNCTIONS` compute them (the attention factor of these types is 1). A scaling
    /// that [`Self::rope_scaling`] rejects is an error of [`Self::validate`]; here it reads as none.
    pub fn rope_inv_freq(&self) -> Vec<f64> {
        let d = self.head_dim();
        let base = (0..d / 2).map(|i| 1.0 / self.rope_theta.powf((2 * i) as f64 / d as f64));
        match self.rope_scaling().unwrap_or(RopeScaling::Default) {
            RopeScaling::Default => base.collect(),
            RopeScaling::Linear { factor } => base.map(|f| f / factor).collect(),
            RopeScaling::Llama3 {
                factor,
                low_freq_factor,
                high_freq_factor,
                original_max_position_embeddings: ctx,
            } => {
                // Long wavelengths are slowed by `factor`, short ones kept, and those between
                // interpolated by where the wavelength falls between the two thresholds.
                let (low_wavelen, high_wavelen) = (ctx / low_freq_factor, ctx / high_freq_factor);
                base.map(|f| {
                    let wavelen = 2.0 * std::f64::consts::PI / f;
                    if wavelen > low_wavelen {
                        f / factor
                    } else if wavelen < high_wavelen {
                        f
                    } else {
                        let smooth = (ctx / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor);
                        (1.0 - smooth) * f / factor + smooth * f
                    }
                })
                .collect()
            }
        }
    }

    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).at(path)?;
        let mut c: CausalLmConfig = serde_json::from_str(&text)
            .map_err(|e| Error::BadModel { path: path.to_path_buf(), reason: e.to_string() })?;
        // transformers 5 moved rope_theta under rope_parameters.
        if let Some(t) = c.extra.get("rope_parameters").and_then(|r| r.get("rope_theta")).and_then(Value::as_f64) {
            c.rope_theta = t;
        }
        c.validate().map_err(|e| match e {
            Error::Config(reason) => Error::BadModel { path: path.to_path_buf(), reason },
            other => other,
        })?;
        Ok(c)
    }

    pub fn save(&self, path: &Path) -> Result<()> {
        let mut v = serde_json::to_value(self).map_err(|e| Error::Internal(e.to_string()))?;
        if let Some(o) = v.as_object_mut() {
            o.entry("architectures").or_insert_with(|| serde_json::json!([self.architecture()]));
            o.entry("torch_dtype").or_insert_with(|| "float32".into());
        }
        let text = serde_json::to_string_pretty(&v).map_err(|e| Error::Internal(e.to_string()))?;
        Ok(std::fs::write(path, text + "\n").at(path)?)
    }

    /// Parameters of the model (saturating; [`CausalLmConfig::validate`] refuses a shape whose
    /// count overflows).
    pub fn num_params(&self) -> usize {
        self.checked_num_params().unwrap_or(usize::MAX)
    }

    /// Parameters of the model, `None` when a corrupt shape overflows the count.
    pub fn checked_num_params(&self) -> Option<usize> {
        let (h, i, v, l) = (self.hidden_size, self.intermediate_size, self.vocab_size, self.num_hidden_layers);
        let hd = self.head_dim();
        let (q, kv) = (self.num_attention_heads.checked_mul(hd)?, self.num_key_value_heads.checked_mul(hd)?);
        let bias = if self.qkv_bias() { q.checked_add(kv.checked_mul(2)?)? } else { 0 };
        let norms = if self.qk_norm() { hd.checked_mul(2)? } else { 0 };
        let attn = [h.checked_mul(q)?, h.checked_mul(kv)?.checked_mul(2)?, bias, q.checked_mul(h)?, norms]
            .into_iter()
            .try_fold(0usize, usize::checked_add)?;
        let mlp = h.checked_mul(i)?.checked_mul(3)?;
        let per_layer = attn.checked_add(mlp)?.checked_add(h.checked_mul(2)?)?;
        let embed = v.checked_mul(h)?;
        let head = if self.tie_word_embeddings { 0 } else { embed };
        [embed, l.checked_mul(per_layer)?, h, head].into_iter().try_fold(0usize, usize::checked_add)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn with(key: &str, spec: Value) -> CausalLmConfig {
        let mut c = CausalLmConfig { model_type: "llama".into(), ..CausalLmConfig::tiny(128) };
        c.extra.insert(key.into(), spec);
        c
    }

    #[test]
    fn both_spellings_of_llama3_scaling_give_the_same_frequencies() {
        let spec = json!({"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                          "high_freq_factor": 4.0, "original_max_position_embeddings": 32});
        let (old, new) = (with("rope_scaling", spec.clone()), with("rope_parameters", spec));
        assert_eq!(old.rope_inv_freq(), new.rope_inv_freq());
        let plain = CausalLmConfig::tiny(128).rope_inv_freq();
        let scaled = new.rope_inv_freq();
        // head_dim 16: wavelength 6.3 < 8 is kept, 19.9 is interpolated, the rest are slowed 8×.
        assert_eq!(scaled[0], plain[0]);
        assert!(scaled[1] < plain[1] && scaled[1] > plain[1] / 8.0);
        assert!(scaled[2..].iter().zip(&plain[2..]).all(|(s, p)| (s - p / 8.0).abs() < 1e-15));
    }

    #[test]
    fn linear_scaling_divides_every_frequency() {
        let c = with("rope_scaling", json!({"type": "linear", "factor": 4.0}));
        let plain = CausalLmConfig::tiny(128).rope_inv_freq();
        assert!(c.rope_inv_freq().iter().zip(&plain).all(|(s, p)| (s * 4.0 - p).abs() < 1e-15));
    }

    #[test]
    fn unsupported_or_incomplete_scaling_is_a_clear_error() {
        let yarn = with("rope_scaling", json!({"rope_type": "yarn", "factor": 4.0}));
        let e = yarn.validate().unwrap_err().to_string();
        assert!(e.contains("`yarn`") && e.contains("llama3"), "{e}");
        let partial = with("rope_parameters", json!({"rope_type": "llama3", "factor": 8.0}));
        let e = partial.validate().unwrap_err().to_string();
        assert!(e.contains("low_freq_factor"), "{e}");
        // transformers 5 writes rope_parameters with the default type for unscaled models.
        assert!(with("rope_parameters", json!({"rope_type": "default", "rope_theta": 1e4})).validate().is_ok());
    }
}
