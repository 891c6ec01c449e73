//! `regrpo train {tokenizer,sft,regrpo}`: tokenizers and policies from a pinned snapshot.

use std::path::{Path, PathBuf};

use anyhow::Result;
use clap::Subcommand;
use regrpo_datasets::Repository;
use regrpo_trainer::data::{DataConfig, RotTarget};
use regrpo_trainer::decode::sampling::SampleConfig;
use regrpo_trainer::jobs::{self, ModelSource, RegrpoJob, RegrpoOutcome, SftJob, SftOutcome};
use regrpo_trainer::regrpo::objective::{AdvantageConfig, KlMode, LossConfig, RewardConfig};
use regrpo_trainer::regrpo::{GroupFilter, RegrpoConfig};
use regrpo_trainer::sft::SftConfig;

use crate::args::{DeviceArgs, LoraArgs, WindowArgs};
use crate::progress;

/// Vocabulary of a tokenizer trained for a tiny model (no config holds it: it is the job's).
const TINY_VOCAB: usize = 1024;

/// PPO ratio clipping `(ε_low, ε_high)` when there is more than one update per batch (DAPO's
/// clip-higher); [`LossConfig`]'s default has no clipping, as it makes one update.
const PPO_CLIP: (f64, f64) = (0.2, 0.28);

/// Train tokenizers and policies from a pinned snapshot.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Train a byte-level BPE tokenizer on the repository's text; writes a standard tokenizer.json.
    Tokenizer {
        dir: PathBuf,
        #[arg(long, short)]
        snapshot: Option<String>,
        #[arg(long, default_value_t = TINY_VOCAB)]
        vocab: usize,
        out: PathBuf,
    },
    /// Supervised fine-tuning on clean trajectories and RoT rows of a snapshot's training split.
    Sft(SftArgs),
    /// ReGRPO: group-relative RL over reflection + corrective actions, rollouts executed for real.
    Regrpo(RegrpoArgs),
}

pub async fn run(c: Command, quiet: bool) -> Result<()> {
    match c {
        Command::Tokenizer { dir, snapshot, vocab, out } => tokenizer(&dir, snapshot.as_deref(), vocab, &out).await,
        Command::Sft(a) => {
            let dir = a.dir.clone();
            sft(&dir, a.job(), quiet).await.map(|_| ())
        }
        Command::Regrpo(a) => {
            let dir = a.dir.clone();
            regrpo(&dir, a.job(), quiet).await.map(|_| ())
        }
    }
}

#[derive(Debug, clap::Args)]
pub struct SftArgs {
    dir: PathBuf,
    /// The snapshot to train from (recorded in the run; default: the latest tables).
    #[arg(long, short)]
    snapshot: Option<String>,
    /// `tiny` (a small random Qwen2) or a Hugging Face model folder.
    #[arg(long, default_value = "tiny")]
    model: String,
    /// Where the run goes (checkpoints, curves, the exported model).
    #[arg(long)]
    out: PathBuf,
    /// A tokenizer.json (default: the model's, or one trained on the snapshot).
    #[arg(long)]
    tokenizer: Option<PathBuf>,
    /// Vocabulary of the tokenizer trained for a tiny model.
    #[arg(long, default_value_t = TINY_VOCAB)]
    vocab: usize,
    #[arg(long, default_value_t = SftConfig::default().steps)]
    steps: u64,
    #[arg(long, default_value_t = SftConfig::default().batch_size)]
    batch_size: usize,
    #[arg(long, default_value_t = SftConfig::default().lr)]
    lr: f64,
    #[arg(long, default_value_t = SftConfig::default().grad_accum)]
    grad_accum: usize,
    #[command(flatten)]
    window: WindowArgs,
    #[arg(long, default_value_t = SftConfig::default().seed)]
    seed: u64,
    #[arg(long, default_value_t = SftConfig::default().warmup_steps)]
    warmup: u64,
    /// Share of RoT samples in each batch (0: clean trajectories only).
    #[arg(long, default_value_t = DataConfig::default().rot_fraction)]
    rot_fraction: f64,
    /// Instead of a share: this many RoT samples added to each batch of --batch-size clean ones.
    #[arg(long)]
    rot_extra: Option<usize>,
    /// Train every assistant turn of RoT rows, not only the reflection + correction.
    #[arg(long)]
    rot_all_turns: bool,
    /// Only clean trajectories of these sources.
    #[arg(long, value_delimiter = ',')]
    source: Option<Vec<String>>,
    #[arg(long, default_value_t = SftConfig::default().eval_every)]
    eval_every: u64,
    #[arg(long, default_value_t = SftConfig::default().checkpoint_every)]
    checkpoint_every: u64,
    /// Continue from the run folder's latest checkpoint.
    #[arg(long)]
    resume: bool,
    #[command(flatten)]
    lora: LoraArgs,
    #[command(flatten)]
    device: DeviceArgs,
}

impl SftArgs {
    /// The job these flags describe.
    fn job(self) -> SftJob {
        let a = self;
        SftJob {
            snapshot: a.snapshot,
            model: ModelSource::parse(&a.model),
            tokenizer: a.tokenizer,
            vocab: a.vocab,
            out: a.out,
            sft: SftConfig {
                steps: a.steps,
                batch_size: a.batch_size,
                grad_accum: a.grad_accum,
                lr: a.lr,
                warmup_steps: a.warmup,
                eval_every: a.eval_every,
                checkpoint_every: a.checkpoint_every,
                seed: a.seed,
                ..Default::default()
            },
            window: a.window.config(),
            data: DataConfig {
                rot_fraction: a.rot_fraction,
                rot_extra: a.rot_extra,
                rot_target: if a.rot_all_turns { RotTarget::AllAssistant } else { DataConfig::default().rot_target },
                sources: a.source,
            },
            resume: a.resume,
            device: a.device.device,
            lora: a.lora.config(),
        }
    }
}

#[derive(Debug, clap::Args)]
pub struct RegrpoArgs {
    dir: PathBuf,
    #[arg(long, short)]
    snapshot: Option<String>,
    /// The starting policy (also the frozen KL reference): a run folder or a model folder.
    #[arg(long)]
    model: PathBuf,
    #[arg(long)]
    out: PathBuf,
    #[arg(long, default_value_t = RegrpoConfig::default().steps)]
    steps: u64,
    /// Completions per state (G).
    #[arg(long, default_value_t = RegrpoConfig::default().group_size)]
    group_size: usize,
    /// States per step.
    #[arg(long, default_value_t = RegrpoConfig::default().states_per_step)]
    states: usize,
    /// Share of failure states (the rest are clean states).
    #[arg(long, default_value_t = RegrpoConfig::default().failure_fraction)]
    failure_fraction: f64,
    #[arg(long, default_value_t = RegrpoConfig::default().lr)]
    lr: f64,
    /// Reward weight of success.
    #[arg(long, default_value_t = RewardConfig::default().lambda_exec)]
    lambda_exec: f64,
    /// Reflection cost weight (per 100 reflection tokens).
    #[arg(long, default_value_t = RewardConfig::default().eta)]
    eta: f64,
    /// Weight of the grounded-evidence / right-ErrorType score.
    #[arg(long, default_value_t = RewardConfig::default().lambda_val)]
    lambda_val: f64,
    /// KL weight to the reference.
    #[arg(long, default_value_t = LossConfig::default().beta)]
    beta: f64,
    /// How the KL to the reference enters: k1-reward (default), exact, k3, reference-k1,
    /// reference-k3 (the last two reproduce the reference's formulas).
    #[arg(long, value_enum, default_value_t = LossConfig::default().kl)]
    kl: KlMode,
    /// Reward subtracted when a completion does not parse (only with --unconstrained).
    #[arg(long, default_value_t = RewardConfig::default().format_penalty)]
    format_penalty: f64,
    /// Shaping (off at 0): a failed completion earns this times its share of the right tool and arguments.
    #[arg(long, default_value_t = RewardConfig::default().partial_credit)]
    partial_credit: f64,
    /// States drawn per step at most when groups without signal are skipped and refilled.
    #[arg(long, default_value_t = RegrpoConfig::default().max_draws_per_step)]
    max_draws: usize,
    /// Train on at most N failure states and N clean states (spread over the split) instead of all.
    #[arg(long)]
    max_states: Option<usize>,
    /// Divide each completion's summed loss by its scored tokens (sequence-level loss only).
    #[arg(long)]
    length_normalize: bool,
    /// Sample freely instead of under the tools' grammar.
    #[arg(long)]
    unconstrained: bool,
    /// Only states of these sources (comma-separated).
    #[arg(long, value_delimiter = ',')]
    source: Option<Vec<String>>,
    #[command(flatten)]
    window: WindowArgs,
    /// Every token weighs the same in the loss (instead of every sequence).
    #[arg(long)]
    token_level: bool,
    /// Divide advantages by the group's standard deviation.
    #[arg(long)]
    normalize_advantages: bool,
    /// Clip advantages to ±this.
    #[arg(long)]
    clip_advantages: Option<f64>,
    /// Updates per batch of rollouts; more than one uses the PPO ratio with clipping.
    #[arg(long, default_value_t = RegrpoConfig::default().updates_per_batch)]
    updates: usize,
    #[arg(long, default_value_t = PPO_CLIP.0)]
    ppo_clip_low: f64,
    #[arg(long, default_value_t = PPO_CLIP.1)]
    ppo_clip_high: f64,
    #[arg(long, default_value_t = SampleConfig::default().temperature)]
    temperature: f64,
    #[arg(long, default_value_t = SampleConfig::default().top_p)]
    top_p: f64,
    #[arg(long, default_value_t = SampleConfig::default().max_new_tokens)]
    max_new_tokens: usize,
    #[arg(long, default_value_t = RegrpoConfig::default().seed)]
    seed: u64,
    /// Which groups are trained on: `success` (their executed outcomes differ; or, while η > 0,
    /// clean groups that all succeed but differ in reflection) or `reward` (their rewards differ).
    #[arg(long, value_enum, default_value_t = RegrpoConfig::default().filter)]
    filter: GroupFilter,
    /// Draw failure states among all of them, not only those whose fix is derivable from the prompt.
    #[arg(long)]
    all_failures: bool,
    /// Steps of linear learning-rate warm-up.
    #[arg(long, default_value_t = RegrpoConfig::default().warmup_steps)]
    warmup_steps: u64,
    /// Groups per forward/backward pass of the update (bounds memory; same gradient).
    #[arg(long, default_value_t = RegrpoConfig::default().update_groups)]
    update_groups: usize,
    /// Write a checkpoint every N steps and after the last (0: never).
    #[arg(long, default_value_t = RegrpoConfig::default().checkpoint_every)]
    checkpoint_every: u64,
    /// Go on from the run folder's latest checkpoint (with the same flags; --steps may grow).
    #[arg(long)]
    resume: bool,
    #[command(flatten)]
    lora: LoraArgs,
    #[command(flatten)]
    device: DeviceArgs,
}

impl RegrpoArgs {
    /// The job these flags describe.
    fn job(self) -> RegrpoJob {
        let a = self;
        let cfg = RegrpoConfig {
            steps: a.steps,
            group_size: a.group_size,
            states_per_step: a.states,
            failure_fraction: a.failure_fraction,
            max_states: a.max_states,
            lr: a.lr,
            sample: SampleConfig { temperature: a.temperature, top_p: a.top_p, max_new_tokens: a.max_new_tokens },
            reward: RewardConfig {
                lambda_exec: a.lambda_exec,
                eta: a.eta,
                lambda_val: a.lambda_val,
                format_penalty: a.format_penalty,
                partial_credit: a.partial_credit,
            },
            max_draws_per_step: a.max_draws,
            window: a.window.config(),
            constrained: !a.unconstrained,
            advantage: AdvantageConfig {
                normalize: a.normalize_advantages,
                clip: a.clip_advantages,
                ..Default::default()
            },
            loss: LossConfig {
                beta: a.beta,
                kl: a.kl,
                token_level: a.token_level,
                length_normalize: a.length_normalize,
                ppo_clip: (a.updates > 1).then_some((a.ppo_clip_low, a.ppo_clip_high)),
            },
            updates_per_batch: a.updates,
            seed: a.seed,
            filter: a.filter,
            derivable_only: !a.all_failures,
            warmup_steps: a.warmup_steps,
            update_groups: a.update_groups,
            checkpoint_every: a.checkpoint_every,
            ..Default::default()
        };
        RegrpoJob {
            snapshot: a.snapshot,
            init: a.model,
            out: a.out,
            cfg,
            sources: a.source,
            device: a.device.device,
            lora: a.lora.config(),
            resume: a.resume,
        }
    }
}

pub async fn tokenizer(dir: &Path, snapshot: Option<&str>, vocab: usize, out: &Path) -> Result<()> {
    let repo = Repository::open(dir).await?;
    let tk = jobs::train_tokenizer(&repo, snapshot, vocab, out).await?;
    println!(
        "trained a byte-level BPE of {} tokens on {} → {}",
        tk.vocab_size(),
        snapshot.unwrap_or("the latest tables"),
        out.display()
    );
    Ok(())
}

pub async fn sft(dir: &Path, job: SftJob, quiet: bool) -> Result<SftOutcome> {
    let repo = Repository::open(dir).await?;
    let bar = progress::steps(quiet, job.sft.steps, "sft");
    let outcome = jobs::run_sft(&repo, &job, |l| {
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
    print_written(&o.model_dir, o.adapter_dir.as_deref(), &o.files);
    Ok(o)
}

pub async fn regrpo(dir: &Path, job: RegrpoJob, quiet: bool) -> Result<RegrpoOutcome> {
    let repo = Repository::open(dir).await?;
    let suite = regrpo_engine::ToolSuite::builtin();
    let bar = progress::steps(quiet, job.cfg.steps, "regrpo");
    let o = jobs::run_regrpo(&repo, &job, &suite, |s| {
        bar.set_position(s.step);
        bar.set_message(format!(
            "reward {:.3} success {:.2} refl(clean) {:.1} tok · skipped {}",
            s.mean_reward, s.success_rate, s.clean_reflection_tokens, s.skipped_groups
        ));
    })
    .await;
    bar.finish_and_clear();
    let o = o?;
    let first = jobs::quarter(&o.steps, true);
    let last = jobs::quarter(&o.steps, false);
    println!(
        "regrpo run {}: {} steps in {:.1}s, mean reward first quarter {first:.3} → last quarter {last:.3}; {} rollouts and {} policy near-misses committed",
        o.run_id,
        o.steps.len(),
        o.seconds,
        o.rollouts_added,
        o.policy_near_misses_added
    );
    print_written(&o.model_dir, o.adapter_dir.as_deref(), &o.files);
    Ok(o)
}

/// What a training job wrote: the model folder, the adapter (LoRA runs) and the other files.
fn print_written(model_dir: &Path, adapter_dir: Option<&Path>, files: &[PathBuf]) {
    println!("model (Hugging Face files): {}", model_dir.display());
    if let Some(a) = adapter_dir {
        println!("LoRA adapter (PEFT): {}", a.display());
    }
    for f in files {
        println!("wrote {}", f.display());
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;
    use regrpo_trainer::jobs::DeviceKind;
    use regrpo_trainer::text::window::WindowConfig;

    use super::*;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(subcommand)]
        command: Command,
    }

    fn parse(args: &[&str]) -> Command {
        Cli::try_parse_from(std::iter::once("train").chain(args.iter().copied())).unwrap().command
    }

    #[test]
    fn sft_without_flags_gives_the_configs_defaults() {
        let Command::Sft(a) = parse(&["sft", "repo", "--out", "run"]) else { unreachable!() };
        let job = a.job();
        assert_eq!(job.sft, SftConfig::default());
        assert_eq!(job.window, WindowConfig::default());
        // Serialised, so that every field is compared (`DataConfig` has no `PartialEq`).
        let json = |c: &DataConfig| serde_json::to_value(c).unwrap();
        assert_eq!(json(&job.data), json(&DataConfig::default()));
        assert_eq!(job.model, ModelSource::Tiny);
        assert_eq!(job.vocab, TINY_VOCAB);
        assert_eq!(job.device, DeviceKind::default());
        assert_eq!(job.lora, None);
    }

    #[test]
    fn regrpo_without_flags_gives_the_configs_defaults() {
        let Command::Regrpo(a) = parse(&["regrpo", "repo", "--model", "m", "--out", "run"]) else { unreachable!() };
        let job = a.job();
        assert_eq!(job.cfg, RegrpoConfig::default());
        assert_eq!(job.device, DeviceKind::default());
        assert_eq!(job.lora, None);
    }

    #[test]
    fn more_than_one_update_clips_the_ratio() {
        let Command::Regrpo(a) = parse(&["regrpo", "repo", "--model", "m", "--out", "run", "--updates", "2"]) else {
            unreachable!()
        };
        assert_eq!(a.job().cfg.loss.ppo_clip, Some(PPO_CLIP));
    }
}
