//! `regrpo cluster scheduler|executor`: a Ballista cluster that runs `regrpo sql`, `query` and
//! `serve` plans (`--cluster df://HOST:PORT`) with our functions and object stores.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Result;
use regrpo_queries::cluster::{ExecutorOptions, run_executor, run_scheduler};

/// Run SQL across machines: a Ballista 55 scheduler and executors from this binary.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// A scheduler: executors register with it, clients (`--cluster df://HOST:PORT`) send it
    /// plans. Runs until Ctrl-C.
    Scheduler {
        /// Where it listens (gRPC).
        #[arg(long, default_value = "127.0.0.1:50050")]
        bind: SocketAddr,
    },
    /// An executor: runs the scheduler's tasks, reading the repository's files itself (local
    /// paths must be the same on every machine; `s3://` repositories need only the same
    /// `--storage-option`s and AWS variables). Runs until Ctrl-C.
    Executor {
        /// The scheduler's address.
        #[arg(long, default_value = "127.0.0.1:50050")]
        scheduler: SocketAddr,
        /// Where its Arrow Flight service (shuffle and results) listens.
        #[arg(long, default_value = "127.0.0.1:50051")]
        bind: SocketAddr,
        /// Its gRPC port (tasks from the scheduler), on --bind's address [default: --bind's port + 1].
        #[arg(long)]
        grpc_port: Option<u16>,
        /// Tasks it runs at once (default: one per core).
        #[arg(long, default_value_t = 0)]
        concurrent_tasks: usize,
        /// Where shuffle files go (default: a temporary folder).
        #[arg(long)]
        work_dir: Option<PathBuf>,
    },
}

pub async fn run(c: Command) -> Result<()> {
    match c {
        Command::Scheduler { bind } => {
            eprintln!("Ballista scheduler at df://{bind}; Ctrl-C stops");
            tokio::select! {
                r = run_scheduler(bind) => r?,
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Command::Executor { scheduler, bind, grpc_port, concurrent_tasks, work_dir } => {
            let grpc_port = grpc_port.unwrap_or(bind.port().saturating_add(1));
            eprintln!("Ballista executor at {bind} (gRPC port {grpc_port}) serving df://{scheduler}; Ctrl-C stops");
            let o = ExecutorOptions { scheduler, bind, grpc_port, concurrent_tasks, work_dir };
            tokio::select! {
                r = run_executor(o) => r?,
                _ = tokio::signal::ctrl_c() => {}
            }
        }
    }
    Ok(())
}
