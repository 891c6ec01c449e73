//! GGUF (llama.cpp's single-file checkpoints) → a Hugging Face model folder.
//!
//! ```text
//! FILE.gguf ─header, metadata, tensor infos─▶ Gguf ─dequantize, rename, un-permute q/k─▶
//!     config.json + model.safetensors (f32 | bf16) + tokenizer.json + tokenizer_config.json
//! ```
//!
//! The container (version 2 and 3, little-endian) is read here: it is a short, fixed layout
//! and the Rust readers that exist come inside whole inference stacks (candle, llama.cpp
//! bindings) we would not otherwise build. Tensors of type F32, F16, BF16, Q8_0, Q4_0 and
//! Q4_1 are dequantized; any other type is an error naming the tensor and its type.
//!
//! Two conversions undo what llama.cpp's `convert_hf_to_gguf.py` did: for `llama` models the
//! rows of `attn_q` and `attn_k` were permuted from Hugging Face's rotate-half RoPE layout to
//! the interleaved one, so they are permuted back; and the BPE vocabulary (`tokenizer.ggml.*`)
//! is written as a `tokenizers` JSON with the pre-tokenizer its `tokenizer.ggml.pre` names.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde_json::{Value, json};

use crate::config::Qwen2Config;
use crate::error::{Error, IoContext, Result};
use crate::hf::{StoredDtype, bf16_to_f32, f16_to_f32, write_safetensors};

const MAGIC: &[u8; 4] = b"GGUF";

/// A metadata value.
#[derive(Debug, Clone, PartialEq)]
pub enum Meta {
    Int(i64),
    UInt(u64),
    Float(f64),
    Bool(bool),
    Str(String),
    Array(Vec<Meta>),
}

impl Meta {
    pub fn as_u64(&self) -> Option<u64> {
        match self {
            Meta::UInt(v) => Some(*v),
            Meta::Int(v) => u64::try_from(*v).ok(),
            _ => None,
        }
    }
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Meta::Float(v) => Some(*v),
            Meta::UInt(v) => Some(*v as f64),
            Meta::Int(v) => Some(*v as f64),
            _ => None,
        }
    }
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Meta::Str(s) => Some(s),
            _ => None,
        }
    }
    pub fn as_bool(&self) -> Option<bool> {
        match self {
            Meta::Bool(b) => Some(*b),
            _ => None,
        }
    }
    pub fn as_array(&self) -> Option<&[Meta]> {
        match self {
            Meta::Array(a) => Some(a),
            _ => None,
        }
    }
}

/// ggml tensor types regrpo reads, by their numbers in the format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GgmlType {
    F32,
    F16,
    Q4_0,
    Q4_1,
    Q8_0,
    Bf16,
    /// Any other type: kept by number and name so the error can say which.
    Other(u32),
}

impl GgmlType {
    fn from_u32(v: u32) -> Self {
        match v {
            0 => GgmlType::F32,
            1 => GgmlType::F16,
            2 => GgmlType::Q4_0,
            3 => GgmlType::Q4_1,
            8 => GgmlType::Q8_0,
            30 => GgmlType::Bf16,
            other => GgmlType::Other(other),
        }
    }

    /// ggml's name of the type.
    pub fn name(self) -> String {
        const OTHERS: [(u32, &str); 20] = [
            (6, "Q5_0"),
            (7, "Q5_1"),
            (9, "Q8_1"),
            (10, "Q2_K"),
            (11, "Q3_K"),
            (12, "Q4_K"),
            (13, "Q5_K"),
            (14, "Q6_K"),
            (15, "Q8_K"),
            (16, "IQ2_XXS"),
            (17, "IQ2_XS"),
            (18, "IQ3_XXS"),
            (19, "IQ1_S"),
            (20, "IQ4_NL"),
            (21, "IQ3_S"),
            (22, "IQ2_S"),
            (23, "IQ4_XS"),
            (24, "I8"),
            (26, "I32"),
            (29, "IQ1_M"),
        ];
        match self {
            GgmlType::F32 => "F32".into(),
            GgmlType::F16 => "F16".into(),
            GgmlType::Q4_0 => "Q4_0".into(),
            GgmlType::Q4_1 => "Q4_1".into(),
            GgmlType::Q8_0 => "Q8_0".into(),
            GgmlType::Bf16 => "BF16".into(),
            GgmlType::Other(n) => {
                OTHERS.iter().find(|(k, _)| *k == n).map_or(format!("type {n}"), |(_, s)| s.to_string())
            }
        }
    }

    /// `(elements per block, bytes per block)`, for the types regrpo reads.
    fn block(self) -> Option<(usize, usize)> {
        match self {
            GgmlType::F32 => Some((1, 4)),
            GgmlType::F16 | GgmlType::Bf16 => Some((1, 2)),
            GgmlType::Q4_0 => Some((32, 18)),
            GgmlType::Q4_1 => Some((32, 20)),
            GgmlType::Q8_0 => Some((32, 34)),
            GgmlType::Other(_) => None,
        }
    }
}

/// One tensor's entry in the file.
#[derive(Debug, Clone)]
pub struct TensorInfo {
    pub name: String,
    /// ggml order: `dims[0]` varies fastest (the PyTorch shape is this reversed).
    pub dims: Vec<u64>,
    pub kind: GgmlType,
    /// From the start of the data section.
    pub offset: u64,
}

impl TensorInfo {
    /// Elements in the tensor (`None` when a corrupt shape overflows).
    pub fn elements(&self) -> Option<u64> {
        self.dims.iter().try_fold(1u64, |n, d| n.checked_mul(*d))
    }

    /// The row-major (PyTorch) shape.
    pub fn shape(&self) -> Vec<usize> {
        self.dims.iter().rev().map(|d| *d as usize).collect()
    }
}

/// A parsed GGUF file, its bytes kept for dequantizing tensors on demand.
pub struct Gguf {
    pub path: PathBuf,
    pub version: u32,
    pub metadata: BTreeMap<String, Meta>,
    pub tensors: Vec<TensorInfo>,
    bytes: Vec<u8>,
    data_start: usize,
}

/// A bounds-checked little-endian reader whose errors say what it was reading.
struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
    path: &'a Path,
}

impl<'a> Cursor<'a> {
    fn err(&self, what: &str) -> Error {
        Error::BadModel {
            path: self.path.to_path_buf(),
            reason: format!("truncated or corrupt GGUF: {what} at byte {} (file has {})", self.at, self.bytes.len()),
        }
    }

    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8]> {
        let end = self.at.checked_add(n).filter(|e| *e <= self.bytes.len()).ok_or_else(|| self.err(what))?;
        let out = &self.bytes[self.at..end];
        self.at = end;
        Ok(out)
    }

    fn u32(&mut self, what: &str) -> Result<u32> {
        Ok(u32::from_le_bytes(self.take(4, what)?.try_into().expect("4 bytes")))
    }

    fn u64(&mut self, what: &str) -> Result<u64> {
        Ok(u64::from_le_bytes(self.take(8, what)?.try_into().expect("8 bytes")))
    }

    fn string(&mut self, what: &str) -> Result<String> {
        let n = self.u64(what)?;
        let n = usize::try_from(n).map_err(|_| self.err(what))?;
        let raw = self.take(n, what)?;
        String::from_utf8(raw.to_vec()).map_err(|_| self.err(&format!("{what} (not UTF-8)")))
    }

    fn value(&mut self, kind: u32, what: &str) -> Result<Meta> {
        Ok(match kind {
            0 => Meta::UInt(u64::from(self.take(1, what)?[0])),
            1 => Meta::Int(i64::from(self.take(1, what)?[0] as i8)),
            2 => Meta::UInt(u64::from(u16::from_le_bytes(self.take(2, what)?.try_into().expect("2 bytes")))),
            3 => Meta::Int(i64::from(i16::from_le_bytes(self.take(2, what)?.try_into().expect("2 bytes")))),
            4 => Meta::UInt(u64::from(self.u32(what)?)),
            5 => Meta::Int(i64::from(self.u32(what)? as i32)),
            6 => Meta::Float(f64::from(f32::from_bits(self.u32(what)?))),
            7 => Meta::Bool(self.take(1, what)?[0] != 0),
            8 => Meta::Str(self.string(what)?),
            9 => {
                let inner = self.u32(what)?;
                let n = self.u64(what)?;
                // Every element takes at least one byte: a count beyond the file is corrupt.
                if n > (self.bytes.len() - self.at) as u64 {
                    return Err(self.err(&format!("{what}: an array of {n} elements")));
                }
                let mut out = Vec::with_capacity(n as usize);
                for _ in 0..n {
                    out.push(self.value(inner, what)?);
                }
                Meta::Array(out)
            }
            10 => Meta::UInt(self.u64(what)?),
            11 => Meta::Int(self.u64(what)? as i64),
            12 => Meta::Float(f64::from_bits(self.u64(what)?)),
            other => return Err(self.err(&format!("{what}: unknown value type {other}"))),
        })
    }
}

impl Gguf {
    /// Reads and parses a file (header, metadata, tensor infos; the data stays as bytes).
    pub fn open(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).at(path)?;
        Self::parse(path, bytes)
    }

    fn parse(path: &Path, bytes: Vec<u8>) -> Result<Self> {
        let mut c = Cursor { bytes: &bytes, at: 0, path };
        if c.take(4, "the magic")? != MAGIC {
            return Err(Error::BadModel { path: path.to_path_buf(), reason: "not a GGUF file (no GGUF magic)".into() });
        }
        let version = c.u32("the version")?;
        if !(2..=3).contains(&version) {
            return Err(Error::BadModel {
                path: path.to_path_buf(),
                reason: format!("GGUF version {version} is not supported (expected 2 or 3)"),
            });
        }
        let n_tensors = c.u64("the tensor count")?;
        let n_meta = c.u64("the metadata count")?;
        let mut metadata = BTreeMap::new();
        for i in 0..n_meta {
            let key = c.string(&format!("metadata key {i}"))?;
            let kind = c.u32(&format!("the type of metadata `{key}`"))?;
            let value = c.value(kind, &format!("metadata `{key}`"))?;
            metadata.insert(key, value);
        }
        let mut tensors = Vec::new();
        for i in 0..n_tensors {
            let name = c.string(&format!("the name of tensor {i}"))?;
            let n_dims = c.u32(&format!("the rank of tensor {name}"))?;
            if n_dims > 4 {
                return Err(c.err(&format!("tensor {name} has rank {n_dims} (at most 4)")));
            }
            let dims =
                (0..n_dims).map(|_| c.u64(&format!("the shape of tensor {name}"))).collect::<Result<Vec<_>>>()?;
            let kind = GgmlType::from_u32(c.u32(&format!("the type of tensor {name}"))?);
            let offset = c.u64(&format!("the offset of tensor {name}"))?;
            tensors.push(TensorInfo { name, dims, kind, offset });
        }
        let align = metadata.get("general.alignment").and_then(Meta::as_u64).unwrap_or(32).max(1) as usize;
        let data_start = c.at.div_ceil(align) * align;
        Ok(Gguf { path: path.to_path_buf(), version, metadata, tensors, bytes, data_start })
    }

    pub fn meta(&self, key: &str) -> Option<&Meta> {
        self.metadata.get(key)
    }

    fn bad(&self, reason: String) -> Error {
        Error::BadModel { path: self.path.clone(), reason }
    }

    /// A tensor's values as f32, row-major in its PyTorch shape.
    pub fn dequantize(&self, t: &TensorInfo) -> Result<Vec<f32>> {
        let (per_block, block_bytes) = t.kind.block().ok_or_else(|| {
            self.bad(format!(
                "tensor {} has type {}, which regrpo cannot dequantize (supported: F32, F16, BF16, Q8_0, Q4_0, Q4_1)",
                t.name,
                t.kind.name()
            ))
        })?;
        let n = t
            .elements()
            .and_then(|n| usize::try_from(n).ok())
            .ok_or_else(|| self.bad(format!("tensor {} has an impossible shape {:?}", t.name, t.dims)))?;
        if !n.is_multiple_of(per_block) {
            return Err(self.bad(format!(
                "tensor {} has {n} elements, not a whole number of {}-element {} blocks",
                t.name,
                per_block,
                t.kind.name()
            )));
        }
        let len = (n / per_block).checked_mul(block_bytes);
        let start = usize::try_from(t.offset).ok().and_then(|o| o.checked_add(self.data_start));
        let range = start.zip(len).and_then(|(s, len)| s.checked_add(len).map(|e| s..e));
        let raw = range.clone().and_then(|r| self.bytes.get(r)).ok_or_else(|| {
            let needs =
                range.map_or_else(|| format!("offset {}", t.offset), |r| format!("bytes {}..{}", r.start, r.end));
            self.bad(format!(
                "tensor {} ({}, {n} elements) needs {needs}, the file has {}: truncated",
                t.name,
                t.kind.name(),
                self.bytes.len()
            ))
        })?;
        Ok(dequantize(t.kind, raw))
    }
}

fn half(b: &[u8]) -> f32 {
    f16_to_f32(u16::from_le_bytes([b[0], b[1]]))
}

/// Dequantizes whole blocks of a type [`GgmlType::block`] knows (ggml's reference formulas:
/// `Q8_0` x = d·q; `Q4_0` x = d·(q − 8); `Q4_1` x = d·q + m; in 4-bit blocks the low nibbles
/// are elements 0..16 and the high nibbles 16..32).
fn dequantize(kind: GgmlType, raw: &[u8]) -> Vec<f32> {
    let Some((_, block_bytes)) = kind.block() else { unreachable!("checked by the caller") };
    match kind {
        GgmlType::F32 => raw.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect(),
        GgmlType::F16 => raw.chunks_exact(2).map(half).collect(),
        GgmlType::Bf16 => raw.chunks_exact(2).map(|c| bf16_to_f32(u16::from_le_bytes([c[0], c[1]]))).collect(),
        GgmlType::Q8_0 => raw
            .chunks_exact(block_bytes)
            .flat_map(|b| {
                let d = half(&b[..2]);
                b[2..].iter().map(move |q| d * f32::from(*q as i8))
            })
            .collect(),
        GgmlType::Q4_0 | GgmlType::Q4_1 => {
            let mut out = Vec::with_capacity(raw.len() / block_bytes * 32);
            for b in raw.chunks_exact(block_bytes) {
                let d = half(&b[..2]);
                // Q4_0: d, then 16 bytes of nibbles; Q4_1: d, m, then the nibbles.
                let (m, offset, qs) =
                    if kind == GgmlType::Q4_0 { (0.0, 8.0, &b[2..]) } else { (half(&b[2..4]), 0.0, &b[4..]) };
                out.extend(qs.iter().map(|q| d * (f32::from(q & 0x0f) - offset) + m));
                out.extend(qs.iter().map(|q| d * (f32::from(q >> 4) - offset) + m));
            }
            out
        }
        GgmlType::Other(_) => unreachable!("checked by the caller"),
    }
}

/// Reorders the rows of a `[heads·head_dim, in]` q/k weight (or a `[heads·head_dim]` bias)
/// between llama.cpp's layout and Hugging Face's: within a head, GGUF row `2b + a` is Hugging
/// Face row `a·head_dim/2 + b`. `to_hf` undoes llama.cpp's permutation; otherwise it applies it.
fn reorder_rows(data: &[f32], rows: usize, heads: usize, to_hf: bool) -> Vec<f32> {
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
fn unpermute_rows(data: &[f32], rows: usize, heads: usize) -> Vec<f32> {
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
    pub config: Qwen2Config,
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
    config.validate()?;
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
fn config_of(g: &Gguf, arch: &str) -> Result<Qwen2Config> {
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
    let mut c = Qwen2Config {
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
        ..Qwen2Config::tiny(vocab)
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

/// Writes GGUF bytes from metadata and raw tensor blocks: the other half of the reader, for
/// tests and fixtures (llama.cpp writes the files users bring).
pub mod write {
    use super::*;

    /// A tensor to write: its ggml dims (fastest first), type and raw block bytes.
    pub struct Raw {
        pub name: String,
        pub dims: Vec<u64>,
        pub kind: u32,
        pub bytes: Vec<u8>,
    }

    fn string(out: &mut Vec<u8>, s: &str) {
        out.extend((s.len() as u64).to_le_bytes());
        out.extend(s.as_bytes());
    }

    fn value(out: &mut Vec<u8>, v: &Meta) {
        match v {
            Meta::UInt(x) => {
                out.extend(10u32.to_le_bytes());
                out.extend(x.to_le_bytes());
            }
            Meta::Int(x) => {
                out.extend(11u32.to_le_bytes());
                out.extend(x.to_le_bytes());
            }
            Meta::Float(x) => {
                out.extend(6u32.to_le_bytes());
                out.extend((*x as f32).to_le_bytes());
            }
            Meta::Bool(b) => {
                out.extend(7u32.to_le_bytes());
                out.push(u8::from(*b));
            }
            Meta::Str(s) => {
                out.extend(8u32.to_le_bytes());
                string(out, s);
            }
            Meta::Array(items) => {
                out.extend(9u32.to_le_bytes());
                let inner = match items.first() {
                    Some(Meta::Str(_)) => 8u32,
                    Some(Meta::Int(_)) => 11,
                    _ => 10,
                };
                out.extend(inner.to_le_bytes());
                out.extend((items.len() as u64).to_le_bytes());
                for i in items {
                    match i {
                        Meta::Str(s) => string(out, s),
                        Meta::Int(x) => out.extend(x.to_le_bytes()),
                        other => out.extend(other.as_u64().unwrap_or(0).to_le_bytes()),
                    }
                }
            }
        }
    }

    /// The bytes of a version-3 file with 32-byte alignment.
    pub fn gguf(metadata: &[(&str, Meta)], tensors: &[Raw]) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend(MAGIC);
        out.extend(3u32.to_le_bytes());
        out.extend((tensors.len() as u64).to_le_bytes());
        out.extend((metadata.len() as u64).to_le_bytes());
        for (k, v) in metadata {
            string(&mut out, k);
            value(&mut out, v);
        }
        let mut offset = 0u64;
        for t in tensors {
            string(&mut out, &t.name);
            out.extend((t.dims.len() as u32).to_le_bytes());
            for d in &t.dims {
                out.extend(d.to_le_bytes());
            }
            out.extend(t.kind.to_le_bytes());
            out.extend(offset.to_le_bytes());
            offset += (t.bytes.len() as u64).div_ceil(32) * 32;
        }
        out.resize(out.len().div_ceil(32) * 32, 0);
        for t in tensors {
            out.extend(&t.bytes);
            out.resize(out.len().div_ceil(32) * 32, 0);
        }
        out
    }

    /// f32 values as a ggml F32 tensor.
    pub fn f32_bytes(values: &[f32]) -> Vec<u8> {
        values.iter().flat_map(|v| v.to_le_bytes()).collect()
    }

    /// llama.cpp's q/k permutation (the inverse of `unpermute_rows`).
    pub fn permute_rows(data: &[f32], rows: usize, heads: usize) -> Vec<f32> {
        super::reorder_rows(data, rows, heads, false)
    }
}

#[cfg(test)]
mod tests {
    use super::write::*;
    use super::*;

    fn f16(x: f32) -> [u8; 2] {
        // Exact for the small dyadic values used here.
        let bits = x.to_bits();
        let sign = ((bits >> 16) & 0x8000) as u16;
        if x == 0.0 {
            return sign.to_le_bytes();
        }
        let exp = ((bits >> 23) & 0xff) as i32 - 127 + 15;
        let frac = ((bits >> 13) & 0x3ff) as u16;
        (sign | ((exp as u16) << 10) | frac).to_le_bytes()
    }

    #[test]
    fn blocks_dequantize_by_ggmls_formulas() {
        // Q8_0: d = 0.5, q = -16..16.
        let mut q8 = f16(0.5).to_vec();
        q8.extend((-16i8..16).map(|q| q as u8));
        let want: Vec<f32> = (-16..16).map(|q| 0.5 * q as f32).collect();
        assert_eq!(dequantize(GgmlType::Q8_0, &q8), want);

        // Q4_0: d = 2, byte i holds element i (low nibble) and element i + 16 (high nibble).
        let mut q4 = f16(2.0).to_vec();
        q4.extend((0u8..16).map(|i| i | ((15 - i) << 4)));
        let got = dequantize(GgmlType::Q4_0, &q4);
        assert_eq!(got[0], 2.0 * (0.0 - 8.0));
        assert_eq!(got[15], 2.0 * (15.0 - 8.0));
        assert_eq!(got[16], 2.0 * (15.0 - 8.0));
        assert_eq!(got[31], 2.0 * (0.0 - 8.0));

        // Q4_1: d = 0.25, m = -1.
        let mut q41 = f16(0.25).to_vec();
        q41.extend(f16(-1.0));
        q41.extend((0u8..16).map(|i| i | (i << 4)));
        let got = dequantize(GgmlType::Q4_1, &q41);
        assert_eq!(got[3], 0.25 * 3.0 - 1.0);
        assert_eq!(got[19], 0.25 * 3.0 - 1.0);

        assert_eq!(dequantize(GgmlType::Bf16, &0x3fc0u16.to_le_bytes()), vec![1.5]);
        assert_eq!(dequantize(GgmlType::F16, &f16(-0.75)), vec![-0.75]);
    }

    #[test]
    fn unpermute_inverts_llama_cpps_permutation() {
        let rows = 12;
        let data: Vec<f32> = (0..rows * 3).map(|i| i as f32).collect();
        let permuted = permute_rows(&data, rows, 3);
        assert_ne!(permuted, data);
        assert_eq!(unpermute_rows(&permuted, rows, 3), data);
        // GGUF row 1 of a head (2b + a = 1: a = 1, b = 0) is Hugging Face row head_dim / 2 = 2.
        assert_eq!(permuted[3..6], data[2 * 3..2 * 3 + 3]);
    }

    fn small(kind: u32, bytes: Vec<u8>, dims: Vec<u64>) -> Vec<u8> {
        gguf(
            &[("general.architecture", Meta::Str("llama".into()))],
            &[Raw { name: "blk.0.attn_q.weight".into(), dims, kind, bytes }],
        )
    }

    #[test]
    fn bad_files_name_the_tensor_and_the_type() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.gguf");

        std::fs::write(&path, b"GGML\0\0\0\0").unwrap();
        let err = Gguf::open(&path).err().unwrap().to_string();
        assert!(err.contains("not a GGUF file"), "{err}");

        // A Q6_K tensor: parsed, but refused by name when dequantized.
        std::fs::write(&path, small(14, vec![0; 210], vec![256])).unwrap();
        let g = Gguf::open(&path).unwrap();
        let err = g.dequantize(&g.tensors[0]).unwrap_err().to_string();
        assert!(err.contains("blk.0.attn_q.weight") && err.contains("Q6_K"), "{err}");

        // Cut inside the data: the tensor is named with the bytes it needed.
        let mut bytes = small(0, f32_bytes(&[1.0; 64]), vec![64]);
        bytes.truncate(bytes.len() - 40);
        std::fs::write(&path, &bytes).unwrap();
        let g = Gguf::open(&path).unwrap();
        let err = g.dequantize(&g.tensors[0]).unwrap_err().to_string();
        assert!(err.contains("blk.0.attn_q.weight") && err.contains("truncated"), "{err}");

        // Cut inside the header.
        std::fs::write(&path, &bytes[..40]).unwrap();
        let err = Gguf::open(&path).err().unwrap().to_string();
        assert!(err.contains("truncated or corrupt GGUF"), "{err}");
    }
}
