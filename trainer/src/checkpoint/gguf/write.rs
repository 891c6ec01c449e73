//! Writes GGUF bytes from metadata and raw tensor blocks: the other half of the reader, for
//! tests and fixtures (llama.cpp writes the files users bring).

use super::convert::reorder_rows;
use super::{MAGIC, Meta};

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
    reorder_rows(data, rows, heads, false)
}
