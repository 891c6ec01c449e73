//! `regrpo`: the command line. Glue over the library crates: argument parsing, progress,
//! logging and output; the work happens in `regrpo-datasets`, `regrpo-queries`,
//! `regrpo-engine` and `regrpo-trainer`.

mod data;
mod demo;
mod engine_cmd;
mod progress;
mod train_cmd;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use regrpo_datasets::ingest::Format;
use regrpo_queries::OutputFormat;
use regrpo_trainer::window::WindowConfig;

/// Turn tool-use failures of AI agents into training signal.
///
/// A dataset repository (`regrpo init`) holds trajectories, near-misses, Reflection-of-Thought
/// (RoT) rows and run logs as versioned Delta tables. Ingest agent data, snapshot it, query it
/// with SQL.
#[derive(Debug, Parser)]
#[command(name = "regrpo", version, propagate_version = true, arg_required_else_help = true)]
struct Cli {
    /// No progress bars or informational logs (results and errors are still printed).
    #[arg(long, short, global = true)]
    quiet: bool,

    /// More logging (-v info, -vv debug); RUST_LOG overrides.
    #[arg(long, short, global = true, action = clap::ArgAction::Count)]
    verbose: u8,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create an empty dataset repository in DIR.
    Init { dir: PathBuf },

    /// Read agent data files into the repository (re-running adds nothing twice).
    ///
    /// Formats: regrpo (ReGRPO reference JSON), mat (MM-Traj ShareGPT JSON), bfcl (BFCL JSON
    /// Lines + answers), gta (GTA dataset.json), openai (chat JSONL with tool_calls).
    /// Records that cannot be read go to the `rejects` table with the reason.
    Ingest {
        dir: PathBuf,
        #[arg(long, short)]
        format: Format,
        /// BFCL only: the answers file (default: <questions>.answers.json or possible_answer/<name>).
        #[arg(long)]
        answers: Option<PathBuf>,
        /// Rows per Delta commit.
        #[arg(long)]
        chunk_rows: Option<usize>,
        #[arg(required = true)]
        paths: Vec<PathBuf>,
    },

    /// Named, immutable snapshots of every table's version.
    #[command(subcommand)]
    Snapshot(SnapshotCommand),

    /// Delete data files that no snapshot and no latest table version references.
    Gc {
        dir: PathBuf,
        /// Keep unreferenced files younger than this many seconds (a writer may be committing them).
        #[arg(long, default_value_t = 3600)]
        min_age: u64,
        #[arg(long)]
        dry_run: bool,
    },

    /// Compact small files into large ones and cluster near_misses/rot by error_type and tool
    /// (Z-order), as a new version of each table; snapshots keep reading their own files.
    Optimize {
        dir: PathBuf,
        /// Only these tables (default: all).
        #[arg(long = "table")]
        tables: Vec<String>,
    },

    /// Generate toolworld tasks (files + question + executed ground-truth trajectory).
    #[command(subcommand)]
    Toolworld(ToolworldCommand),

    /// The Structured Reflective Data Engine: executed near-misses → grounded RoT rows.
    #[command(subcommand)]
    Engine(EngineCommand),

    /// Write RoT rows and clean trajectories in a training layout.
    Export {
        dir: PathBuf,
        /// Export what this snapshot pins (default: latest).
        #[arg(long, short)]
        snapshot: Option<String>,
        /// regrpo-json: the ReGRPO reference layout (rot_train.json + clean_train.json).
        #[arg(long, default_value = "regrpo-json")]
        format: String,
        out: PathBuf,
    },

    /// Publish a snapshot as a dataset: hf (Parquet + card + croissant), regrpo-json, openai-jsonl.
    Publish {
        dir: PathBuf,
        /// The snapshot to publish (required: a published dataset names where it came from).
        #[arg(long, short)]
        snapshot: String,
        #[arg(long)]
        out: PathBuf,
        #[arg(long, default_value = "hf")]
        format: regrpo_datasets::publish::PublishFormat,
        /// Seeds the order in which the mixture drops rows (the splits are the snapshot's).
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Build an SFT mixture with this share of RoT rows against clean trajectories (e.g. 0.5).
        #[arg(long)]
        rot_fraction: Option<f64>,
        /// Target ErrorType shares among RoT rows, e.g. ArgInvalid=0.4,ToolMismatch=0.3,GroundingDrift=0.3.
        #[arg(long)]
        error_mix: Option<String>,
        /// Include RoT rows that failed a verification gate.
        #[arg(long)]
        include_unverified: bool,
        /// License of what regrpo generated (toolworld rows).
        #[arg(long, default_value = "cc-by-4.0")]
        license: String,
        /// License of an external source's rows, SOURCE=LICENSE (e.g. bfcl=apache-2.0);
        /// repeatable. A source without one makes the card's license `other`.
        #[arg(long = "source-license", value_name = "SOURCE=LICENSE")]
        source_licenses: Vec<String>,
        #[arg(long, default_value = "regrpo Reflection-of-Thought dataset")]
        pretty_name: String,
    },

    /// Train tokenizers and policies from a pinned snapshot.
    #[command(subcommand)]
    Train(Box<TrainCommand>),

    /// Work with trained models.
    #[command(subcommand)]
    Model(ModelCommand),

    /// Evaluate a policy on the held-out split: recovery, first-try success, reflection use, answers.
    Eval {
        dir: PathBuf,
        #[arg(long, short)]
        snapshot: Option<String>,
        /// A run folder or a model folder.
        #[arg(long)]
        model: PathBuf,
        /// The snapshot's split to draw states from. `test`: the held-out split (what every
        /// reported figure uses); `train`: to see whether training moved its own objective.
        #[arg(long, value_enum, default_value_t = SplitArg::Test)]
        split: SplitArg,
        /// Where the eval run goes (default: MODEL/eval).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Failure states and clean states evaluated (each, at most).
        #[arg(long, default_value_t = 120)]
        max_states: usize,
        #[arg(long, default_value_t = 20)]
        max_tasks: usize,
        /// Only trajectories of these sources (comma-separated).
        #[arg(long, value_delimiter = ',')]
        source: Option<Vec<String>>,
        /// Decode freely instead of under the tools' grammar.
        #[arg(long)]
        unconstrained: bool,
        #[command(flatten)]
        window: WindowArgs,
        /// cpu, or cuda (needs a build with `--features cuda`).
        #[arg(long, value_enum, default_value_t = Device::Cpu)]
        device: Device,
    },

    /// Run the whole pipeline on the embedded default in a fresh folder.
    Demo {
        /// Where to put everything (must be empty or absent).
        #[arg(long, default_value = "regrpo-demo")]
        dir: PathBuf,
        /// toolworld tasks to generate.
        #[arg(long, default_value_t = demo::DemoConfig::default().tasks)]
        tasks: usize,
        /// The policies' shape: `tiny` or `tiny:HIDDENxLAYERS`.
        #[arg(long, default_value_t = demo::DemoConfig::default().model)]
        model: String,
        /// Clean SFT steps both arms share.
        #[arg(long, default_value_t = demo::DemoConfig::default().warmup_steps)]
        warmup_steps: u64,
        /// SFT steps of each arm after the warm-up.
        #[arg(long, default_value_t = demo::DemoConfig::default().branch_steps)]
        sft_steps: u64,
        /// ReGRPO steps (of each of the two ReGRPO runs).
        #[arg(long, default_value_t = demo::DemoConfig::default().regrpo_steps)]
        regrpo_steps: u64,
        /// Held-out failure states and clean states evaluated per policy (each, at most).
        #[arg(long, default_value_t = demo::DemoConfig::default().eval_states)]
        eval_states: usize,
        /// Held-out toolworld tasks the agent loop runs per policy.
        #[arg(long, default_value_t = demo::DemoConfig::default().eval_tasks)]
        eval_tasks: usize,
        #[arg(long, default_value_t = demo::DemoConfig::default().seed)]
        seed: u64,
        /// Decode freely instead of under the tools' grammar (rollouts and evaluation).
        #[arg(long)]
        unconstrained: bool,
        /// cpu, or cuda (needs a build with `--features cuda`).
        #[arg(long, value_enum, default_value_t = Device::Cpu)]
        device: Device,
    },

    /// Run a query of the named library (`regrpo query --list` shows them), parameters bound.
    Query {
        /// The dataset repository.
        #[arg(required_unless_present = "list")]
        dir: Option<PathBuf>,
        /// The query's name.
        #[arg(required_unless_present = "list")]
        name: Option<String>,
        /// A parameter, `name=value` (repeatable); undeclared parameters are refused.
        #[arg(long = "param", short = 'p', value_name = "K=V")]
        params: Vec<String>,
        /// Read the tables as this snapshot pinned them (default: latest).
        #[arg(long, short)]
        snapshot: Option<String>,
        /// List the queries, their descriptions and parameters.
        #[arg(long)]
        list: bool,
        /// Print the query's SQL instead of running it.
        #[arg(long)]
        show_sql: bool,
        #[arg(long, short, default_value = "table")]
        format: OutputFormat,
        /// Write to this file instead of stdout (required for parquet).
        #[arg(long, short)]
        out: Option<PathBuf>,
    },

    /// Serve the tables over Flight SQL (ADBC, JDBC/DBeaver, any Flight SQL client), read-only.
    Serve {
        dir: PathBuf,
        /// Serve the tables as this snapshot pinned them (default: latest at start).
        #[arg(long, short)]
        snapshot: Option<String>,
        #[arg(long, default_value = "127.0.0.1:50051")]
        addr: std::net::SocketAddr,
        /// A file holding the bearer token clients must send (`authorization: Bearer <token>`).
        #[arg(long)]
        token_file: PathBuf,
        /// Memory each query may use, in MiB.
        #[arg(long, default_value_t = 1024)]
        memory_limit_mb: usize,
        /// Wall-clock limit of each query, in seconds.
        #[arg(long, default_value_t = 60)]
        timeout_s: u64,
    },

    /// Run a read-only SQL query (tables: trajectories, near_misses, rot, rejects, runs, metrics, rollouts).
    Sql {
        dir: PathBuf,
        /// Read the tables as this snapshot pinned them (default: latest).
        #[arg(long, short)]
        snapshot: Option<String>,
        query: String,
        #[arg(long, short, default_value = "table")]
        format: OutputFormat,
        /// Write to this file instead of stdout (required for parquet).
        #[arg(long, short)]
        out: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
enum ToolworldCommand {
    /// Generate N tasks with seed S into the repository DIR.
    Generate {
        dir: PathBuf,
        #[arg(long, default_value_t = 100)]
        tasks: usize,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        #[arg(long, default_value_t = 8)]
        concurrency: usize,
    },
}

#[derive(Debug, Subcommand)]
enum EngineCommand {
    /// Build near-misses of the trajectories, execute them, judge, reflect, verify, commit.
    Run {
        dir: PathBuf,
        /// Tool sources: builtin, wasm:DIR (modules + JSON specs), remote:URL (OpenAPI tool server).
        #[arg(long, default_value = "builtin")]
        tools: String,
        /// Target ErrorType mix: paper, uniform, or four weights (GroundingDrift,ToolMismatch,ArgInvalid,InfoInsufficient).
        #[arg(long, default_value = "paper")]
        mix: String,
        /// Share of CodeError + NonCommit examples on top of the main four.
        #[arg(long, default_value_t = 0.1)]
        extra: f64,
        /// Near-misses per trajectory (K).
        #[arg(long, default_value_t = 2)]
        per_trajectory: usize,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Tool calls in flight at once.
        #[arg(long, default_value_t = 16)]
        concurrency: usize,
        /// OpenAI-compatible endpoint that writes the reflections (model: REGRPO_TEACHER_MODEL, key: OPENAI_API_KEY).
        #[arg(long)]
        teacher: Option<String>,
        /// Read trajectories as this snapshot pinned them.
        #[arg(long, short)]
        snapshot: Option<String>,
        /// Only trajectories of these sources (comma-separated: toolworld, bfcl, mat, …).
        #[arg(long, value_delimiter = ',')]
        source: Option<Vec<String>>,
        /// Wasm tools: wall-clock deadline per call, in milliseconds.
        #[arg(long, default_value_t = 2000)]
        wasm_deadline_ms: u64,
        /// Wasm tools: memory cap per call, in MiB.
        #[arg(long, default_value_t = 64)]
        wasm_memory_mib: usize,
    },
}

#[derive(Debug, Subcommand)]
enum TrainCommand {
    /// Train a byte-level BPE tokenizer on the repository's text; writes a standard tokenizer.json.
    Tokenizer {
        dir: PathBuf,
        #[arg(long, short)]
        snapshot: Option<String>,
        #[arg(long, default_value_t = 1024)]
        vocab: usize,
        out: PathBuf,
    },
    /// Supervised fine-tuning on clean trajectories and RoT rows of a snapshot.
    Sft(SftArgs),
    /// ReGRPO: group-relative RL over reflection + corrective actions, rollouts executed for real.
    Regrpo(RegrpoArgs),
}

#[derive(Debug, clap::Args)]
struct RegrpoArgs {
    dir: PathBuf,
    #[arg(long, short)]
    snapshot: Option<String>,
    /// The starting policy (also the frozen KL reference): a run folder or a model folder.
    #[arg(long)]
    model: PathBuf,
    #[arg(long)]
    out: PathBuf,
    #[arg(long, default_value_t = 20)]
    steps: u64,
    /// Completions per state (G).
    #[arg(long, default_value_t = 5)]
    group_size: usize,
    /// States per step.
    #[arg(long, default_value_t = 4)]
    states: usize,
    /// Share of failure states (the rest are clean states).
    #[arg(long, default_value_t = 0.5)]
    failure_fraction: f64,
    #[arg(long, default_value_t = 5e-6)]
    lr: f64,
    /// Reward weight of success.
    #[arg(long, default_value_t = 1.0)]
    lambda_exec: f64,
    /// Reflection cost weight (per 100 reflection tokens).
    #[arg(long, default_value_t = 0.1)]
    eta: f64,
    /// Weight of the grounded-evidence / right-ErrorType score.
    #[arg(long, default_value_t = 0.0)]
    lambda_val: f64,
    /// KL weight to the reference.
    #[arg(long, default_value_t = 0.04)]
    beta: f64,
    /// How the KL to the reference enters: k1-reward (default), exact, k3, reference-k1,
    /// reference-k3 (the last two reproduce the reference's formulas).
    #[arg(long, default_value = "k1-reward")]
    kl: regrpo_trainer::rl::KlMode,
    /// Reward subtracted when a completion does not parse (only with --unconstrained).
    #[arg(long, default_value_t = 0.5)]
    format_penalty: f64,
    /// Shaping (off at 0): a failed completion earns this times its share of the right tool and arguments.
    #[arg(long, default_value_t = 0.0)]
    partial_credit: f64,
    /// States drawn per step at most when groups without signal are skipped and refilled.
    #[arg(long, default_value_t = 12)]
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
    #[arg(long, default_value_t = 1)]
    updates: usize,
    #[arg(long, default_value_t = 0.2)]
    ppo_clip_low: f64,
    #[arg(long, default_value_t = 0.28)]
    ppo_clip_high: f64,
    #[arg(long, default_value_t = 1.0)]
    temperature: f64,
    #[arg(long, default_value_t = 0.95)]
    top_p: f64,
    #[arg(long, default_value_t = 192)]
    max_new_tokens: usize,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    #[command(flatten)]
    lora: LoraArgs,
    /// cpu, or cuda (needs a build with `--features cuda`).
    #[arg(long, value_enum, default_value_t = Device::Cpu)]
    device: Device,
}

/// LoRA: train low-rank adapters beside the chosen projections, the base frozen.
#[derive(Debug, clap::Args)]
struct LoraArgs {
    /// Rank of the adapters (LoRA is off without it); the run also writes `adapter/` (PEFT).
    #[arg(long)]
    lora_rank: Option<usize>,
    /// Scale numerator: the update is multiplied by alpha / rank [default: 2 × rank].
    #[arg(long, requires = "lora_rank")]
    lora_alpha: Option<f64>,
    /// Dropout on the adapters' input while training.
    #[arg(long, default_value_t = 0.0, requires = "lora_rank")]
    lora_dropout: f64,
    /// Projections to adapt (q_proj k_proj v_proj o_proj gate_proj up_proj down_proj).
    #[arg(long, value_delimiter = ',', default_values_t = regrpo_trainer::lora::DEFAULT_TARGETS.map(String::from), requires = "lora_rank")]
    lora_targets: Vec<String>,
}

impl LoraArgs {
    fn config(&self) -> Option<regrpo_trainer::lora::LoraConfig> {
        let rank = self.lora_rank?;
        let base = regrpo_trainer::lora::LoraConfig::new(rank);
        Some(regrpo_trainer::lora::LoraConfig {
            alpha: self.lora_alpha.unwrap_or(base.alpha),
            dropout: self.lora_dropout,
            targets: self.lora_targets.clone(),
            ..base
        })
    }
}

#[derive(Debug, clap::Args)]
struct SftArgs {
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
    #[arg(long, default_value_t = 1024)]
    vocab: usize,
    #[arg(long, default_value_t = 200)]
    steps: u64,
    #[arg(long, default_value_t = 4)]
    batch_size: usize,
    #[arg(long, default_value_t = 3e-3)]
    lr: f64,
    #[arg(long, default_value_t = 1)]
    grad_accum: usize,
    #[command(flatten)]
    window: WindowArgs,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    #[arg(long, default_value_t = 10)]
    warmup: u64,
    /// Share of RoT samples in each batch (0: clean trajectories only).
    #[arg(long, default_value_t = 0.5)]
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
    #[arg(long, default_value_t = 50)]
    eval_every: u64,
    #[arg(long, default_value_t = 100)]
    checkpoint_every: u64,
    /// Continue from the run folder's latest checkpoint.
    #[arg(long)]
    resume: bool,
    #[command(flatten)]
    lora: LoraArgs,
    /// cpu, or cuda (needs a build with `--features cuda`).
    #[arg(long, value_enum, default_value_t = Device::Cpu)]
    device: Device,
}

/// Token budgets of the context window (see `regrpo_trainer::window`).
#[derive(Debug, clap::Args)]
struct WindowArgs {
    /// Tokens of a whole prompt.
    #[arg(long, default_value_t = WindowConfig::default().max_prompt_tokens)]
    max_prompt_tokens: usize,
    /// Tokens of a target turn (and the sampling budget).
    #[arg(long, default_value_t = WindowConfig::default().max_target_tokens)]
    max_target_tokens: usize,
    #[arg(long, default_value_t = WindowConfig::default().system_tokens)]
    system_tokens: usize,
    #[arg(long, default_value_t = WindowConfig::default().task_tokens)]
    task_tokens: usize,
    /// Tokens of each observation.
    #[arg(long, default_value_t = WindowConfig::default().observation_tokens)]
    observation_tokens: usize,
}

impl WindowArgs {
    fn config(&self) -> WindowConfig {
        WindowConfig {
            max_prompt_tokens: self.max_prompt_tokens,
            max_target_tokens: self.max_target_tokens,
            system_tokens: self.system_tokens,
            task_tokens: self.task_tokens,
            observation_tokens: self.observation_tokens,
        }
    }
}

/// Where a job runs; every training and evaluation command takes it.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum Device {
    Cpu,
    Cuda,
}

impl Device {
    fn kind(self) -> regrpo_trainer::job::DeviceKind {
        match self {
            Device::Cpu => regrpo_trainer::job::DeviceKind::Cpu,
            Device::Cuda => regrpo_trainer::job::DeviceKind::Cuda,
        }
    }
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum WeightDtype {
    F32,
    Bf16,
}

#[derive(Debug, Subcommand)]
enum ModelCommand {
    /// Write a run's model as Hugging Face files (config.json, model.safetensors, tokenizer).
    Export { run: PathBuf, out: PathBuf },
    /// Turn a GGUF checkpoint (llama or qwen2; F32, F16, BF16, Q8_0, Q4_0, Q4_1 tensors) into a
    /// Hugging Face model folder that training, eval and transformers load.
    Import {
        file: PathBuf,
        #[arg(long)]
        out: PathBuf,
        /// How the dequantized weights are stored.
        #[arg(long, value_enum, default_value_t = WeightDtype::F32)]
        dtype: WeightDtype,
    },
    /// Merge a PEFT LoRA adapter folder (ours or one peft wrote) into its base model and write
    /// the full model folder.
    Merge {
        /// The base model folder (or a run folder holding `model/`).
        base: PathBuf,
        /// The adapter folder (`adapter_config.json`, `adapter_model.safetensors`).
        #[arg(long)]
        adapter: PathBuf,
        #[arg(long)]
        out: PathBuf,
    },
    /// Logits of a model on the input_ids of a safetensors file (for parity checks).
    Logits {
        model: PathBuf,
        #[arg(long)]
        input: PathBuf,
        #[arg(long)]
        out: PathBuf,
        /// cpu, or cuda (needs a build with `--features cuda`).
        #[arg(long, value_enum, default_value_t = Device::Cpu)]
        device: Device,
    },
}

#[derive(Debug, Subcommand)]
enum SnapshotCommand {
    /// Pin every table's current version under NAME.
    Create {
        dir: PathBuf,
        name: String,
        #[arg(long)]
        note: Option<String>,
        /// train,validation,test fractions of the trajectories: the split every job reading the
        /// snapshot uses (SFT, ReGRPO, eval, publish).
        #[arg(long, default_value = "0.8,0.1,0.1")]
        split: String,
        /// Seeds the split's hash.
        #[arg(long, default_value_t = 0)]
        split_seed: u64,
    },
    /// List snapshots, oldest first.
    List { dir: PathBuf },
    /// Show the versions, rows and files a snapshot pins.
    Show { dir: PathBuf, name: String },
    /// Compare two snapshots table by table.
    Diff { dir: PathBuf, a: String, b: String },
    /// Re-open pinned versions and re-hash every file.
    Verify { dir: PathBuf, name: String },
}

/// A split of the snapshot, as the command line names it.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum SplitArg {
    Train,
    Validation,
    Test,
}

impl From<SplitArg> for regrpo_schemas::Split {
    fn from(s: SplitArg) -> Self {
        match s {
            SplitArg::Train => regrpo_schemas::Split::Train,
            SplitArg::Validation => regrpo_schemas::Split::Validation,
            SplitArg::Test => regrpo_schemas::Split::Test,
        }
    }
}

fn init_logging(quiet: bool, verbose: u8) {
    let default = match (quiet, verbose) {
        (true, _) => "error",
        (false, 0) => "warn",
        (false, 1) => "info,regrpo=info",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_target(false).init();
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let quiet = cli.quiet;
    match cli.command {
        Command::Init { dir } => data::init(&dir).await,
        Command::Ingest { dir, format, answers, chunk_rows, paths } => {
            data::ingest(&dir, format, &paths, answers, chunk_rows, quiet).await
        }
        Command::Snapshot(s) => match s {
            SnapshotCommand::Create { dir, name, note, split, split_seed } => {
                let split = regrpo_schemas::SplitSpec::parse_fractions(&split, split_seed)
                    .map_err(|e| anyhow::anyhow!("--split: {e}"))?;
                data::snapshot_create(&dir, &name, note.as_deref(), split).await
            }
            SnapshotCommand::List { dir } => data::snapshot_list(&dir),
            SnapshotCommand::Show { dir, name } => data::snapshot_show(&dir, &name),
            SnapshotCommand::Diff { dir, a, b } => data::snapshot_diff(&dir, &a, &b),
            SnapshotCommand::Verify { dir, name } => data::snapshot_verify(&dir, &name).await,
        },
        Command::Publish {
            dir,
            snapshot,
            out,
            format,
            seed,
            rot_fraction,
            error_mix,
            include_unverified,
            license,
            source_licenses,
            pretty_name,
        } => {
            let opts = data::publish_options(
                format,
                seed,
                rot_fraction,
                error_mix.as_deref(),
                include_unverified,
                license,
                &source_licenses,
                pretty_name,
            )?;
            data::publish(&dir, &snapshot, &out, &opts).await
        }
        Command::Gc { dir, min_age, dry_run } => data::gc(&dir, min_age, dry_run).await,
        Command::Optimize { dir, tables } => data::optimize(&dir, &tables).await,
        Command::Toolworld(ToolworldCommand::Generate { dir, tasks, seed, concurrency }) => {
            engine_cmd::toolworld_generate(&dir, tasks, seed, concurrency, quiet).await
        }
        Command::Engine(EngineCommand::Run {
            dir,
            tools,
            mix,
            extra,
            per_trajectory,
            seed,
            concurrency,
            teacher,
            snapshot,
            source,
            wasm_deadline_ms,
            wasm_memory_mib,
        }) => {
            let limits = regrpo_engine::tool::wasm::WasmLimits {
                deadline: std::time::Duration::from_millis(wasm_deadline_ms),
                memory_bytes: wasm_memory_mib << 20,
                ..Default::default()
            };
            engine_cmd::engine_run(
                &dir,
                &tools,
                &mix,
                extra,
                per_trajectory,
                seed,
                concurrency,
                teacher.as_deref(),
                snapshot,
                source,
                limits,
                quiet,
            )
            .await
            .map(|_| ())
        }
        Command::Export { dir, snapshot, format, out } => data::export(&dir, snapshot.as_deref(), &format, &out).await,
        Command::Train(t) => match *t {
            TrainCommand::Tokenizer { dir, snapshot, vocab, out } => {
                train_cmd::tokenizer(&dir, snapshot.as_deref(), vocab, &out).await
            }
            TrainCommand::Sft(a) => {
                let dir = a.dir.clone();
                let device = a.device.kind();
                let job = regrpo_trainer::job::SftJob {
                    snapshot: a.snapshot,
                    model: regrpo_trainer::job::ModelSource::parse(&a.model),
                    tokenizer: a.tokenizer,
                    vocab: a.vocab,
                    out: a.out,
                    sft: regrpo_trainer::sft::SftConfig {
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
                    data: regrpo_trainer::data::DataConfig {
                        rot_fraction: a.rot_fraction,
                        rot_extra: a.rot_extra,
                        rot_target: if a.rot_all_turns {
                            regrpo_trainer::data::RotTarget::AllAssistant
                        } else {
                            regrpo_trainer::data::RotTarget::Reflection
                        },
                        sources: a.source,
                    },
                    resume: a.resume,
                    device,
                    lora: a.lora.config(),
                };
                train_cmd::sft(&dir, job, quiet).await.map(|_| ())
            }
            TrainCommand::Regrpo(a) => {
                let cfg = regrpo_trainer::regrpo::RegrpoConfig {
                    steps: a.steps,
                    group_size: a.group_size,
                    states_per_step: a.states,
                    failure_fraction: a.failure_fraction,
                    max_states: a.max_states,
                    lr: a.lr,
                    sample: regrpo_trainer::sampling::SampleConfig {
                        temperature: a.temperature,
                        top_p: a.top_p,
                        max_new_tokens: a.max_new_tokens,
                    },
                    reward: regrpo_trainer::rl::RewardConfig {
                        lambda_exec: a.lambda_exec,
                        eta: a.eta,
                        lambda_val: a.lambda_val,
                        format_penalty: a.format_penalty,
                        partial_credit: a.partial_credit,
                    },
                    max_draws_per_step: a.max_draws,
                    window: a.window.config(),
                    constrained: !a.unconstrained,
                    advantage: regrpo_trainer::rl::AdvantageConfig {
                        normalize: a.normalize_advantages,
                        clip: a.clip_advantages,
                        leave_one_out: false,
                    },
                    loss: regrpo_trainer::rl::LossConfig {
                        beta: a.beta,
                        kl: a.kl,
                        token_level: a.token_level,
                        length_normalize: a.length_normalize,
                        ppo_clip: (a.updates > 1).then_some((a.ppo_clip_low, a.ppo_clip_high)),
                    },
                    updates_per_batch: a.updates,
                    seed: a.seed,
                    ..Default::default()
                };
                let job = regrpo_trainer::job::RegrpoJob {
                    snapshot: a.snapshot,
                    init: a.model,
                    out: a.out,
                    cfg,
                    sources: a.source,
                    device: a.device.kind(),
                    lora: a.lora.config(),
                };
                train_cmd::regrpo(&a.dir, job, quiet).await.map(|_| ())
            }
        },
        Command::Eval {
            dir,
            snapshot,
            model,
            split,
            out,
            max_states,
            max_tasks,
            source,
            unconstrained,
            window,
            device,
        } => {
            let out = out.unwrap_or_else(|| model.join("eval"));
            let cfg = regrpo_trainer::eval::EvalConfig {
                max_failure_states: max_states,
                max_clean_states: max_states,
                max_tasks,
                sources: source,
                window: window.config(),
                constrained: !unconstrained,
                split: split.into(),
                device: device.kind(),
                ..Default::default()
            };
            train_cmd::eval(&dir, snapshot.as_deref(), &model, &out, &cfg).await.map(|_| ())
        }
        Command::Model(ModelCommand::Export { run, out }) => train_cmd::export(&run, &out),
        Command::Model(ModelCommand::Import { file, out, dtype }) => train_cmd::import(
            &file,
            &out,
            match dtype {
                WeightDtype::F32 => regrpo_trainer::hf::StoredDtype::F32,
                WeightDtype::Bf16 => regrpo_trainer::hf::StoredDtype::Bf16,
            },
        ),
        Command::Model(ModelCommand::Merge { base, adapter, out }) => train_cmd::merge(&base, &adapter, &out),
        Command::Model(ModelCommand::Logits { model, input, out, device }) => {
            train_cmd::logits(&model, &input, &out, device.kind())
        }
        Command::Demo {
            dir,
            tasks,
            model,
            warmup_steps,
            sft_steps,
            regrpo_steps,
            eval_states,
            eval_tasks,
            seed,
            unconstrained,
            device,
        } => {
            let cfg = demo::DemoConfig {
                device: device.kind(),
                tasks,
                model,
                warmup_steps,
                branch_steps: sft_steps,
                regrpo_steps,
                eval_states,
                eval_tasks,
                seed,
                constrained: !unconstrained,
                ..Default::default()
            };
            demo::run(&dir, &cfg, quiet).await
        }
        Command::Query { dir, name, params, snapshot, list, show_sql, format, out } => match (list, dir, name) {
            (true, _, _) => {
                data::list_queries();
                Ok(())
            }
            (false, Some(dir), Some(name)) => {
                data::query(&dir, &name, &params, snapshot.as_deref(), show_sql, format, out.as_deref()).await
            }
            _ => unreachable!("clap requires DIR and NAME without --list"),
        },
        Command::Serve { dir, snapshot, addr, token_file, memory_limit_mb, timeout_s } => {
            data::serve(&dir, snapshot.as_deref(), addr, &token_file, memory_limit_mb, timeout_s).await
        }
        Command::Sql { dir, snapshot, query, format, out } => {
            data::sql(&dir, snapshot.as_deref(), &query, format, out.as_deref()).await
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.quiet, cli.verbose);
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // A closed stdout (`regrpo sql … | head`) is not a failure.
            if e.chain().any(|c| {
                c.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            }) {
                return ExitCode::SUCCESS;
            }
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
