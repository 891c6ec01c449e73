//! GGUF (llama.cpp's single-file checkpoints) → a Hugging Face model folder.
//!
//! ```text
//! FILE.gguf ─header, metadata, tensor infos─▶ Gguf ─dequantize, rename, un-permute q/k─▶
//!     config.json + model.safetensors (f32 | bf16) + tokenizer.json + tokenizer_config.json
//! ```
//!
//! The container (version 2 and 3, little-endian) is read here ([`Gguf`]): it is a short, fixed layout
//! and the Rust readers that exist come inside whole inference stacks (candle, llama.cpp
//! bindings) we would not otherwise build. Tensors of type F32, F16, BF16, Q8_0, Q4_0 and
//! Q4_1 are dequantized; any other type is an error naming the tensor and its type.
//!
//! Two conversions undo what llama.cpp's `convert_hf_to_gguf.py` did: for `llama` models the
//! rows of `attn_q` and `attn_k` were permuted from Hugging Face's rotate-half RoPE layout to
//! the interleaved one, so they are permuted back; and the BPE vocabulary (`tokenizer.ggml.*`)
//! is written as a `tokenizers` JSON with the pre-tokenizer its `tokenizer.ggml.pre` names.
//!
//! | file | holds |
//! | --- | --- |
//! | `mod.rs` | the container: header, metadata, tensor infos ([`Gguf`]) |
//! | `dequant.rs` | ggml's block formats to f32 |
//! | `convert.rs` | GGUF names, layouts, config and vocabulary → a Hugging Face folder ([`import`]) |
//! | `write.rs` | the writer, for tests and fixtures only (feature `test-support`) |

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::error::{Error, IoContext, Result};

mod convert;
mod dequant;
#[cfg(test)]
mod tests;
#[cfg(any(test, feature = "test-support"))]
pub mod write;

pub use convert::{Imported, import};
use dequant::dequantize;

pub(super) const MAGIC: &[u8; 4] = b"GGUF";
/// Arrays of arrays the reader accepts (llama.cpp writes flat arrays only).
const MAX_ARRAY_DEPTH: usize = 4;

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
    pub(super) fn from_u32(v: u32) -> Self {
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
    pub(super) fn block(self) -> Option<(usize, usize)> {
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
        self.value_at(kind, what, 0)
    }

    /// A value of `kind`; `depth` counts the arrays around it (GGUF writers nest none: a
    /// bound keeps a corrupt type chain from recursing until the stack runs out).
    fn value_at(&mut self, kind: u32, what: &str, depth: usize) -> Result<Meta> {
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
                if depth >= MAX_ARRAY_DEPTH {
                    return Err(self.err(&format!("{what}: arrays nested deeper than {MAX_ARRAY_DEPTH}")));
                }
                // Every element takes at least one byte: a count beyond the file is corrupt.
                if n > (self.bytes.len() - self.at) as u64 {
                    return Err(self.err(&format!("{what}: an array of {n} elements")));
                }
                // Grown as elements are read, not sized from the count: a `Meta` is 32 bytes,
                // so a corrupt count could otherwise ask for 32 times the file.
                let mut out = Vec::with_capacity((n as usize).min(1 << 16));
                for _ in 0..n {
                    out.push(self.value_at(inner, what, depth + 1)?);
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
