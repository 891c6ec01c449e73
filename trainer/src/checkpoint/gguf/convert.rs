//! A GGUF model → a Hugging Face folder: tensor names, llama.cpp's q/k row order undone, the
//! config from the metadata, and the vocabulary as a `tokenizers` JSON.

use std::collections::BTreeMap;
use std::path::Path;
use std::str::FromStr;

use serde_json::{Value, json};

use super::{Gguf, Meta};
use crate::checkpoint::hf::{StoredDtype, write_safetensors};
use crate::error::{Error, IoContext, Result};
use crate::model::CausalLmConfig;

/// Reorders the rows of a `[heads·head_dim, in]` q/k weight (or a `[heads·head_dim]` bias)
/// between llama.cpp's layout and Hugging Face's: within a head, GGUF row `2b + a` is Hugging
/// Face row `a·head_dim/2 + b`. `to_hf` undoes llama.cpp's permutation; otherwise it applies it.
pub(super) fn reorder_rows(data: &[f32], rows: usize, heads: usize, to_hf: bool) -> Vec<f32> {
    let cols = data.len() / rows;
    let hd = rows / heads;
    let half = hd / 2;
    let mut out = vec![0.0; data.len()];
    for h in 0..heads {
        for a in 0..2 {
            for b in 0..half {
                let (gguf, hf) = ((h * hd + 2 * b + a) * cols, (h * hd + a * half + b) * cols);
                let (src, dst) = if to_hf { (gguf, hf) } else { (hf, gguf) };
                out[dst..dst + cols].copy_from_slice(&data[src..src + cols]);
            }
        }
    }
    out
}

/// Undoes llama.cpp's q/k row permutation (see [`reorder_rows`]).
pub(super) fn unpermute_rows(data: &[f32], rows: usize, heads: usize) -> Vec<f32> {
    reorder_rows(data, rows, heads, true)
}

/// Hugging Face's name for a GGUF tensor of the llama / qwen2 layout, or `None` when the
/// tensor is not part of the model (e.g. precomputed rope frequencies).
fn hf_name(name: &str) -> Option<String> {
    let top = match name {
        "token_embd.weight" => Some("model.embed_tokens.weight"),
        "output_norm.weight" => Some("model.norm.weight"),
        "output.weight" => Some("lm_head.weight"),
        _ => None,
    };
    if let Some(t) = top {
        return Some(t.into());
    }
    let rest = name.strip_prefix("blk.")?;
    let (layer, part) = rest.split_once('.')?;
    let (module, suffix) = part.rsplit_once('.')?;
    let hf = match module {
        "attn_norm" => "input_layernorm",
        "ffn_norm" => "post_attention_layernorm",
        "attn_q" => "self_attn.q_proj",
        "attn_k" => "self_attn.k_proj",
        "attn_v" => "self_attn.v_proj",
        "attn_output" => "self_attn.o_proj",
        "ffn_gate" => "mlp.gate_proj",
        "ffn_up" => "mlp.up_proj",
        "ffn_down" => "mlp.down_proj",
        _ => return None,
    };
    Some(format!("model.layers.{layer}.{hf}.{suffix}"))
}

/// What `import` wrote.
#[derive(Debug, Clone)]
pub struct Imported {
    pub config: CausalLmConfig,
    pub tensors: usize,
    /// Tensors per ggml type in the file.
    pub types: BTreeMap<String, usize>,
    pub parameters: usize,
}

/// Writes `dir/{config.json, model.safetensors, tokenizer.json, tokenizer_config.json,
/// generation_config.json}` from a GGUF file of a `llama` or `qwen2` model.
pub fn import(path: &Path, dir: &Path, dtype: StoredDtype) -> Result<Imported> {
    let g = Gguf::open(path)?;
    let arch = g.meta("general.architecture").and_then(Meta::as_str).unwrap_or("?").to_string();
    if !matches!(arch.as_str(), "llama" | "qwen2") {
        return Err(g.bad(format!("general.architecture `{arch}` is not supported (expected llama or qwen2)")));
    }
    let config = config_of(&g, &arch)?;
    config.validate().map_err(|e| match e {
        Error::Config(reason) => g.bad(format!("the model its metadata describes: {reason}")),
        other => other,
    })?;
    std::fs::create_dir_all(dir).at(dir)?;

    let hd = config.head_dim();
    let mut types = BTreeMap::new();
    let mut out = Vec::with_capacity(g.tensors.len());
    let mut parameters = 0;
    for t in &g.tensors {
        *types.entry(t.kind.name()).or_insert(0) += 1;
        if t.name == "rope_freqs.weight" {
            return Err(g.bad(
                "tensor rope_freqs.weight (Llama 3.1-style scaled rotary frequencies) is not supported yet".into(),
            ));
        }
        let Some(name) = hf_name(&t.name) else {
            return Err(g.bad(format!("tensor {} has no Hugging Face counterpart regrpo knows", t.name)));
        };
        let mut data = g.dequantize(t)?;
        let shape = t.shape();
        if arch == "llama" {
            let heads = match name.rsplit('.').nth(1) {
                Some("q_proj") => Some(config.num_attention_heads),
                Some("k_proj") => Some(config.num_key_value_heads),
                _ => None,
            };
            if let Some(heads) = heads {
                if shape[0] != heads * hd {
                    return Err(
                        g.bad(format!("tensor {} has {} rows, {heads} heads of {hd} expected", t.name, shape[0]))
                    );
                }
                data = unpermute_rows(&data, shape[0], heads);
            }
        }
        parameters += data.len();
        out.push((name, shape, data));
    }
    let n = out.len();
    write_safetensors(&dir.join("model.safetensors"), out, dtype)?;
    let mut config = config;
    if dtype == StoredDtype::Bf16 {
        config.extra.insert("torch_dtype".into(), "bfloat16".into());
    }
    config.save(&dir.join("config.json"))?;
    write_tokenizer(&g, dir)?;
    let generation = json!({
        "bos_token_id": config.bos_token_id,
        "eos_token_id": config.eos_token_id,
    });
    let gen_path = dir.join("generation_config.json");
    std::fs::write(&gen_path, serde_json::to_string_pretty(&generation).expect("json") + "\n").at(&gen_path)?;
    Ok(Imported { config, tensors: n, types, parameters })
}

/// The Hugging Face config of a GGUF model, from `{arch}.*` metadata.
fn config_of(g: &Gguf, arch: &str) -> Result<CausalLmConfig> {
    let key = |k: &str| format!("{arch}.{k}");
    let need = |k: &str| -> Result<usize> {
        g.meta(&key(k))
            .and_then(Meta::as_u64)
            .map(|v| v as usize)
            .ok_or_else(|| g.bad(format!("metadata `{}` is missing or not an integer", key(k))))
    };
    let tokens = g.meta("tokenizer.ggml.tokens").and_then(Meta::as_array).map_or(0, <[Meta]>::len);
    let hidden = need("embedding_length")?;
    let heads = need("attention.head_count")?;
    let kv_heads = need("attention.head_count_kv").unwrap_or(heads);
    let vocab = g.meta(&key("vocab_size")).and_then(Meta::as_u64).map_or(tokens, |v| v as usize);
    if let Some(rope) = g.meta(&key("rope.dimension_count")).and_then(Meta::as_u64)
        && rope as usize != hidden / heads.max(1)
    {
        return Err(g.bad(format!(
            "{} is {rope}, the head size is {}: partial rotary embeddings are not supported",
            key("rope.dimension_count"),
            hidden / heads.max(1)
        )));
    }
    if let Some(kind) = g.meta(&key("rope.scaling.type")).and_then(Meta::as_str)
        && kind != "none"
    {
        return Err(g.bad(format!("{} `{kind}` is not supported yet", key("rope.scaling.type"))));
    }
    let has = |n: &str| g.tensors.iter().any(|t| t.name == n);
    let tied = !has("output.weight");
    let bias = has("blk.0.attn_q.bias");
    let mut c = CausalLmConfig {
        model_type: arch.into(),
        attention_bias: (arch == "llama").then_some(bias),
        hidden_size: hidden,
        intermediate_size: need("feed_forward_length")?,
        num_hidden_layers: need("block_count")?,
        num_attention_heads: heads,
        num_key_value_heads: kv_heads,
        rms_norm_eps: g.meta(&key("attention.layer_norm_rms_epsilon")).and_then(Meta::as_f64).unwrap_or(1e-6),
        rope_theta: g.meta(&key("rope.freq_base")).and_then(Meta::as_f64).unwrap_or(10_000.0),
        max_position_embeddings: need("context_length").unwrap_or(2048),
        tie_word_embeddings: tied,
        bos_token_id: g.meta("tokenizer.ggml.bos_token_id").and_then(Meta::as_u64).map(|v| v as u32),
        eos_token_id: g.meta("tokenizer.ggml.eos_token_id").and_then(Meta::as_u64).map(|v| json!(v)),
        ..CausalLmConfig::tiny(vocab)
    };
    // f32 epsilons read as f64 carry float noise (9.99999974e-6): keep the value it stands for.
    c.rms_norm_eps = format!("{:e}", c.rms_norm_eps as f32).parse().unwrap_or(c.rms_norm_eps);
    if let Some(name) = g.meta("general.name").and_then(Meta::as_str) {
        c.extra.insert("_name_or_path".into(), name.into());
    }
    Ok(c)
}

/// The pre-tokenizer of a `tokenizer.ggml.pre` name, as llama.cpp splits text for it.
fn pre_tokenizer(g: &Gguf, pre: &str) -> Result<Value> {
    let byte_level =
        |regex: bool| json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": regex});
    let split = |pattern: &str| json!({"type": "Split", "pattern": {"Regex": pattern}, "behavior": "Isolated", "invert": false});
    const LLAMA3: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
    const QWEN2: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
    Ok(match pre {
        "gpt2" | "default" => byte_level(true),
        // SmolLM and StarCoder split every digit, then apply GPT-2's byte-level regex.
        "smollm" | "starcoder" => json!({"type": "Sequence", "pretokenizers": [
            {"type": "Digits", "individual_digits": true}, byte_level(true)]}),
        "llama-bpe" | "llama3" => json!({"type": "Sequence", "pretokenizers": [split(LLAMA3), byte_level(false)]}),
        "qwen2" => json!({"type": "Sequence", "pretokenizers": [split(QWEN2), byte_level(false)]}),
        other => {
            return Err(g.bad(format!(
                "tokenizer.ggml.pre `{other}` is not supported (known: gpt2, smollm, starcoder, llama-bpe, qwen2)"
            )));
        }
    })
}

/// `tokenizer.json` (byte-level BPE) and `tokenizer_config.json` (special tokens, the chat
/// template) from `tokenizer.ggml.*`.
fn write_tokenizer(g: &Gguf, dir: &Path) -> Result<()> {
    let model = g.meta("tokenizer.ggml.model").and_then(Meta::as_str).unwrap_or("?");
    if model != "gpt2" {
        return Err(g.bad(format!(
            "tokenizer.ggml.model `{model}` is not supported (only byte-level BPE, `gpt2`; SentencePiece `llama` is not)"
        )));
    }
    let strings = |k: &str| -> Result<Vec<String>> {
        g.meta(k)
            .and_then(Meta::as_array)
            .ok_or_else(|| g.bad(format!("metadata `{k}` is missing")))?
            .iter()
            .enumerate()
            .map(|(i, m)| m.as_str().map(str::to_string).ok_or_else(|| g.bad(format!("`{k}`[{i}] is not a string"))))
            .collect()
    };
    let tokens = strings("tokenizer.ggml.tokens")?;
    let merges = strings("tokenizer.ggml.merges")?;
    let types: Vec<u64> = g
        .meta("tokenizer.ggml.token_type")
        .and_then(Meta::as_array)
        .map(|a| a.iter().map(|m| m.as_u64().unwrap_or(1)).collect())
        .unwrap_or_else(|| vec![1; tokens.len()]);
    let pre = g.meta("tokenizer.ggml.pre").and_then(Meta::as_str).unwrap_or("default");

    // Token types: 1 normal, 2 unknown, 3 control, 4 user-defined, 5 unused, 6 byte.
    let added: Vec<Value> = tokens
        .iter()
        .enumerate()
        .filter(|(i, _)| matches!(types.get(*i), Some(3 | 4)))
        .map(|(i, t)| {
            json!({"id": i, "content": t, "single_word": false, "lstrip": false, "rstrip": false,
                   "normalized": types[i] == 4, "special": types[i] == 3})
        })
        .collect();
    let vocab: serde_json::Map<String, Value> = tokens.iter().enumerate().map(|(i, t)| (t.clone(), json!(i))).collect();
    let merges: Vec<Value> = merges
        .iter()
        .map(|m| match m.split_once(' ') {
            Some((a, b)) => json!([a, b]),
            None => json!([m, ""]),
        })
        .collect();
    let tokenizer = json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added,
        "normalizer": null,
        "pre_tokenizer": pre_tokenizer(g, pre)?,
        "post_processor": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": false, "use_regex": true},
        "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
        "model": {"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
                  "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
                  "vocab": vocab, "merges": merges},
    });
    let text = serde_json::to_string(&tokenizer).map_err(|e| Error::Internal(e.to_string()))?;
    // What we write must load: a malformed file is our bug, caught here rather than at training.
    tokenizers::Tokenizer::from_str(&text)
        .map_err(|e| Error::Tokenizer(format!("the tokenizer built from {}: {e}", g.path.display())))?;
    let tok_path = dir.join("tokenizer.json");
    std::fs::write(&tok_path, text).at(&tok_path)?;

    let special = |k: &str| {
        g.meta(k).and_then(Meta::as_u64).and_then(|i| tokens.get(i as usize)).map(|t| json!(t)).unwrap_or(Value::Null)
    };
    let decoder: serde_json::Map<String, Value> = added
        .iter()
        .map(|a| {
            let mut a = a.clone();
            let id = a.as_object_mut().and_then(|o| o.remove("id")).unwrap_or(Value::Null);
            (id.to_string(), a)
        })
        .collect();
    let mut cfg = json!({
        "tokenizer_class": "GPT2Tokenizer",
        "bos_token": special("tokenizer.ggml.bos_token_id"),
        "eos_token": special("tokenizer.ggml.eos_token_id"),
        "unk_token": special("tokenizer.ggml.unknown_token_id"),
        "pad_token": special("tokenizer.ggml.padding_token_id"),
        "add_bos_token": g.meta("tokenizer.ggml.add_bos_token").and_then(Meta::as_bool).unwrap_or(false),
        "clean_up_tokenization_spaces": false,
        "model_max_length": g.meta(&format!(
            "{}.context_length",
            g.meta("general.architecture").and_then(Meta::as_str).unwrap_or("llama")
        )).and_then(Meta::as_u64),
        "added_tokens_decoder": decoder,
    });
    if let Some(t) = g.meta("tokenizer.chat_template").and_then(Meta::as_str) {
        cfg["chat_template"] = json!(t);
    }
    let cfg_path = dir.join("tokenizer_config.json");
    Ok(std::fs::write(&cfg_path, serde_json::to_string_pretty(&cfg).expect("json") + "\n").at(&cfg_path)?)
}
