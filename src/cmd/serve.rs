//! `regrpo serve DIR`: the tables over Flight SQL, read-only, until Ctrl-C.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use regrpo_datasets::Repository;
use regrpo_queries::flight::{FlightSqlServer, ServeConfig, Tls};
use regrpo_queries::{At, Session};

/// Serve the tables over Flight SQL (ADBC, JDBC/DBeaver, any Flight SQL client), read-only.
#[derive(Debug, clap::Args)]
pub struct Args {
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
    #[arg(long, alias = "max-query-memory", default_value_t = 1024)]
    memory_limit_mb: usize,
    /// Wall-clock limit of each query, in seconds (a client that stops reading is cut off too).
    #[arg(long, alias = "query-timeout", default_value_t = 60)]
    timeout_s: u64,
    /// Longest statement taken, in KiB.
    #[arg(long, default_value_t = 1024)]
    max_sql_kb: usize,
    /// Serve over TLS with this certificate chain (PEM); needs --tls-key.
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The TLS certificate's private key (PEM).
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Run every query on a Ballista cluster (`regrpo cluster`) at df://HOST:PORT.
    #[arg(long, value_name = "df://HOST:PORT")]
    cluster: Option<String>,
}

pub async fn run(a: Args) -> Result<()> {
    let token = std::fs::read_to_string(&a.token_file)
        .with_context(|| format!("reading the token file {}", a.token_file.display()))?
        .trim()
        .to_string();
    if token.len() < 8 {
        bail!("{}: the token must be at least 8 characters", a.token_file.display());
    }
    let repo = Repository::open(&a.dir).await?;
    let at = At::from_option(a.snapshot.as_deref());
    let session = Session::open_on(&repo, at, a.cluster.as_deref()).await?;
    let versions: Vec<String> = session.versions().iter().map(|(t, v)| format!("{t}@{v}")).collect();
    let tls = match (&a.tls_cert, &a.tls_key) {
        (Some(cert), Some(key)) => {
            let read = |p: &PathBuf, what: &str| {
                std::fs::read(p).with_context(|| format!("reading the TLS {what} {}", p.display()))
            };
            Some(Tls { cert_pem: read(cert, "certificate")?, key_pem: read(key, "key")? })
        }
        _ => None,
    };
    let scheme = if tls.is_some() { "grpc+tls" } else { "grpc" };
    let cfg = ServeConfig {
        memory_limit: a.memory_limit_mb << 20,
        timeout: Duration::from_secs(a.timeout_s),
        max_sql_bytes: a.max_sql_kb << 10,
        tls,
        ..ServeConfig::new(token)
    };
    let (listener, local) = FlightSqlServer::bind(a.addr).await.with_context(|| format!("binding {}", a.addr))?;
    eprintln!(
        "serving {} ({}) over Flight SQL at {scheme}://{local}{}, read-only; {} MiB and {}s per query; Ctrl-C stops",
        repo.location(),
        a.snapshot.map_or_else(|| format!("latest: {}", versions.join(" ")), |s| format!("snapshot {s}")),
        a.cluster.map(|c| format!(" (plans run on {c})")).unwrap_or_default(),
        a.memory_limit_mb,
        a.timeout_s
    );
    FlightSqlServer::new(session, cfg)
        .serve(listener, async {
            tokio::signal::ctrl_c().await.ok();
        })
        .await?;
    Ok(())
}
