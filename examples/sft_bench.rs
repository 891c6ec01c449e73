//! SFT throughput of the trainer (`bench/sft_cpu.sh` runs this in release beside the PyTorch
//! twin, `bench/sft_torch.py`, and prints the ratio; `scripts/gpu_check.sh` runs it on CUDA).
//!
//! A randomly initialised Qwen2 of the given shape is trained through `sft::train` itself — the
//! same loop `regrpo train sft` runs: background batcher, forward, masked loss, backward, global
//! norm clipping, AdamW — on random token ids with every position a target, so both sides do the
//! same arithmetic. It prints one JSON line: steps/s (median step), tokens/s, and to say what
//! bounds it, the forward-only time of the batch and the f32 matmul throughput of the backend on
//! the MLP's shape.
//!
//!     cargo run --release --example sft_bench -- [--layers 4 --hidden 256 --seq 256 --batch 8 \
//!         --vocab 8192 --steps 10 --warmup 2] [--heads H --kv-heads K --intermediate I]
//!         [--preset qwen2.5-0.5b|smollm2-135m] [--backend ndarray|flex|cuda|cuda-bf16] [--peak-tflops T]
//!         [--lora RANK]
//!     cargo run --release --example sft_bench -- --backend cuda --parity trainer/tests/fixtures/tiny-qwen2
//!
//! `--parity DIR` instead loads the HF fixture on the chosen backend and prints the largest
//! difference from the logits transformers computed (`expected.safetensors`). With
//! `--peak-tflops` the line also carries the model FLOPs utilisation (6·params·tokens plus the
//! attention matmuls, per second, over the peak).

use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::backend::{Autodiff, NdArray};
use burn::module::AutodiffModule;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Int, Tensor, TensorData};
use regrpo_trainer::CausalLmConfig;
use regrpo_trainer::checkpoint::hf;
use regrpo_trainer::model::CausalLm;
use regrpo_trainer::sft::{self, SftConfig};
use regrpo_trainer::text::window::Encoded;
use serde_json::{Value, json};

struct Args {
    layers: usize,
    hidden: usize,
    heads: Option<usize>,
    kv_heads: Option<usize>,
    intermediate: Option<usize>,
    seq: usize,
    batch: usize,
    vocab: usize,
    steps: u64,
    warmup: u64,
    backend: String,
    peak_tflops: Option<f64>,
    parity: Option<PathBuf>,
    /// Llama (no q/k/v bias) instead of Qwen2.
    llama: bool,
    /// LoRA rank (PEFT's default targets q_proj, v_proj; α = 2·rank); full fine-tuning without.
    lora: Option<usize>,
}

fn parse() -> anyhow::Result<Args> {
    let mut a = Args {
        layers: 4,
        hidden: 256,
        heads: None,
        kv_heads: None,
        intermediate: None,
        seq: 256,
        batch: 8,
        vocab: 8192,
        steps: 10,
        warmup: 2,
        backend: "ndarray".into(),
        peak_tflops: None,
        parity: None,
        llama: false,
        lora: None,
    };
    let argv: Vec<String> = std::env::args().skip(1).collect();
    for pair in argv.chunks(2) {
        let [k, v] = pair else { anyhow::bail!("flags come in pairs: --name value") };
        let n = || v.parse::<usize>().map_err(|_| anyhow::anyhow!("{k}: `{v}` is not a number"));
        match k.as_str() {
            "--layers" => a.layers = n()?,
            "--hidden" => a.hidden = n()?,
            "--heads" => a.heads = Some(n()?),
            "--kv-heads" => a.kv_heads = Some(n()?),
            "--intermediate" => a.intermediate = Some(n()?),
            "--seq" => a.seq = n()?,
            "--batch" => a.batch = n()?,
            "--vocab" => a.vocab = n()?,
            "--steps" => a.steps = n()? as u64,
            "--warmup" => a.warmup = n()? as u64,
            "--backend" => a.backend = v.clone(),
            "--peak-tflops" => a.peak_tflops = Some(v.parse()?),
            "--parity" => a.parity = Some(v.into()),
            "--lora" => a.lora = Some(n()?),
            // Qwen2.5-0.5B's shape (its config.json): 24 layers, hidden 896, 14 heads, 2 KV heads.
            "--preset" if v == "qwen2.5-0.5b" => {
                (a.layers, a.hidden, a.heads, a.kv_heads, a.intermediate, a.vocab) =
                    (24, 896, Some(14), Some(2), Some(4864), 151_936)
            }
            // SmolLM2-135M's shape (its config.json): a Llama of 30 layers, hidden 576, 9 heads, 3 KV heads.
            "--preset" if v == "smollm2-135m" => {
                (a.layers, a.hidden, a.heads, a.kv_heads, a.intermediate, a.vocab, a.llama) =
                    (30, 576, Some(9), Some(3), Some(1536), 49_152, true)
            }
            _ => anyhow::bail!("unknown flag {k} {v}"),
        }
    }
    Ok(a)
}

/// The bench's model: Qwen2 proportions unless told (head_dim 64, 2 query heads per KV head,
/// MLP ≈ 2.75× hidden).
fn config(a: &Args) -> CausalLmConfig {
    let mut c = CausalLmConfig::tiny(a.vocab);
    c.hidden_size = a.hidden;
    c.intermediate_size = a.intermediate.unwrap_or((a.hidden * 11 / 4).div_ceil(32) * 32);
    c.num_hidden_layers = a.layers;
    c.num_attention_heads = a.heads.unwrap_or((a.hidden / 64).max(1));
    c.num_key_value_heads = a.kv_heads.unwrap_or((c.num_attention_heads / 2).max(1));
    c.max_position_embeddings = a.seq.max(2048);
    if a.llama {
        c.model_type = "llama".into();
        c.attention_bias = Some(false);
    }
    c
}

/// Deterministic pseudo-random token ids (splitmix64), every position a target.
fn samples(a: &Args, n: usize) -> Vec<Encoded> {
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = || {
        x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = x;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    };
    (0..n)
        .map(|_| {
            let ids: Vec<u32> = (0..=a.seq).map(|_| (next() % a.vocab as u64) as u32).collect();
            Encoded { mask: vec![true; ids.len()], ids }
        })
        .collect()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Training FLOPs of one token: 6 per parameter (forward 2, backward 4) plus the attention
/// score and value matmuls (causal, so half of the full `seq × seq`), forward and backward.
fn flops_per_token(c: &CausalLmConfig, seq: usize) -> f64 {
    6.0 * c.num_params() as f64 + 6.0 * (c.num_hidden_layers * c.hidden_size * seq) as f64
}

/// Times SFT steps, a forward pass and the backend's matmul on `B`.
fn bench<B: AutodiffBackend>(a: &Args, device: &B::Device) -> anyhow::Result<Value> {
    let c = config(a);
    let mut model = CausalLm::<B>::init(&c, 0, device);
    if let Some(rank) = a.lora {
        model = regrpo_trainer::model::lora::attach(model, &regrpo_trainer::model::lora::LoraConfig::new(rank), 0)?;
    }
    let cfg = SftConfig {
        steps: a.warmup + a.steps,
        batch_size: a.batch,
        eval_every: 0,
        checkpoint_every: 0,
        warmup_steps: 1,
        ..Default::default()
    };
    let run = tempfile::tempdir()?;
    let mut times = Vec::new();
    let mut last = Instant::now();
    // `on_step` runs after the step's loss was read back, so every step is complete when timed.
    let train = sft::TrainSet::in_memory(samples(a, a.batch * 4), vec![], (a.batch, 0), cfg.seed)?;
    let (model, logs) =
        sft::train(model, train, &[], 0, &cfg, sft::RunFolder { dir: run.path(), resume: false }, |_| {
            let now = Instant::now();
            times.push(now.duration_since(last).as_secs_f64());
            last = now;
        })?;
    let step_s = median(times[a.warmup as usize..].to_vec());

    // Forward only (no autodiff graph), same batch shape.
    let inner = model.valid();
    let ids: Vec<i64> = samples(a, a.batch).into_iter().flat_map(|e| e.ids[..a.seq].to_vec()).map(i64::from).collect();
    let ids = Tensor::<B::InnerBackend, 2, Int>::from_data(TensorData::new(ids, [a.batch, a.seq]), device);
    let mut fwd = Vec::new();
    for _ in 0..3 {
        let t = Instant::now();
        let _ = inner.forward(ids.clone()).into_data();
        fwd.push(t.elapsed().as_secs_f64());
    }

    // The backend's matmul on the MLP's up-projection shape.
    let (m, k, n) = (a.batch * a.seq, c.hidden_size, c.intermediate_size);
    let x = Tensor::<B::InnerBackend, 2>::ones([m, k], device);
    let w = Tensor::<B::InnerBackend, 2>::ones([k, n], device);
    let mut mm = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        let _ = x.clone().matmul(w.clone()).into_data();
        mm.push(t.elapsed().as_secs_f64());
    }
    let gflops = 2.0 * (m * k * n) as f64 / median(mm) / 1e9;

    let tokens = (a.batch * a.seq) as f64;
    let achieved = flops_per_token(&c, a.seq) * tokens / step_s / 1e12;
    Ok(json!({
        "system": format!("burn 0.21 {}", a.backend),
        "lora_rank": a.lora,
        "params": c.num_params(),
        "layers": a.layers, "hidden": c.hidden_size, "intermediate": c.intermediate_size,
        "heads": c.num_attention_heads, "kv_heads": c.num_key_value_heads,
        "vocab": a.vocab, "seq": a.seq, "batch": a.batch,
        "steps_timed": a.steps,
        "step_s": step_s,
        "steps_per_s": 1.0 / step_s,
        "tokens_per_s": tokens / step_s,
        "achieved_tflops": achieved,
        "mfu": a.peak_tflops.map(|p| achieved / p),
        "forward_s": median(fwd),
        "matmul_gflops": gflops,
        "final_loss": logs.last().map(|l| l.loss),
    }))
}

/// Largest |ours − transformers| on the HF parity fixture, on `B`.
fn parity<B: Backend>(dir: &Path, device: &B::Device) -> anyhow::Result<Value> {
    let (_, model) = hf::load::<B>(dir, device)?;
    let bytes = std::fs::read(dir.join("expected.safetensors"))?;
    let st = safetensors::SafeTensors::deserialize(&bytes)?;
    let (ids, logits) = (st.tensor("input_ids")?, st.tensor("logits")?);
    let ids: Vec<i64> = ids.data().chunks_exact(8).map(|c| i64::from_le_bytes(c.try_into().unwrap())).collect();
    let want: Vec<f32> = logits.data().chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect();
    let shape = logits.shape();
    let ids = Tensor::<B, 2, Int>::from_data(TensorData::new(ids, [shape[0], shape[1]]), device);
    let got: Vec<f32> =
        model.forward(ids).into_data().convert::<f32>().to_vec().map_err(|e| anyhow::anyhow!("{e:?}"))?;
    anyhow::ensure!(got.len() == want.len(), "{} logits, expected {}", got.len(), want.len());
    let max = got.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
    Ok(json!({"parity": dir, "max_abs_error": max, "ok": max <= 1e-4}))
}

fn run<B: AutodiffBackend>(a: &Args, device: B::Device) -> anyhow::Result<Value> {
    match &a.parity {
        Some(dir) => parity::<B::InnerBackend>(dir, &device),
        None => bench::<B>(a, &device),
    }
}

fn main() -> anyhow::Result<()> {
    let a = parse()?;
    let out = match a.backend.as_str() {
        "ndarray" => run::<Autodiff<NdArray<f32>>>(&a, Default::default())?,
        "flex" => run::<Autodiff<burn::backend::Flex<f32>>>(&a, Default::default())?,
        #[cfg(feature = "cuda")]
        "cuda" => run::<Autodiff<burn::backend::Cuda<f32>>>(&a, Default::default())?,
        #[cfg(feature = "cuda")]
        "cuda-bf16" => run::<Autodiff<burn::backend::Cuda<burn::tensor::bf16>>>(&a, Default::default())?,
        other => {
            anyhow::bail!("backend `{other}` is not built in (ndarray, flex; cuda and cuda-bf16 with --features cuda)")
        }
    };
    println!("{out}");
    Ok(())
}
