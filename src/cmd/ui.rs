//! `regrpo ui DIR`: the curators' web view, until Ctrl-C.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{Context, Result};
use regrpo_datasets::Repository;
use regrpo_ui::UiConfig;

/// Serve the curators' web view: counts you click to filter, paged rows, a record with its
/// evidence, keyboard review (accept / reject / flag / undo, bulk on a filter) and a SQL box.
#[derive(Debug, clap::Args)]
pub struct Args {
    dir: PathBuf,
    /// Read the tables as this snapshot pinned them (default: latest at start); pages can switch.
    #[arg(long, short)]
    snapshot: Option<String>,
    /// Where to listen. Anything but a loopback address needs --token-file.
    #[arg(long, default_value = "127.0.0.1:8080")]
    addr: SocketAddr,
    /// A file holding the token every request must carry (at least 16 characters): open
    /// `http://ADDR/?token=TOKEN` once (a cookie keeps it), or send `Authorization: Bearer TOKEN`.
    #[arg(long)]
    token_file: Option<PathBuf>,
    /// The name reviews are recorded under.
    #[arg(long, env = "USER", default_value = "curator")]
    reviewer: String,
    /// Another Host the server is reached by (a DNS name, a proxy's host:port); repeatable.
    #[arg(long = "allow-host", value_name = "HOST[:PORT]")]
    allow_hosts: Vec<String>,
}

pub async fn run(a: Args) -> Result<()> {
    let token = match &a.token_file {
        Some(f) => Some(
            std::fs::read_to_string(f)
                .with_context(|| format!("reading the token file {}", f.display()))?
                .trim()
                .to_string(),
        ),
        None => None,
    };
    regrpo_ui::check_bind(a.addr, token.as_deref())?;
    let repo = Repository::open(&a.dir).await?;
    let listener = tokio::net::TcpListener::bind(a.addr).await.with_context(|| format!("binding {}", a.addr))?;
    let addr = listener.local_addr()?;
    let cfg = UiConfig {
        repo: repo.clone(),
        snapshot: a.snapshot.clone(),
        addr,
        token: token.clone(),
        reviewer: a.reviewer.clone(),
        allowed_hosts: a.allow_hosts,
    };
    let router = regrpo_ui::router(cfg).await.with_context(|| format!("opening {}", repo.location()))?;
    // The token itself is never printed: the user has it in the file.
    println!(
        "serving {} ({}) at http://{addr}/{}; reviews as `{}`; Ctrl-C stops",
        repo.location(),
        a.snapshot.map_or_else(|| "latest tables".to_string(), |s| format!("snapshot {s}")),
        if token.is_some() { "?token=<the token in --token-file>" } else { "" },
        a.reviewer,
    );
    axum::serve(listener, router)
        .with_graceful_shutdown(async {
            tokio::signal::ctrl_c().await.ok();
        })
        .await?;
    Ok(())
}
