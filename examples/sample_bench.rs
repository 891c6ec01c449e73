//! Group sampling throughput of the trainer (`bench/sample_cpu.sh` runs this beside
//! transformers' `generate`, `bench/sample_torch.py`, on the same model folder and settings).
//!
//! One prompt of `--prompt` deterministic token ids, `--group` completions of exactly `--new`
//! tokens each (no stop token, so both sides generate the same number), temperature 1, top-p
//! 0.95, through `sampling::sample` itself — the sampler ReGRPO and eval use: the prompt is
//! prefilled once and its keys and values shared by the group's rows (never copied), then one
//! batched forward of the rows per token, their own keys kept in a block cache.
//! Prints one JSON line: completions/s and generated tokens/s (median of `--runs`).
//!
//!     cargo run --release --example sample_bench -- --model DIR [--group 8 --prompt 256 \
//!         --new 64 --runs 3 --backend flex|ndarray]

use std::path::PathBuf;
use std::time::Instant;

use burn::backend::NdArray;
use burn::tensor::backend::Backend;
use rand::SeedableRng;
use regrpo_trainer::checkpoint::hf;
use regrpo_trainer::decode::sampling::{Request, SampleConfig, sample};
use serde_json::{Value, json};

struct Args {
    model: Option<PathBuf>,
    group: usize,
    prompt: usize,
    new: usize,
    runs: usize,
    backend: String,
}

fn parse() -> anyhow::Result<Args> {
    let mut a = Args { model: None, group: 8, prompt: 256, new: 64, runs: 3, backend: "flex".into() };
    let argv: Vec<String> = std::env::args().skip(1).collect();
    for pair in argv.chunks(2) {
        let [k, v] = pair else { anyhow::bail!("flags come in pairs: --name value") };
        let n = || v.parse::<usize>().map_err(|_| anyhow::anyhow!("{k}: `{v}` is not a number"));
        match k.as_str() {
            "--model" => a.model = Some(v.into()),
            "--group" => a.group = n()?,
            "--prompt" => a.prompt = n()?,
            "--new" => a.new = n()?,
            "--runs" => a.runs = n()?,
            "--backend" => a.backend = v.clone(),
            _ => anyhow::bail!("unknown flag {k} {v}"),
        }
    }
    Ok(a)
}

/// The prompt both sides use: `(i · 37 + 11) mod vocab`.
fn prompt(len: usize, vocab: usize) -> Vec<u32> {
    (0..len).map(|i| ((i * 37 + 11) % vocab) as u32).collect()
}

fn bench<B: Backend>(a: &Args, device: &B::Device) -> anyhow::Result<Value> {
    let dir = a.model.as_ref().ok_or_else(|| anyhow::anyhow!("--model DIR (a Hugging Face folder) is required"))?;
    let (config, model) = hf::load::<B>(dir, device)?;
    let ids = prompt(a.prompt, config.vocab_size);
    let cfg = SampleConfig { temperature: 1.0, top_p: 0.95, max_new_tokens: a.new };
    // A stop id outside the vocabulary: every completion runs to `--new` tokens.
    let stop = u32::MAX;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
    let mut times = Vec::new();
    for _ in 0..a.runs {
        let t = Instant::now();
        let out = sample(&model, Request { prompt: &ids, constraint: None }, a.group, &cfg, stop, 0, &mut rng);
        times.push(t.elapsed().as_secs_f64());
        anyhow::ensure!(out.iter().all(|c| c.tokens.len() == a.new), "a completion stopped early");
    }
    times.sort_by(f64::total_cmp);
    let s = times[times.len() / 2];

    // Where a step's time goes: the prefill, and one batched decoding forward of the group over
    // the shared prompt (with the output projection).
    use burn::tensor::{Int, Tensor, TensorData};
    let t = Instant::now();
    let p: Vec<i64> = ids.iter().map(|i| i64::from(*i)).collect();
    let (last, prefix) = model.prefix(Tensor::<B, 2, Int>::from_data(TensorData::new(p, [1, a.prompt]), device), &[0]);
    let _ = last.into_data();
    let prefill_s = t.elapsed().as_secs_f64();
    let mut cache = regrpo_trainer::model::RowCache::new(&model);
    let mut steps = Vec::new();
    for _ in 0..5 {
        let next = Tensor::<B, 2, Int>::from_data(TensorData::new(vec![5i64; a.group], [a.group, 1]), device);
        let t = Instant::now();
        let _ = model.head(model.rows(next, &prefix, a.group, Some(&mut cache))).into_data();
        steps.push(t.elapsed().as_secs_f64());
    }
    steps.sort_by(f64::total_cmp);
    Ok(json!({
        "system": format!("burn 0.21 {}", a.backend),
        "model": dir, "params": config.num_params(),
        "group": a.group, "prompt": a.prompt, "new": a.new, "runs": a.runs,
        "seconds": s,
        "completions_per_s": a.group as f64 / s,
        "tokens_per_s": (a.group * a.new) as f64 / s,
        "prefill_s": prefill_s,
        "decode_forward_s": steps[steps.len() / 2],
    }))
}

fn main() -> anyhow::Result<()> {
    let a = parse()?;
    let out = match a.backend.as_str() {
        "ndarray" => bench::<NdArray<f32>>(&a, &Default::default())?,
        "flex" => bench::<burn::backend::Flex<f32>>(&a, &Default::default())?,
        other => anyhow::bail!("backend `{other}` is not built in (ndarray, flex)"),
    };
    println!("{out}");
    Ok(())
}
