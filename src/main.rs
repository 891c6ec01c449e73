//! `regrpo`: the command line. Glue over the library crates: argument parsing, progress,
//! logging and output; the work happens in `regrpo-datasets`, `regrpo-formats`,
//! `regrpo-queries`, `regrpo-engine` and `regrpo-trainer`, and the demo in this package's
//! library (`regrpo::demo`, with the `progress` and `output` helpers it shares with the
//! commands). Each command is a module of [`cmd`] holding its arguments and its handler.

mod args;
mod cmd;

use std::process::ExitCode;

// The helpers the commands share with the demo live in the library; `crate::progress` and
// `crate::output` name them for the commands.
use regrpo::{output, progress};

/// mimalloc instead of glibc's malloc: the engine's many small JSON values and DataFusion's
/// aggregation buffers made malloc/free a quarter of `engine run`'s profile. (Feature
/// `mimalloc`, on by default; off for heap profilers that hook malloc.)
#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use clap::{Parser, Subcommand};

/// Turn tool-use failures of AI agents into training signal.
///
/// A dataset repository (`regrpo init`) holds trajectories, near-misses, Reflection-of-Thought
/// (RoT) rows and run logs as versioned Delta tables. Ingest agent data, snapshot it, query it
/// with SQL, publish it, train and evaluate policies on it.
#[derive(Debug, Parser)]
#[command(name = "regrpo", version, propagate_version = true, arg_required_else_help = true)]
struct Cli {
    /// No progress bars or informational logs (results and errors are still printed).
    #[arg(long, short, global = true)]
    quiet: bool,

    /// More logging (-v info, -vv debug); RUST_LOG overrides.
    #[arg(long, short, global = true, action = clap::ArgAction::Count)]
    verbose: u8,

    /// A storage option for a repository on S3 (`s3://bucket/prefix`), repeatable: the keys of
    /// object_store's S3 builder, e.g. `aws_endpoint=http://127.0.0.1:9000`,
    /// `aws_allow_http=true`, `aws_region=eu-west-1`. Credentials and endpoint are also read
    /// from the standard AWS environment variables; options win.
    #[arg(long = "storage-option", global = true, value_name = "KEY=VALUE", value_parser = args::key_value)]
    storage_options: Vec<(String, String)>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    Init(cmd::init::Args),
    Ingest(cmd::ingest::Args),
    /// Named, immutable snapshots of every table's version.
    #[command(subcommand)]
    Snapshot(cmd::snapshot::Command),
    Gc(cmd::gc::Args),
    Optimize(cmd::optimize::Args),
    /// Generate toolworld tasks (files + question + executed ground-truth trajectory).
    #[command(subcommand)]
    Toolworld(cmd::toolworld::Command),
    /// The Structured Reflective Data Engine: executed near-misses → grounded RoT rows.
    #[command(subcommand)]
    Engine(Box<cmd::engine::Command>),
    Publish(cmd::publish::Args),
    Export(cmd::publish::ExportArgs),
    /// Train tokenizers and policies from a pinned snapshot.
    #[command(subcommand)]
    Train(Box<cmd::train::Command>),
    /// Work with trained models: export, import GGUF, merge LoRA, logits.
    #[command(subcommand)]
    Model(cmd::model::Command),
    Eval(Box<cmd::eval::Args>),
    Demo(cmd::demo::Args),
    Query(cmd::query::Args),
    Serve(cmd::serve::Args),
    Sql(cmd::sql::Args),
    Ui(cmd::ui::Args),
    /// SQL across machines: a Ballista scheduler and executors for `--cluster df://HOST:PORT`.
    #[command(subcommand)]
    Cluster(cmd::cluster::Command),
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
    regrpo_datasets::store::set_process_options(cli.storage_options.into_iter().collect());
    match cli.command {
        Command::Init(a) => cmd::init::run(a).await,
        Command::Ingest(a) => cmd::ingest::run(a, quiet).await,
        Command::Snapshot(c) => cmd::snapshot::run(c).await,
        Command::Gc(a) => cmd::gc::run(a).await,
        Command::Optimize(a) => cmd::optimize::run(a).await,
        Command::Toolworld(c) => cmd::toolworld::run(c, quiet).await,
        Command::Engine(c) => cmd::engine::run(*c, quiet).await.map(|_| ()),
        Command::Publish(a) => cmd::publish::run(a).await,
        Command::Export(a) => cmd::publish::export(a).await,
        Command::Train(c) => cmd::train::run(*c, quiet).await,
        Command::Model(c) => cmd::model::run(c),
        Command::Eval(a) => cmd::eval::run(*a, quiet).await,
        Command::Demo(a) => cmd::demo::run(a, quiet).await,
        Command::Query(a) => cmd::query::run(a).await,
        Command::Serve(a) => cmd::serve::run(a).await,
        Command::Sql(a) => cmd::sql::run(a).await,
        Command::Ui(a) => cmd::ui::run(a).await,
        Command::Cluster(c) => cmd::cluster::run(c).await,
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
