//! Block formulas, the q/k permutation, and bad files.

use super::convert::unpermute_rows;
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
