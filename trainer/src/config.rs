//! The Hugging Face `config.json` of a decoder of the Qwen2 / Llama family.
//!
//! One decoder serves both (`model_type` `qwen2` or `llama`): they differ in whether the
//! q/k/v projections carry a bias (always in Qwen2, `attention_bias` in Llama).

use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{Error, IoContext, Result};

/// The fields of a Qwen2 or Llama `config.json` the model needs; everything else is kept as read.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Qwen2Config {
    /// `qwen2` (the default, as our own checkpoints were written before the field) or `llama`.
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

impl Qwen2Config {
    /// A tiny config for tests and the CPU demo.
    pub fn tiny(vocab_size: usize) -> Self {
        Qwen2Config {
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
        Qwen2Config {
            hidden_size: hidden,
            intermediate_size: intermediate,
            num_hidden_layers: layers,
            num_attention_heads: heads,
            num_key_value_heads: (heads / 2).max(1),
            ..Qwen2Config::tiny(vocab_size)
        }
    }

    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads
    }

    /// Whether q/k/v carry a bias: always in Qwen2, as `attention_bias` says in Llama.
    pub fn qkv_bias(&self) -> bool {
        self.model_type == "qwen2" || self.attention_bias == Some(true)
    }

    /// The `architectures` entry transformers instantiates for this family.
    fn architecture(&self) -> &'static str {
        if self.model_type == "llama" { "LlamaForCausalLM" } else { "Qwen2ForCausalLM" }
    }

    /// Checks the shape constraints the model relies on.
    pub fn validate(&self) -> Result<()> {
        let bad = |r: String| Err(Error::Config(r));
        if !matches!(self.model_type.as_str(), "qwen2" | "llama") {
            return bad(format!("model_type `{}` is not supported (expected qwen2 or llama)", self.model_type));
        }
        if self.model_type == "llama" && self.attention_bias == Some(true) {
            return bad("attention_bias: true is not supported (the o_proj bias is not modelled)".into());
        }
        if self.extra.get("mlp_bias").and_then(Value::as_bool) == Some(true) {
            return bad("mlp_bias: true is not supported".into());
        }
        if let Some(hd) = self.extra.get("head_dim").and_then(Value::as_u64)
            && hd as usize != self.hidden_size / self.num_attention_heads.max(1)
        {
            return bad(format!(
                "head_dim {hd} differs from hidden_size / num_attention_heads = {}; only the derived head size is supported",
                self.hidden_size / self.num_attention_heads.max(1)
            ));
        }
        match self.extra.get("rope_scaling") {
            None | Some(Value::Null) => {}
            Some(r) => {
                let kind = r.get("rope_type").or_else(|| r.get("type")).and_then(Value::as_str).unwrap_or("?");
                if kind != "default" {
                    return bad(format!("rope_scaling of type `{kind}` is not supported yet (only none or default)"));
                }
            }
        }
        if !self.hidden_size.is_multiple_of(self.num_attention_heads) {
            return bad(format!(
                "hidden_size {} is not a multiple of num_attention_heads {}",
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
            return bad(format!("hidden_act `{}` is not supported (Qwen2 and Llama use silu)", self.hidden_act));
        }
        Ok(())
    }

    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).at(path)?;
        let mut c: Qwen2Config = serde_json::from_str(&text)
            .map_err(|e| Error::BadModel { path: path.to_path_buf(), reason: e.to_string() })?;
        // transformers 5 moved rope_theta under rope_parameters.
        if let Some(t) = c.extra.get("rope_parameters").and_then(|r| r.get("rope_theta")).and_then(Value::as_f64) {
            c.rope_theta = t;
        }
        c.validate()?;
        Ok(c)
    }

    pub fn save(&self, path: &Path) -> Result<()> {
        let mut v = serde_json::to_value(self).map_err(|e| Error::Internal(e.to_string()))?;
        if let Some(o) = v.as_object_mut() {
            o.entry("architectures").or_insert_with(|| serde_json::json!([self.architecture()]));
            o.entry("torch_dtype").or_insert_with(|| "float32".into());
        }
        let text = serde_json::to_string_pretty(&v).map_err(|e| Error::Internal(e.to_string()))?;
        std::fs::write(path, text + "\n").at(path)
    }

    /// Parameters of the model.
    pub fn num_params(&self) -> usize {
        let (h, i, v, l) = (self.hidden_size, self.intermediate_size, self.vocab_size, self.num_hidden_layers);
        let kv = self.num_key_value_heads * self.head_dim();
        let bias = if self.qkv_bias() { h + 2 * kv } else { 0 };
        let attn = h * h + 2 * h * kv + bias + h * h;
        let mlp = 3 * h * i;
        let per_layer = attn + mlp + 2 * h;
        v * h + l * per_layer + h + if self.tie_word_embeddings { 0 } else { v * h }
    }
}
