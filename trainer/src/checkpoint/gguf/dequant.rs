//! ggml's block formats to f32 (F32, F16, BF16, Q8_0, Q4_0, Q4_1).

use super::GgmlType;
use crate::checkpoint::hf::{bf16_to_f32, f16_to_f32};

pub(super) fn half(b: &[u8]) -> f32 {
    f16_to_f32(u16::from_le_bytes([b[0], b[1]]))
}

/// Dequantizes whole blocks of a type [`GgmlType::block`] knows (ggml's reference formulas:
/// `Q8_0` x = d·q; `Q4_0` x = d·(q − 8); `Q4_1` x = d·q + m; in 4-bit blocks the low nibbles
/// are elements 0..16 and the high nibbles 16..32).
pub(super) fn dequantize(kind: GgmlType, raw: &[u8]) -> Vec<f32> {
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
