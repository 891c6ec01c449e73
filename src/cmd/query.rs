//! `regrpo query`: the named query library (`queries/sql/*.sql`), parameters bound.

use std::path::PathBuf;

use anyhow::Result;
use regrpo_datasets::Repository;
use regrpo_queries::{At, OutputFormat};

/// Run a query of the named library (`regrpo query --list` shows them), parameters bound.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The dataset repository.
    #[arg(required_unless_present = "list")]
    dir: Option<PathBuf>,
    /// The query's name.
    #[arg(required_unless_present = "list")]
    name: Option<String>,
    /// A parameter, `name=value` (repeatable); undeclared parameters are refused.
    #[arg(long = "param", short = 'p', value_name = "K=V", value_parser = param)]
    params: Vec<(String, String)>,
    /// Read the tables as this snapshot pinned them (default: latest).
    #[arg(long, short)]
    snapshot: Option<String>,
    /// List the queries, their descriptions and parameters.
    #[arg(long)]
    list: bool,
    /// Print the query's SQL instead of running it.
    #[arg(long)]
    show_sql: bool,
    #[arg(long, short, value_enum, default_value_t = OutputFormat::Table)]
    format: OutputFormat,
    /// Write to this file instead of stdout (required for parquet).
    #[arg(long, short)]
    out: Option<PathBuf>,
    /// Run on a Ballista cluster (`regrpo cluster`) at df://HOST:PORT instead of in this process.
    #[arg(long, value_name = "df://HOST:PORT")]
    cluster: Option<String>,
}

fn param(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.trim().to_string(), v.to_string()))
        .ok_or_else(|| format!("`{s}`: expected NAME=VALUE"))
}

pub async fn run(a: Args) -> Result<()> {
    let (dir, name) = match (a.list, a.dir, a.name) {
        (true, _, _) => {
            list();
            return Ok(());
        }
        (false, Some(dir), Some(name)) => (dir, name),
        _ => unreachable!("clap requires DIR and NAME without --list"),
    };
    let q = regrpo_queries::library::find(&name)?;
    if a.show_sql {
        q.bind(&a.params)?;
        println!("{}", q.sql);
        return Ok(());
    }
    let repo = Repository::open(&dir).await?;
    let at = At::from_option(a.snapshot.as_deref());
    let (_, df) = regrpo_queries::library::plan_on(&repo, at, a.cluster.as_deref(), q, &a.params).await?;
    crate::output::emit(&df.collect().await.map_err(regrpo_queries::Error::from)?, a.format, a.out.as_deref())
}

/// `regrpo query --list`.
fn list() {
    for q in regrpo_queries::library::library() {
        println!("{}\n    {}", q.name, q.description);
        for p in &q.params {
            let default = p.default.as_ref().map_or("required".to_string(), |d| format!("default {d}"));
            println!("    --param {}=<{}>  ({default}) {}", p.name, p.ty.as_str(), p.help);
        }
    }
}
