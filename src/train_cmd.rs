//! Commands of the trainer: `train tokenizer`, `train sft`, `model export`, `model logits`.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use regrpo_datasets::Repository;
use regrpo_trainer::job::{self, SftJob, SftOutcome};

pub async fn tokenizer(dir: &Path, snapshot: Option<&str>, vocab: usize, out: &Path) -> Result<()> {
    let repo = Repository::open(dir)?;
    let tk = job::train_tokenizer(&repo, snapshot, vocab, out).await?;
    println!(
        "trained a byte-level BPE of {} tokens on {} → {}",
        tk.vocab_size(),
        snapshot.unwrap_or("the latest tables"),
        out.display()
    );
    Ok(())
}

pub fn step_bar(quiet: bool, steps: u64, prefix: &str) -> ProgressBar {
    let target = if quiet { ProgressDrawTarget::hidden() } else { ProgressDrawTarget::stderr() };
    let b = ProgressBar::with_draw_target(Some(steps), target);
    b.set_style(
        ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} · {msg} ({eta})")
            .expect("valid template")
            .progress_chars("=> "),
    );
    b.set_prefix(prefix.to_string());
    b.enable_steady_tick(Duration::from_millis(250));
    b
}

pub async fn sft(dir: &Path, job: SftJob, quiet: bool) -> Result<SftOutcome> {
    let repo = Repository::open(dir)?;
    let bar = step_bar(quiet, job.sft.steps, "sft");
    let outcome = job::run_sft(&repo, &job, |l| {
        bar.set_position(l.step);
        let eval = l.eval_loss.map(|e| format!(" eval {e:.4}")).unwrap_or_default();
        bar.set_message(format!("loss {:.4}{eval} lr {:.2e} {:.0} tok/s", l.loss, l.lr, l.tokens_per_s));
    })
    .await;
    bar.finish_and_clear();
    let o = outcome?;
    println!(
        "sft run {}: {} steps in {:.1}s ({:.0} tokens/s, {:.2}M trainable parameters), loss {:.4} → {:.4}, held-out loss {}, {} train / {} held-out samples",
        o.run_id,
        o.steps,
        o.seconds,
        o.tokens_per_s,
        o.trainable_params as f64 / 1e6,
        o.first_loss.unwrap_or(f64::NAN),
        o.final_loss.unwrap_or(f64::NAN),
        o.eval_loss.map_or("n/a".into(), |e| format!("{e:.4}")),
        o.train_samples,
        o.eval_samples
    );
    println!("model (Hugging Face files): {}", o.model_dir.display());
    if let Some(a) = &o.adapter_dir {
        println!("LoRA adapter (PEFT): {}", a.display());
    }
    for f in &o.files {
        println!("wrote {}", f.display());
    }
    Ok(o)
}

pub fn export(run: &Path, out: &Path) -> Result<()> {
    for f in job::export_model(run, out)? {
        println!("wrote {}", f.display());
    }
    Ok(())
}

/// `regrpo model import`: a GGUF file → a Hugging Face folder.
pub fn import(file: &Path, out: &Path, dtype: regrpo_trainer::hf::StoredDtype) -> Result<()> {
    let started = std::time::Instant::now();
    let imported = regrpo_trainer::gguf::import(file, out, dtype)?;
    let c = &imported.config;
    let types: Vec<String> = imported.types.iter().map(|(t, n)| format!("{n} {t}")).collect();
    println!(
        "{}: {} ({} layers, hidden {}, {} heads / {} kv, vocab {}{}), {} tensors ({}), {:.1}M parameters, {dtype:?}, in {:.1}s",
        file.display(),
        c.model_type,
        c.num_hidden_layers,
        c.hidden_size,
        c.num_attention_heads,
        c.num_key_value_heads,
        c.vocab_size,
        if c.tie_word_embeddings { ", tied embeddings" } else { "" },
        imported.tensors,
        types.join(", "),
        imported.parameters as f64 / 1e6,
        started.elapsed().as_secs_f64()
    );
    println!("wrote {}", out.display());
    Ok(())
}

/// `regrpo model merge`: a base model + a PEFT adapter → a full model folder.
pub fn merge(base: &Path, adapter: &Path, out: &Path) -> Result<()> {
    let lora = job::merge_adapter(base, adapter, out)?;
    println!(
        "merged {} (rank {}, alpha {}, {}) into {}",
        adapter.display(),
        lora.rank,
        lora.alpha,
        lora.targets.join(","),
        base.display()
    );
    println!("wrote {}", out.display());
    Ok(())
}

/// Logits of a model on the `input_ids` of a safetensors file, written as `logits` beside them.
pub fn logits(model_dir: &Path, input: &Path, out: &Path, device: regrpo_trainer::job::DeviceKind) -> Result<()> {
    let bytes = std::fs::read(input).with_context(|| format!("reading {}", input.display()))?;
    let st = safetensors::SafeTensors::deserialize(&bytes)
        .with_context(|| format!("{} is not safetensors", input.display()))?;
    let ids = st.tensor("input_ids").with_context(|| format!("{} has no input_ids", input.display()))?;
    let shape = ids.shape().to_vec();
    let id_data: Vec<i64> =
        ids.data().chunks_exact(8).map(|c| i64::from_le_bytes(c.try_into().expect("8 bytes"))).collect();
    let (values, dims) = job::model_logits(model_dir, id_data.clone(), [shape[0], shape[1]], device)?;
    let id_bytes: Vec<u8> = id_data.iter().flat_map(|v| v.to_le_bytes()).collect();
    let logit_bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    let views = vec![
        ("input_ids".to_string(), safetensors::tensor::TensorView::new(safetensors::Dtype::I64, shape, &id_bytes)?),
        ("logits".to_string(), safetensors::tensor::TensorView::new(safetensors::Dtype::F32, dims, &logit_bytes)?),
    ];
    safetensors::serialize_to_file(views, None, out)?;
    println!("wrote {}", out.display());
    Ok(())
}

pub async fn regrpo(
    dir: &Path,
    job: regrpo_trainer::job::RegrpoJob,
    quiet: bool,
) -> Result<regrpo_trainer::job::RegrpoOutcome> {
    let repo = Repository::open(dir)?;
    let suite = regrpo_engine::ToolSuite::builtin();
    let bar = step_bar(quiet, job.cfg.steps, "regrpo");
    let o = job::run_regrpo(&repo, &job, &suite, |s| {
        bar.set_position(s.step);
        bar.set_message(format!(
            "reward {:.3} success {:.2} refl(clean) {:.1} tok · skipped {}",
            s.mean_reward, s.success_rate, s.clean_reflection_tokens, s.skipped_groups
        ));
    })
    .await;
    bar.finish_and_clear();
    let o = o?;
    let first = job::quarter(&o.steps, true);
    let last = job::quarter(&o.steps, false);
    println!(
        "regrpo run {}: {} steps in {:.1}s, mean reward first quarter {first:.3} → last quarter {last:.3}; {} rollouts and {} policy near-misses committed",
        o.run_id,
        o.steps.len(),
        o.seconds,
        o.rollouts_added,
        o.policy_near_misses_added
    );
    println!("model (Hugging Face files): {}", o.model_dir.display());
    if let Some(a) = &o.adapter_dir {
        println!("LoRA adapter (PEFT): {}", a.display());
    }
    for f in &o.files {
        println!("wrote {}", f.display());
    }
    Ok(o)
}

pub async fn eval(
    dir: &Path,
    snapshot: Option<&str>,
    model: &Path,
    out: &Path,
    cfg: &regrpo_trainer::eval::EvalConfig,
) -> Result<regrpo_trainer::eval::EvalReport> {
    let repo = Repository::open(dir)?;
    let suite = regrpo_engine::ToolSuite::builtin();
    let bar = step_bar(false, (cfg.max_failure_states + cfg.max_clean_states) as u64, "eval");
    let r = job::run_eval(&repo, snapshot, model, out, cfg, &suite, &model.display().to_string(), || bar.inc(1)).await;
    bar.finish_and_clear();
    let r = r?;
    println!(
        "evaluation of {} on the {} ({} failure states, {} clean states, {} tasks):",
        model.display(),
        match cfg.split {
            regrpo_schemas::Split::Test => "held-out test split",
            regrpo_schemas::Split::Validation => "validation split (held out from training; tune here, not on test)",
            regrpo_schemas::Split::Train => "training split (not held out: a diagnostic, not a result)",
        },
        r.failure_states,
        r.clean_states,
        r.tasks
    );
    for (name, v) in r.rows() {
        println!("  {name:<30} {v:>8.3}");
    }
    for (name, rate) in [("recovery", &r.recovery), ("first-try success", &r.first_try)] {
        println!("  {name} 95% interval: [{:.3}, {:.3}] ({} of {})", rate.ci.0, rate.ci.1, rate.k, rate.n);
    }
    if r.truncations.total() > 0 {
        println!("  context-window cuts: {:?}", r.truncations);
    }
    println!(
        "written to the runs and metrics tables, {} and {}",
        out.join("run.json").display(),
        out.join("report.json").display()
    );
    Ok(r)
}
