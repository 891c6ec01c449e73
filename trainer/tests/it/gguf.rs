//! GGUF import: a GGUF written from a random Llama-shaped model imports back to the same
//! logits, and the real SmolLM2 checkpoint (fetched by `scripts/fetch_smollm2.sh`) imports,
//! loads and completes a sentence.

use std::path::PathBuf;

use burn::backend::NdArray;
use burn::tensor::{ElementConversion, Int, Tensor, TensorData};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use regrpo_trainer::checkpoint::gguf::write::{Raw, f32_bytes, gguf, permute_rows};
use regrpo_trainer::checkpoint::gguf::{self, Meta};
use regrpo_trainer::checkpoint::hf::{self, StoredDtype};
use regrpo_trainer::text::tokenizer::ChatTokenizer;
use regrpo_trainer::{CausalLm, CausalLmConfig, KvCache};
use safetensors::SafeTensors;

type B = NdArray<f32>;

/// GPT-2's byte → printable character map (the alphabet of byte-level BPE).
fn byte_chars() -> Vec<char> {
    let printable = |b: u32| (33..=126).contains(&b) || (161..=172).contains(&b) || (174..=255).contains(&b);
    let mut extra = 0;
    (0u32..256)
        .map(|b| {
            if printable(b) {
                char::from_u32(b).unwrap()
            } else {
                extra += 1;
                char::from_u32(255 + extra).unwrap()
            }
        })
        .collect()
}

/// GGUF's name of a Hugging Face tensor of the Llama layout.
fn gguf_name(hf: &str) -> String {
    match hf {
        "model.embed_tokens.weight" => return "token_embd.weight".into(),
        "model.norm.weight" => return "output_norm.weight".into(),
        "lm_head.weight" => return "output.weight".into(),
        _ => {}
    }
    let rest = hf.strip_prefix("model.layers.").unwrap();
    let (layer, part) = rest.split_once('.').unwrap();
    let (module, suffix) = part.rsplit_once('.').unwrap();
    let g = match module {
        "input_layernorm" => "attn_norm",
        "post_attention_layernorm" => "ffn_norm",
        "self_attn.q_proj" => "attn_q",
        "self_attn.k_proj" => "attn_k",
        "self_attn.v_proj" => "attn_v",
        "self_attn.o_proj" => "attn_output",
        "mlp.gate_proj" => "ffn_gate",
        "mlp.up_proj" => "ffn_up",
        "mlp.down_proj" => "ffn_down",
        other => panic!("{other}"),
    };
    format!("blk.{layer}.{g}.{suffix}")
}

fn logits(model: &CausalLm<B>, ids: &[i64]) -> Vec<f32> {
    let t = Tensor::<B, 2, Int>::from_data(TensorData::new(ids.to_vec(), [1, ids.len()]), &Default::default());
    model.forward(t).into_data().to_vec().unwrap()
}

/// A tiny random Llama written as GGUF (f32 tensors, a byte-level BPE vocabulary with one
/// merge) into `written`: the file, its config and model, its tokens and tensor count.
fn tiny_llama_gguf(written: &std::path::Path) -> (PathBuf, CausalLmConfig, CausalLm<B>, Vec<String>, usize) {
    let device = Default::default();
    let chars = byte_chars();
    // Vocabulary: three control tokens, the 256 byte characters, one merge ("h" + "e").
    let mut tokens: Vec<String> = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"].map(String::from).to_vec();
    tokens.extend(chars.iter().map(char::to_string));
    tokens.push("he".into());
    let types: Vec<Meta> = (0..tokens.len()).map(|i| Meta::UInt(if i < 3 { 3 } else { 1 })).collect();

    let config = CausalLmConfig {
        model_type: "llama".into(),
        attention_bias: Some(false),
        tie_word_embeddings: false,
        ..CausalLmConfig::tiny(tokens.len())
    };
    let model = CausalLm::<B>::init(&config, 3, &device);
    hf::save(&config, &model, written).unwrap();
    let bytes = std::fs::read(written.join("model.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let hd = config.head_dim();
    let mut tensors: Vec<Raw> = st
        .tensors()
        .into_iter()
        .map(|(name, view)| {
            let mut values: Vec<f32> =
                view.data().chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect();
            let shape = view.shape().to_vec();
            if name.ends_with("q_proj.weight") || name.ends_with("k_proj.weight") {
                values = permute_rows(&values, shape[0], shape[0] / hd);
            }
            let dims = shape.iter().rev().map(|d| *d as u64).collect();
            Raw { name: gguf_name(&name), dims, kind: 0, bytes: f32_bytes(&values) }
        })
        .collect();
    tensors.sort_by(|a, b| a.name.cmp(&b.name));
    assert!(tensors.iter().all(|t| !t.name.contains("bias")), "a Llama without attention bias");

    let u = |v: usize| Meta::UInt(v as u64);
    let metadata = [
        ("general.architecture", Meta::Str("llama".into())),
        ("general.name", Meta::Str("tiny test llama".into())),
        ("llama.block_count", u(config.num_hidden_layers)),
        ("llama.context_length", u(256)),
        ("llama.embedding_length", u(config.hidden_size)),
        ("llama.feed_forward_length", u(config.intermediate_size)),
        ("llama.attention.head_count", u(config.num_attention_heads)),
        ("llama.attention.head_count_kv", u(config.num_key_value_heads)),
        ("llama.rope.freq_base", Meta::Float(config.rope_theta)),
        ("llama.attention.layer_norm_rms_epsilon", Meta::Float(config.rms_norm_eps)),
        ("llama.rope.dimension_count", u(hd)),
        ("tokenizer.ggml.model", Meta::Str("gpt2".into())),
        ("tokenizer.ggml.pre", Meta::Str("smollm".into())),
        ("tokenizer.ggml.tokens", Meta::Array(tokens.iter().map(|t| Meta::Str(t.clone())).collect())),
        ("tokenizer.ggml.token_type", Meta::Array(types)),
        ("tokenizer.ggml.merges", Meta::Array(vec![Meta::Str("h e".into())])),
        ("tokenizer.ggml.bos_token_id", u(1)),
        ("tokenizer.ggml.eos_token_id", u(2)),
        ("tokenizer.chat_template", Meta::Str("{% for m in messages %}{{ m['content'] }}{% endfor %}".into())),
    ];
    let file = written.join("tiny.gguf");
    std::fs::write(&file, gguf(&metadata, &tensors)).unwrap();

    (file, config, model, tokens, tensors.len())
}

#[test]
fn a_llama_gguf_imports_to_the_model_it_was_written_from() {
    let device = Default::default();
    let written = tempfile::tempdir().unwrap();
    let (file, config, model, tokens, n_tensors) = tiny_llama_gguf(written.path());
    let out = tempfile::tempdir().unwrap();
    let imported = gguf::import(&file, out.path(), StoredDtype::F32).unwrap();
    assert_eq!(imported.config.model_type, "llama");
    assert!(!imported.config.qkv_bias() && !imported.config.tie_word_embeddings);
    assert_eq!(imported.types.get("F32"), Some(&n_tensors));

    let (loaded_config, loaded) = hf::load::<B>(out.path(), &device).unwrap();
    assert_eq!(loaded_config.num_key_value_heads, config.num_key_value_heads);
    let ids = [5i64, 40, 77, 104, 101, 12, 200, 259];
    let (want, got) = (logits(&model, &ids), logits(&loaded, &ids));
    let max = want.iter().zip(&got).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
    assert!(max <= 1e-6, "max |written - imported| = {max}");

    // The tokenizer applies the merge and keeps the chat markers whole.
    let tok = ChatTokenizer::load(&out.path().join("tokenizer.json")).unwrap();
    let he = tok.encode("he").unwrap();
    assert_eq!(he, vec![tokens.len() as u32 - 1]);
    assert_eq!(tok.decode(&tok.encode("<|im_start|>hello 42").unwrap()).unwrap(), "<|im_start|>hello 42");
    let cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.path().join("tokenizer_config.json")).unwrap()).unwrap();
    assert_eq!(cfg["eos_token"], "<|im_end|>");
    assert!(cfg["chat_template"].as_str().unwrap().contains("messages"));

    // bf16 storage halves the file and stays within bf16 rounding of the f32 logits.
    let half = tempfile::tempdir().unwrap();
    gguf::import(&file, half.path(), StoredDtype::Bf16).unwrap();
    let size = |d: &std::path::Path| std::fs::metadata(d.join("model.safetensors")).unwrap().len();
    assert!(size(half.path()) * 10 < size(out.path()) * 6);
    let (_, bf) = hf::load::<B>(half.path(), &device).unwrap();
    let max = want.iter().zip(&logits(&bf, &ids)).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
    assert!(max > 0.0 && max < 1e-2, "bf16 max difference {max}");
}

/// The fetched SmolLM2 GGUF: `REGRPO_SMOLLM2_GGUF`, or where `scripts/fetch_smollm2.sh` puts it.
pub fn smollm2() -> Option<PathBuf> {
    let path = std::env::var_os("REGRPO_SMOLLM2_GGUF").map(PathBuf::from).unwrap_or_else(|| {
        let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_default();
        home.join(".cache/regrpo/models/SmolLM2-135M-Instruct.Q4_1.gguf")
    });
    if path.exists() {
        Some(path)
    } else {
        eprintln!("skipped: {} is absent (run scripts/fetch_smollm2.sh)", path.display());
        None
    }
}

#[test]
fn smollm2_imports_and_completes_a_sentence() {
    let Some(file) = smollm2() else { return };
    let device = Default::default();
    let out = tempfile::tempdir().unwrap();
    let imported = gguf::import(&file, out.path(), StoredDtype::F32).unwrap();
    let c = &imported.config;
    assert_eq!((c.model_type.as_str(), c.num_hidden_layers, c.hidden_size, c.vocab_size), ("llama", 30, 576, 49152));
    assert!(c.tie_word_embeddings && !c.qkv_bias());
    assert_eq!(imported.types.get("Q4_1"), Some(&210));

    let (_, model) = hf::load::<B>(out.path(), &device).unwrap();
    let tok = ChatTokenizer::load(&out.path().join("tokenizer.json")).unwrap();
    // SmolLM2 splits digits one by one: "2024" is four tokens.
    assert_eq!(tok.encode("2024").unwrap().len(), 4);
    let mut ids: Vec<i64> = tok.encode("The capital of France is").unwrap().into_iter().map(i64::from).collect();
    let mut cache = KvCache::new(model.layers.len());
    let mut input = ids.clone();
    for _ in 0..3 {
        let t = Tensor::<B, 2, Int>::from_data(TensorData::new(input.clone(), [1, input.len()]), &device);
        let logits = model.forward_cached(t, &mut cache);
        let last = logits.narrow(1, input.len() - 1, 1).flatten::<1>(0, 2);
        let next = last.argmax(0).into_scalar().elem::<i64>();
        ids.push(next);
        input = vec![next];
    }
    let text = tok.decode(&ids.iter().map(|i| *i as u32).collect::<Vec<_>>()).unwrap();
    assert!(text.contains("Paris"), "greedy completion: {text:?}");
}

/// How a file is damaged: cut short, bits flipped, or a run of bytes overwritten.
#[derive(Debug, Clone)]
enum Damage {
    Cut(prop::sample::Index),
    Flip(Vec<(prop::sample::Index, u8)>),
    Overwrite(prop::sample::Index, Vec<u8>),
}

fn damage() -> impl Strategy<Value = Damage> {
    prop_oneof![
        any::<prop::sample::Index>().prop_map(Damage::Cut),
        prop::collection::vec((any::<prop::sample::Index>(), 0u8..8), 1..6).prop_map(Damage::Flip),
        (any::<prop::sample::Index>(), prop::collection::vec(prop_oneof![Just(0xffu8), Just(0), any::<u8>()], 1..9))
            .prop_map(|(at, b)| Damage::Overwrite(at, b)),
    ]
}

fn apply(good: &[u8], d: &Damage) -> Vec<u8> {
    let mut bytes = good.to_vec();
    match d {
        Damage::Cut(at) => bytes.truncate(at.index(good.len())),
        Damage::Flip(bits) => bits.iter().for_each(|(at, bit)| bytes[at.index(good.len())] ^= 1 << bit),
        Damage::Overwrite(at, run) => {
            let at = at.index(good.len());
            let end = (at + run.len()).min(good.len());
            bytes[at..end].copy_from_slice(&run[..end - at]);
        }
    }
    bytes
}

/// GGUF, safetensors, config and tokenizer files cut short, bit-flipped and overwritten:
/// each load either works or fails with an error naming the damaged file; never a panic, and
/// never an allocation sized by a corrupt count (the process would abort).
#[test]
fn damaged_model_files_fail_with_errors_naming_them() {
    let device = Default::default();
    let written = tempfile::tempdir().unwrap();
    let (file, ..) = tiny_llama_gguf(written.path());
    let good_gguf = std::fs::read(&file).unwrap();
    let folder = tempfile::tempdir().unwrap();
    gguf::import(&file, folder.path(), StoredDtype::F32).unwrap();
    let names = ["config.json", "model.safetensors", "tokenizer.json"];
    let good: Vec<Vec<u8>> = names.iter().map(|n| std::fs::read(folder.path().join(n)).unwrap()).collect();

    let mut runner = TestRunner::new(Config { cases: 384, failure_persistence: None, ..Config::default() });
    let (worked, failed) = (std::cell::Cell::new(0u32), std::cell::Cell::new(0u32));
    runner
        .run(&(damage(), 0..=names.len()), |(d, which)| {
            let dir = tempfile::tempdir().unwrap();
            let (damaged, result) = if which == names.len() {
                let path = dir.path().join("damaged.gguf");
                std::fs::write(&path, apply(&good_gguf, &d)).unwrap();
                let out = dir.path().join("imported");
                let imported = gguf::import(&path, &out, StoredDtype::F32);
                // What imports must also load (or fail cleanly).
                let loaded = imported.and_then(|_| hf::load::<B>(&out, &device).map(|_| ()));
                (path, loaded.map_err(|e| e.to_string()))
            } else {
                for (n, bytes) in names.iter().zip(&good) {
                    std::fs::write(dir.path().join(n), bytes).unwrap();
                }
                let path = dir.path().join(names[which]);
                std::fs::write(&path, apply(&good[which], &d)).unwrap();
                let loaded = match names[which] {
                    "tokenizer.json" => ChatTokenizer::load(&path).map(|_| ()),
                    _ => hf::load::<B>(dir.path(), &device).map(|_| ()),
                };
                (path, loaded.map_err(|e| e.to_string()))
            };
            match result {
                Ok(()) => worked.set(worked.get() + 1),
                Err(e) => {
                    failed.set(failed.get() + 1);
                    let name = damaged.file_name().unwrap().to_str().unwrap();
                    // A damaged GGUF may fail in what it imports into (a folder of its own).
                    if !(e.contains(name) || e.contains("imported")) {
                        return Err(TestCaseError::fail(format!("{name}: the error does not name it: {e}")));
                    }
                }
            }
            Ok(())
        })
        .unwrap();
    let (worked, failed) = (worked.get(), failed.get());
    eprintln!("damaged model files: {worked} still loaded, {failed} refused with an error naming the file");
    assert!(failed > 0);
}

/// Damage that generated runs found or that is too unlikely to be generated, kept as found.
#[test]
fn model_file_regressions() {
    let device = Default::default();
    let written = tempfile::tempdir().unwrap();
    let (file, ..) = tiny_llama_gguf(written.path());
    let folder = tempfile::tempdir().unwrap();
    gguf::import(&file, folder.path(), StoredDtype::F32).unwrap();

    // A config that asks for a trillion-token vocabulary: refused before anything is allocated.
    let config_path = folder.path().join("config.json");
    let mut config: serde_json::Value = serde_json::from_slice(&std::fs::read(&config_path).unwrap()).unwrap();
    config["vocab_size"] = serde_json::json!(1_000_000_000_000u64);
    std::fs::write(&config_path, config.to_string()).unwrap();
    let e = hf::load::<B>(folder.path(), &device).err().unwrap().to_string();
    assert!(e.contains("config.json") && e.contains("parameters"), "{e}");
    config["vocab_size"] = serde_json::json!(u64::MAX);
    config["hidden_size"] = serde_json::json!(1u64 << 62);
    std::fs::write(&config_path, config.to_string()).unwrap();
    let e = hf::load::<B>(folder.path(), &device).err().unwrap().to_string();
    assert!(e.contains("config.json") && e.contains("overflows"), "{e}");

    // A tokenizer.json cut inside its `decoder` section: the tokenizers crate panics there
    // (`expect("Helper")`); loading it is an error naming the file.
    let tok = std::fs::read_to_string(folder.path().join("tokenizer.json")).unwrap();
    let cut = tok.find("\"decoder\"").unwrap() + 20;
    let path = written.path().join("cut-tokenizer.json");
    std::fs::write(&path, &tok[..cut]).unwrap();
    let e = ChatTokenizer::load(&path).err().unwrap().to_string();
    assert!(e.contains("cut-tokenizer.json"), "{e}");

    // Metadata typed as arrays of arrays 100,000 deep used to recurse until the stack ran out.
    let mut bytes = b"GGUF".to_vec();
    bytes.extend(3u32.to_le_bytes());
    bytes.extend(0u64.to_le_bytes());
    bytes.extend(1u64.to_le_bytes());
    bytes.extend(1u64.to_le_bytes());
    bytes.push(b'k');
    bytes.extend(9u32.to_le_bytes());
    for _ in 0..100_000 {
        bytes.extend(9u32.to_le_bytes());
        bytes.extend(1u64.to_le_bytes());
    }
    let path = written.path().join("nested.gguf");
    std::fs::write(&path, bytes).unwrap();
    let e = gguf::import(&path, &folder.path().join("n"), StoredDtype::F32).err().unwrap().to_string();
    assert!(e.contains("nested.gguf") && e.contains("nested deeper"), "{e}");
}
