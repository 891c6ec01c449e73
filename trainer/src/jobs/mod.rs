//! Whole jobs the CLI runs: train a tokenizer on a snapshot, run SFT into a run folder, export.
//!
//! Every entry point takes a [`DeviceKind`] and picks its backend through
//! [`on_device!`](crate::on_device) (Flex on CPU, CUDA with the `cuda` feature), so Burn's
//! generic code is compiled, and optimised, inside this crate.
//!
//! A run folder holds:
//!
//! ```text
//! RUN_DIR/run.json metrics.csv loss.png tokenizer.json
//!         model/{config.json, model.safetensors, tokenizer.json, tokenizer_config.json}
//!         adapter/{adapter_config.json, adapter_model.safetensors}      (with LoRA: PEFT)
//!         checkpoints/step-NNNNNN/{model.mpk, optim.mpk, state.json}
//! ```

pub mod runlog;

use std::path::{Path, PathBuf};

use burn::backend::Autodiff;
use burn::module::AutodiffModule;
use burn::tensor::backend::{AutodiffBackend, Backend};
use regrpo_datasets::Repository;
use regrpo_schemas::write_folder;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::checkpoint::hf;
use crate::data::{DataConfig, encode_all, snapshot_rows};
use crate::decode::turn::TurnDecoder;
use crate::error::{Error, IoContext, Result};
use crate::jobs::runlog::RunLog;
use crate::model::CausalLm;
use crate::model::config::CausalLmConfig;
use crate::model::lora::LoraConfig;
use crate::sft::{self, SftConfig, StepLog};
use crate::text::tokenizer::ChatTokenizer;
use crate::text::window::{ChatWindow, Truncations, WindowConfig};

pub use crate::model::backend::DeviceKind;

/// Where the model starts from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ModelSource {
    /// A tiny random Qwen2 (hidden 64, 2 layers) sized to the tokenizer.
    Tiny,
    /// A random Qwen2 of this width, depth and (optionally) number of heads (`tiny:128x4`,
    /// `tiny:64x2x2`), sized to the tokenizer.
    Shaped { hidden: usize, layers: usize, heads: Option<usize> },
    /// A Hugging Face model folder (config.json, model.safetensors, tokenizer.json).
    Dir(PathBuf),
}

impl ModelSource {
    /// How the adapter config names the base model: the folder, or the tiny shape.
    pub fn name(&self) -> String {
        match self {
            ModelSource::Tiny => "tiny".into(),
            ModelSource::Shaped { hidden, layers, heads } => match heads {
                Some(h) => format!("tiny:{hidden}x{layers}x{h}"),
                None => format!("tiny:{hidden}x{layers}"),
            },
            ModelSource::Dir(d) => d.display().to_string(),
        }
    }

    /// `tiny`, `tiny:HIDDENxLAYERS[xHEADS]`, or a model folder.
    pub fn parse(s: &str) -> Self {
        if s == "tiny" {
            return ModelSource::Tiny;
        }
        let dims: Option<Vec<usize>> = s
            .strip_prefix("tiny:")
            .and_then(|d| d.split('x').map(str::parse).collect::<std::result::Result<_, _>>().ok());
        match dims.as_deref() {
            Some([hidden, layers]) => ModelSource::Shaped { hidden: *hidden, layers: *layers, heads: None },
            Some([hidden, layers, heads]) => {
                ModelSource::Shaped { hidden: *hidden, layers: *layers, heads: Some(*heads) }
            }
            _ => ModelSource::Dir(PathBuf::from(s)),
        }
    }
}

/// An SFT job.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SftJob {
    pub snapshot: Option<String>,
    pub model: ModelSource,
    /// A tokenizer.json to use (default: the model's, or one trained on the snapshot).
    pub tokenizer: Option<PathBuf>,
    /// Vocabulary of a tokenizer trained for a tiny model.
    pub vocab: usize,
    pub out: PathBuf,
    pub sft: SftConfig,
    pub data: DataConfig,
    /// Budgets of the context window every sample is cut to.
    #[serde(default)]
    pub window: WindowConfig,
    pub resume: bool,
    pub device: DeviceKind,
    /// Train LoRA adapters (base frozen) instead of every weight.
    #[serde(default)]
    pub lora: Option<LoraConfig>,
}

/// What an SFT job did.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SftOutcome {
    pub run_id: String,
    pub steps: u64,
    pub first_loss: Option<f64>,
    pub final_loss: Option<f64>,
    pub eval_loss: Option<f64>,
    pub train_samples: usize,
    pub eval_samples: usize,
    /// What the context window cut from the training sequences.
    pub truncations: Truncations,
    pub seconds: f64,
    pub tokens_per_s: f64,
    pub model_dir: PathBuf,
    /// The PEFT adapter folder, when LoRA was on.
    pub adapter_dir: Option<PathBuf>,
    /// Parameters the optimizer updated (all of them, or the adapters').
    pub trainable_params: usize,
    pub files: Vec<PathBuf>,
    pub losses: Vec<f64>,
}

/// Trains a byte-level BPE on a snapshot's text and writes `tokenizer.json`.
pub async fn train_tokenizer(
    repo: &Repository,
    snapshot: Option<&str>,
    vocab: usize,
    out: &Path,
) -> Result<ChatTokenizer> {
    let mut texts = crate::data::stream::texts(repo, snapshot).await?.peekable();
    if texts.peek().is_none() {
        return Err(Error::NoData("the snapshot holds no text to train a tokenizer on".into()));
    }
    // The BPE trainer is CPU work fed by the reader thread: off the async workers.
    let tk = tokio::task::block_in_place(|| ChatTokenizer::train(texts, vocab))?;
    if let Some(parent) = out.parent() {
        std::fs::create_dir_all(parent).at(parent)?;
    }
    tk.save(out)?;
    Ok(tk)
}

async fn tokenizer_for(repo: &Repository, job: &SftJob) -> Result<ChatTokenizer> {
    if let Some(p) = &job.tokenizer {
        return ChatTokenizer::load(p);
    }
    if let ModelSource::Dir(d) = &job.model
        && d.join("tokenizer.json").exists()
    {
        return ChatTokenizer::load(&d.join("tokenizer.json"));
    }
    let existing = job.out.join("tokenizer.json");
    if job.resume && existing.exists() {
        return ChatTokenizer::load(&existing);
    }
    train_tokenizer(repo, job.snapshot.as_deref(), job.vocab, &existing).await
}

/// Builds the starting model on a backend.
pub fn init_model<B: Backend>(
    source: &ModelSource,
    vocab: usize,
    seed: u64,
    device: &B::Device,
) -> Result<(CausalLmConfig, CausalLm<B>)> {
    match source {
        ModelSource::Tiny | ModelSource::Shaped { .. } => {
            let c = match source {
                ModelSource::Shaped { hidden, layers, heads } => {
                    let mut c = CausalLmConfig::shaped(vocab, *hidden, *layers);
                    if let Some(h) = heads {
                        c.num_attention_heads = *h;
                        c.num_key_value_heads = (*h / 2).max(1);
                    }
                    c
                }
                _ => CausalLmConfig::tiny(vocab),
            };
            c.validate()?;
            let m = CausalLm::init(&c, seed, device);
            Ok((c, m))
        }
        ModelSource::Dir(d) => {
            let (c, m) = hf::load::<B>(d, device)?;
            if c.vocab_size < vocab {
                return Err(Error::BadModel {
                    path: d.clone(),
                    reason: format!("vocab_size {} is smaller than the tokenizer's {vocab}", c.vocab_size),
                });
            }
            Ok((c, m))
        }
    }
}

/// Runs SFT on the job's device.
pub async fn run_sft(repo: &Repository, job: &SftJob, on_step: impl FnMut(&StepLog) + Send) -> Result<SftOutcome> {
    crate::on_device!(job.device, B => run_sft_on::<Autodiff<B>>(repo, job, Default::default(), on_step).await)
}

async fn run_sft_on<B: AutodiffBackend>(
    repo: &Repository,
    job: &SftJob,
    device: B::Device,
    on_step: impl FnMut(&StepLog) + Send,
) -> Result<SftOutcome> {
    let started = std::time::Instant::now();
    let tk = tokenizer_for(repo, job).await?;
    let (config, model) = init_model::<B>(&job.model, tk.vocab_size(), job.sft.seed, &device)?;
    let (model, trainable) = with_lora(model, &config, job.lora.as_ref(), job.sft.seed)?;
    let window = ChatWindow::new(tk.clone(), job.window)?;
    let quotas = job.data.quotas(job.sft.batch_size)?;
    // The rows stream from the snapshot while the model trains; this pass counts them and
    // collects the validation samples the held-out loss reads.
    let validation_cap = job.sft.eval_batches * job.sft.batch_size;
    let data = crate::data::stream::prepare(repo, job.snapshot.as_deref(), &job.data, quotas, validation_cap).await?;
    if data.kept_rows[0] == 0 && data.kept_rows[1] == 0 {
        return Err(Error::NoData("the snapshot has no trajectories with actions and no RoT rows for this mix".into()));
    }
    let (eval, _) = encode_all(&data.validation, &window, job.data.rot_target)?;
    std::fs::create_dir_all(&job.out).at(&job.out)?;
    tk.save(&job.out.join("tokenizer.json"))?;
    let mut log = RunLog::new(
        "sft",
        &job.out,
        job.snapshot.clone(),
        data.versions.clone(),
        json!({"job": job, "model": {"hidden_size": config.hidden_size, "layers": config.num_hidden_layers, "vocab": config.vocab_size, "params": config.num_params(), "trainable_params": trainable}}),
    )?;
    let (train_n, eval_n) = (data.kept_rows[0] + data.kept_rows[1], eval.len());
    let ([clean, rot], cuts) = data.sources(&window, job.sft.seed);
    let train = sft::TrainSet { clean, rot, quotas };
    let out = job.out.clone();
    let (sft_cfg, resume, pad) = (job.sft.clone(), job.resume, tk.pad);
    let mut logs = Vec::new();
    let mut on_step = on_step;
    let (model, step_logs) = tokio::task::block_in_place(|| {
        sft::train(model, train, &eval, pad, &sft_cfg, sft::RunFolder { dir: &out, resume }, |l| {
            on_step(l);
            logs.push(l.clone());
        })
    })?;
    for l in &step_logs {
        log.log(l.step as i64, "loss", l.loss, Some("train"));
        log.log(l.step as i64, "lr", l.lr, Some("train"));
        log.log(l.step as i64, "grad_norm", l.grad_norm, Some("train"));
        log.log(l.step as i64, "tokens_per_s", l.tokens_per_s, Some("train"));
        if let Some(e) = l.eval_loss {
            log.log(l.step as i64, "eval_loss", e, Some("eval"));
        }
    }
    let mut truncations = Truncations::default();
    for c in &cuts {
        truncations.add(&c.lock().unwrap_or_else(|p| p.into_inner()));
    }
    let (model_dir, adapter_dir) =
        save_policy(&config, &model.valid(), &tk, job.lora.as_ref(), &job.model.name(), &job.out)?;
    let seconds = started.elapsed().as_secs_f64();
    let losses: Vec<f64> = step_logs.iter().map(|l| l.loss).collect();
    let tps = if step_logs.is_empty() {
        0.0
    } else {
        step_logs.iter().map(|l| l.tokens_per_s).sum::<f64>() / step_logs.len() as f64
    };
    let eval_loss = step_logs.iter().rev().find_map(|l| l.eval_loss);
    let summary = json!({"steps": step_logs.last().map(|l| l.step), "final_loss": losses.last(), "eval_loss": eval_loss, "train_samples": train_n, "eval_samples": eval_n, "seconds": seconds, "tokens_per_s": tps, "truncations": truncations});
    let files = log.finish(repo, "finished", summary, &[("loss.png", "SFT loss", &["loss", "eval_loss"])]).await?;
    Ok(SftOutcome {
        run_id: log.run_id.clone(),
        steps: step_logs.last().map_or(0, |l| l.step),
        first_loss: losses.first().copied(),
        final_loss: losses.last().copied(),
        eval_loss,
        train_samples: train_n,
        eval_samples: eval_n,
        truncations,
        seconds,
        tokens_per_s: tps,
        model_dir,
        adapter_dir,
        trainable_params: trainable,
        files,
        losses,
    })
}

/// Attaches LoRA adapters when `lora` says so; returns the model and how many parameters
/// training will update.
fn with_lora<B: Backend>(
    model: CausalLm<B>,
    config: &CausalLmConfig,
    lora: Option<&LoraConfig>,
    seed: u64,
) -> Result<(CausalLm<B>, usize)> {
    match lora {
        Some(l) => {
            let model = crate::model::lora::attach(model, l, seed)?;
            let n = crate::model::lora::adapter_params(&model);
            Ok((model, n))
        }
        None => Ok((model, config.num_params())),
    }
}

/// Writes a trained policy into `out/model/` (full weights, adapters merged, with the
/// tokenizer) and, with LoRA, its adapters into `out/adapter/` (PEFT). Returns both folders.
fn save_policy<B: Backend>(
    config: &CausalLmConfig,
    model: &CausalLm<B>,
    tk: &ChatTokenizer,
    lora: Option<&LoraConfig>,
    base: &str,
    out: &Path,
) -> Result<(PathBuf, Option<PathBuf>)> {
    // Each folder appears whole or not at all: a run killed while exporting leaves no half model.
    let model_dir = out.join("model");
    write_folder(&model_dir, |tmp| {
        hf::save(config, model, tmp)?;
        tk.save(&tmp.join("tokenizer.json"))
    })?;
    let adapter_dir = match lora {
        Some(l) => {
            let dir = out.join("adapter");
            write_folder(&dir, |tmp| crate::checkpoint::peft::save_adapter(model, l, base, tmp).map(drop))?;
            Some(dir)
        }
        None => None,
    };
    Ok((model_dir, adapter_dir))
}

/// Copies a run's exported model (config, weights, tokenizer) to `out`.
pub fn export_model(run: &Path, out: &Path) -> Result<Vec<PathBuf>> {
    let src = if run.join("model").join("model.safetensors").exists() { run.join("model") } else { run.to_path_buf() };
    if !src.join("model.safetensors").exists() {
        return Err(Error::BadModel {
            path: run.to_path_buf(),
            reason: "no model/model.safetensors: is this a finished run folder?".into(),
        });
    }
    std::fs::create_dir_all(out).at(out)?;
    let mut written = Vec::new();
    for f in ["config.json", "generation_config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"] {
        let from = src.join(f);
        if from.exists() {
            let to = out.join(f);
            std::fs::copy(&from, &to).at(&from)?;
            written.push(to);
        }
    }
    Ok(written)
}

/// Merges a PEFT LoRA adapter folder into a base model folder and writes the full model (with
/// the base's tokenizer files) to `out`. Returns the adapter's config.
pub fn merge_adapter(base: &Path, adapter: &Path, out: &Path) -> Result<LoraConfig> {
    let base = model_dir(base);
    crate::on_device!(DeviceKind::Cpu, B => {
        let (config, model) = hf::load::<B>(&base, &Default::default())?;
        let (lora, model) = crate::checkpoint::peft::load_adapter(model, adapter)?;
        hf::save(&config, &model, out)?;
        Ok::<_, Error>(lora)
    })
    .and_then(|lora| {
        for f in ["tokenizer.json", "tokenizer_config.json", "generation_config.json"] {
            let from = base.join(f);
            if from.exists() {
                std::fs::copy(&from, out.join(f)).at(&from)?;
            }
        }
        Ok(lora)
    })
}

/// Logits `[batch, seq, vocab]` (flattened) of a model folder on token ids `[batch, seq]`.
pub fn model_logits(
    dir: &Path,
    ids: Vec<i64>,
    shape: [usize; 2],
    device: DeviceKind,
) -> Result<(Vec<f32>, Vec<usize>)> {
    use burn::tensor::{Int, Tensor, TensorData};
    crate::on_device!(device, B => {
        let device = Default::default();
        let (_, model) = hf::load::<B>(dir, &device)?;
        let logits = model.forward(Tensor::<B, 2, Int>::from_data(TensorData::new(ids, shape), &device));
        let dims = logits.dims().to_vec();
        let values = logits.into_data().convert::<f32>().to_vec::<f32>().map_err(|e| Error::Internal(format!("{e:?}")))?;
        Ok((values, dims))
    })
}

/// A model folder given either directly or as a run folder holding `model/`.
pub fn model_dir(path: &Path) -> PathBuf {
    if path.join("model").join("config.json").exists() { path.join("model") } else { path.to_path_buf() }
}

/// A ReGRPO job: start from a trained policy (also the frozen reference), train on the
/// snapshot's training split.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RegrpoJob {
    pub snapshot: Option<String>,
    /// A run folder or model folder with config.json, model.safetensors and tokenizer.json.
    pub init: PathBuf,
    pub out: PathBuf,
    pub cfg: crate::regrpo::RegrpoConfig,
    /// Only states of trajectories of these sources (default: all).
    #[serde(default)]
    pub sources: Option<Vec<String>>,
    #[serde(default)]
    pub device: DeviceKind,
    /// Train LoRA adapters on the policy (frozen otherwise); the reference stays the policy
    /// it started from.
    #[serde(default)]
    pub lora: Option<LoraConfig>,
    /// Go on from the latest checkpoint in `out` (from the start when there is none).
    #[serde(default)]
    pub resume: bool,
}

/// What a ReGRPO job did.
#[derive(Debug, Clone)]
pub struct RegrpoOutcome {
    pub run_id: String,
    pub steps: Vec<crate::regrpo::RegrpoStep>,
    pub truncations: Truncations,
    pub rollouts_added: usize,
    pub policy_near_misses_added: usize,
    pub model_dir: PathBuf,
    pub adapter_dir: Option<PathBuf>,
    pub files: Vec<PathBuf>,
    pub seconds: f64,
}

/// Runs ReGRPO on the job's device.
pub async fn run_regrpo(
    repo: &Repository,
    job: &RegrpoJob,
    suite: &regrpo_engine::ToolSuite,
    on_step: impl FnMut(&crate::regrpo::RegrpoStep) + Send,
) -> Result<RegrpoOutcome> {
    crate::on_device!(job.device, D => run_regrpo_on::<Autodiff<D>>(repo, job, suite, on_step).await)
}

async fn run_regrpo_on<B: AutodiffBackend>(
    repo: &Repository,
    job: &RegrpoJob,
    suite: &regrpo_engine::ToolSuite,
    mut on_step: impl FnMut(&crate::regrpo::RegrpoStep) + Send,
) -> Result<RegrpoOutcome> {
    let started = std::time::Instant::now();
    let device = Default::default();
    let dir = model_dir(&job.init);
    let tk = ChatTokenizer::load(&dir.join("tokenizer.json"))?;
    let (config, policy) = hf::load::<B>(&dir, &device)?;
    let (policy, trainable) = with_lora(policy, &config, job.lora.as_ref(), job.cfg.seed)?;
    let decoder = TurnDecoder::new(ChatWindow::new(tk.clone(), job.cfg.window)?, job.cfg.constrained);
    let (train_ts, train_rots, versions) =
        crate::data::stream::regrpo_rows(repo, job.snapshot.as_deref(), job.sources.as_deref(), job.cfg.max_rows)
            .await?;
    // States whose gold completion does not succeed (no sandbox, no executor) teach nothing: the
    // run self-checks each state it draws, once, and draws again where one fails.
    let mut states = crate::regrpo::rollout::StatePool::new(train_rots, train_ts, &repo.sandboxes().await?);
    if job.cfg.derivable_only {
        states.keep_derivable();
    }
    if let Some(n) = job.cfg.max_states {
        states.keep_spread(n);
    }
    if states.is_empty() {
        return Err(Error::NoData("no failure or clean states in the training split".into()));
    }
    let mut log = RunLog::new(
        "regrpo",
        &job.out,
        job.snapshot.clone(),
        versions,
        json!({"job": job, "init_params": config.num_params(), "trainable_params": trainable}),
    )?;
    let resume = if job.resume { crate::regrpo::Checkpoint::latest(&job.out)? } else { None };
    if let Some((_, ck)) = &resume {
        // A resumed run keeps its id: its rollouts, metrics and row are one run's.
        log.run_id = ck.run_id.clone();
    }
    let run_id = log.run_id.clone();
    let checkpoints = crate::regrpo::Checkpoints { dir: job.out.clone(), resume };
    let result =
        crate::regrpo::train(policy, &decoder, suite, &states, &job.cfg, &run_id, checkpoints, |s| on_step(s)).await?;
    for s in &result.steps {
        let st = s.step as i64;
        for (name, v) in [
            ("mean_reward", s.mean_reward),
            ("success_rate", s.success_rate),
            ("failure_success_rate", s.failure_success_rate),
            ("clean_success_rate", s.clean_success_rate),
            ("clean_reflection_tokens", s.clean_reflection_tokens),
            ("failure_reflection_tokens", s.failure_reflection_tokens),
            ("parse_rate", s.parse_rate),
            ("kl", s.kl),
            ("loss", s.loss),
            ("groups", s.groups as f64),
            ("skipped_groups", s.skipped_groups as f64),
            ("sample_s", s.sample_s),
            ("exec_s", s.exec_s),
            ("update_s", s.update_s),
        ] {
            log.log(st, name, v, Some("train"));
        }
    }
    let base = dir.display().to_string();
    let (model_dir, adapter_dir) =
        save_policy(&config, &result.model.valid(), &tk, job.lora.as_ref(), &base, &job.out)?;
    let (rollouts_added, near_added) =
        crate::regrpo::commit_rollouts(repo, result.rollouts, result.near_misses, &run_id).await?;
    let n = result.steps.len().max(1) as f64;
    let summary = json!({
        "steps": result.steps.len(),
        "mean_reward_first_quarter": quarter(&result.steps, true),
        "mean_reward_last_quarter": quarter(&result.steps, false),
        "skipped_groups": result.steps.iter().map(|s| s.skipped_groups).sum::<usize>(),
        "sample_s": result.steps.iter().map(|s| s.sample_s).sum::<f64>() / n,
        "exec_s": result.steps.iter().map(|s| s.exec_s).sum::<f64>() / n,
        "update_s": result.steps.iter().map(|s| s.update_s).sum::<f64>() / n,
        "rollouts": rollouts_added,
        "truncations": result.truncations,
        "self_check": result.self_check,
    });
    let files = log
        .finish(
            repo,
            "finished",
            summary,
            &[
                ("reward.png", "ReGRPO mean group reward", &["mean_reward", "success_rate"]),
                (
                    "reflection.png",
                    "Reflection tokens per completion",
                    &["clean_reflection_tokens", "failure_reflection_tokens"],
                ),
            ],
        )
        .await?;
    Ok(RegrpoOutcome {
        run_id,
        truncations: result.truncations,
        steps: result.steps,
        rollouts_added,
        policy_near_misses_added: near_added,
        model_dir,
        adapter_dir,
        files,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// Mean reward of the first (or last) quarter of steps.
pub fn quarter(steps: &[crate::regrpo::RegrpoStep], first: bool) -> f64 {
    let q = (steps.len() / 4).max(1);
    let part: Vec<f64> = if first {
        steps.iter().take(q).map(|s| s.mean_reward).collect()
    } else {
        steps.iter().rev().take(q).map(|s| s.mean_reward).collect()
    };
    part.iter().sum::<f64>() / part.len().max(1) as f64
}

/// An evaluation: a policy (`model`: a run or model folder) on a snapshot, its run folder, and
/// its settings (on `cfg.device`).
#[derive(Debug, Clone, Copy)]
pub struct EvalJob<'a> {
    pub snapshot: Option<&'a str>,
    pub model: &'a Path,
    /// The run folder (`report.json` and the run log).
    pub out: &'a Path,
    pub cfg: &'a crate::eval::EvalConfig,
    /// What progress lines and the run row call the policy.
    pub label: &'a str,
}

/// Evaluates a model on the held-out split and logs a run (`kind = eval`).
pub async fn run_eval(
    repo: &Repository,
    job: &EvalJob<'_>,
    suite: &regrpo_engine::ToolSuite,
    on_state: impl FnMut(),
) -> Result<crate::eval::EvalReport> {
    let rows = snapshot_rows(repo, job.snapshot).await?;
    let set = crate::eval::held_out(&rows, &repo.sandboxes().await?, job.cfg);
    eval_on(repo, job, rows.versions, &set, suite, on_state).await
}

/// Evaluates a model on a given set of states and tasks and logs a run (`kind = eval`);
/// `versions` are the table versions the set was read at.
pub async fn eval_on(
    repo: &Repository,
    job: &EvalJob<'_>,
    versions: std::collections::BTreeMap<String, i64>,
    set: &crate::eval::EvalSet,
    suite: &regrpo_engine::ToolSuite,
    on_state: impl FnMut(),
) -> Result<crate::eval::EvalReport> {
    let &EvalJob { snapshot, model, out, cfg, label } = job;
    let dir = model_dir(model);
    let tk = ChatTokenizer::load(&dir.join("tokenizer.json"))?;
    let decoder = TurnDecoder::new(ChatWindow::new(tk, cfg.window)?, cfg.constrained);
    let sandboxes = repo.sandboxes().await?;
    let report = crate::on_device!(cfg.device, B => {
        let (_, policy) = hf::load::<B>(&dir, &Default::default())?;
        crate::eval::evaluate(&policy, &decoder, suite, set, &sandboxes, cfg, on_state).await
    })?;
    let mut log = RunLog::new(
        "eval",
        out,
        snapshot.map(str::to_string),
        versions,
        json!({"model": dir, "label": label, "eval": cfg}),
    )?;
    for (name, v) in report.rows() {
        log.log(0, name, v, Some("test"));
    }
    std::fs::create_dir_all(out).at(out)?;
    let path = out.join("report.json");
    std::fs::write(&path, serde_json::to_string_pretty(&report).unwrap_or_default()).at(&path)?;
    let mut summary = serde_json::to_value(&report).unwrap_or_default();
    if let Some(o) = summary.as_object_mut() {
        // Per-state outcomes are in report.json; the run row keeps the figures.
        o.remove("outcomes");
    }
    log.finish(repo, "finished", summary, &[]).await?;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_sources_parse() {
        assert_eq!(ModelSource::parse("tiny"), ModelSource::Tiny);
        assert_eq!(ModelSource::parse("tiny:96x3"), ModelSource::Shaped { hidden: 96, layers: 3, heads: None });
        assert_eq!(ModelSource::parse("tiny:64x2x2"), ModelSource::Shaped { hidden: 64, layers: 2, heads: Some(2) });
        assert_eq!(ModelSource::parse("runs/a/model"), ModelSource::Dir(PathBuf::from("runs/a/model")));
        assert_eq!(ModelSource::parse("tiny:axb"), ModelSource::Dir(PathBuf::from("tiny:axb")));
    }
}
