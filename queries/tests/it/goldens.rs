//! SQL goldens (`tests/slt/*.slt`, sqllogictest format) over a deterministic repository.
//!
//! The repository is built here from the project's own fixtures (every input format) plus
//! seeded toolworld tasks run through the data engine, snapshotted as `s1`, then grown and
//! snapshotted as `s2`; the same inputs give the same rows on every machine.
//!
//! A record's SQL is either plain SQL (run at the latest versions) or a library call written
//! as on the command line: `regrpo query NAME [--param k=v]… [--snapshot S]`.
//!
//! The same goldens run again on a Ballista cluster started in this process (a scheduler and
//! an executor from `regrpo_queries::cluster`, on free loopback ports): a plan run there gives
//! the rows it gives locally. `explain.slt` is left out there (a cluster plan is another plan).
//!
//! Regenerate the expected results after an intended change with
//! `REGRPO_COMPLETE=1 cargo test -p regrpo-queries --test it goldens` and review the diff.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::DataType;
use arrow::util::display::{ArrayFormatter, FormatOptions};
use regrpo_datasets::{Repository, snapshot};
use regrpo_engine::{EngineConfig, ToolSuite};
use regrpo_formats::ingest::{self, Format, IngestOptions};
use regrpo_queries::{At, Session, library};
use sqllogictest::{DBOutput, DefaultColumnType};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

async fn engine_pass(repo: &Repository, tasks: usize, seed: u64) {
    regrpo_engine::toolworld::generate_into(repo, tasks, seed, 4, || {}).await.unwrap();
    let cfg = EngineConfig { seed, per_trajectory: 2, ..EngineConfig::default() };
    regrpo_engine::run::run(repo, &ToolSuite::builtin(), &cfg, None).await.unwrap();
}

/// The golden repository: fixtures of every format + 24 toolworld tasks (`s1`), then 8 more (`s2`).
async fn build_repository(dir: &Path) -> Repository {
    let repo = Repository::init(dir).await.unwrap();
    let f = |p: &str| workspace().join("fixtures").join(p);
    for (format, file) in [
        (Format::Regrpo, "regrpo/rot_sample.json"),
        (Format::Regrpo, "regrpo/clean_sample.json"),
        (Format::Mat, "mat/trajectories.json"),
        (Format::Bfcl, "bfcl/questions.json"),
        (Format::Gta, "gta/dataset.json"),
        (Format::Openai, "openai/chat.jsonl"),
    ] {
        ingest::ingest(&repo, format, &[f(file)], &IngestOptions::default()).await.unwrap();
    }
    engine_pass(&repo, 24, 11).await;
    snapshot::create(&repo, "s1", None).await.unwrap();
    engine_pass(&repo, 8, 12).await;
    snapshot::create(&repo, "s2", None).await.unwrap();
    repo
}

struct Db {
    repo: Repository,
    /// `df://HOST:PORT` where statements run on a cluster.
    cluster: Option<String>,
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct DbError(String);

fn err(e: impl std::fmt::Display) -> DbError {
    DbError(e.to_string())
}

/// A library call: name, parameters, snapshot.
type Call = (String, Vec<(String, String)>, Option<String>);

/// `regrpo query NAME --param k=v --snapshot S` → (name, params, snapshot).
fn parse_call(line: &str) -> Result<Call, DbError> {
    let mut words = line.split_whitespace().skip(2);
    let name = words.next().ok_or_else(|| err("regrpo query needs a NAME"))?.to_string();
    let (mut params, mut snap) = (Vec::new(), None);
    while let Some(flag) = words.next() {
        let value = words.next().ok_or_else(|| err(format!("{flag} needs a value")))?;
        match flag {
            "--param" | "-p" => {
                let (k, v) = value.split_once('=').ok_or_else(|| err("--param takes NAME=VALUE"))?;
                params.push((k.to_string(), v.to_string()));
            }
            "--snapshot" | "-s" => snap = Some(value.to_string()),
            _ => return Err(err(format!("unknown flag {flag}"))),
        }
    }
    Ok((name, params, snap))
}

fn column_type(t: &DataType) -> DefaultColumnType {
    if t.is_integer() {
        DefaultColumnType::Integer
    } else if t.is_floating() || matches!(t, DataType::Decimal128(..)) {
        DefaultColumnType::FloatingPoint
    } else {
        DefaultColumnType::Text
    }
}

/// Rows as text; newlines escaped, empty strings spelled `(empty)`, file paths of plans elided.
fn to_output(batches: &[RecordBatch], is_explain: bool) -> Result<DBOutput<DefaultColumnType>, DbError> {
    let Some(first) = batches.first() else { return Ok(DBOutput::Rows { types: vec![], rows: vec![] }) };
    let types = first.schema().fields().iter().map(|f| column_type(f.data_type())).collect();
    let opts = FormatOptions::default().with_null("NULL");
    let files = regex::Regex::new(r"file_groups=\{.*?\]\]\}").unwrap();
    let mut rows = Vec::new();
    for b in batches {
        let fmts: Vec<ArrayFormatter> = b
            .columns()
            .iter()
            .map(|c| ArrayFormatter::try_new(c.as_ref(), &opts))
            .collect::<Result<_, _>>()
            .map_err(err)?;
        for i in 0..b.num_rows() {
            let row: Vec<String> = fmts
                .iter()
                .map(|f| {
                    let v = f.value(i).to_string();
                    let v = if is_explain { files.replace_all(&v, "file_groups={…}").into_owned() } else { v };
                    if v.is_empty() { "(empty)".to_string() } else { v.replace('\n', "\\n") }
                })
                .collect();
            rows.push(row);
        }
    }
    Ok(DBOutput::Rows { types, rows })
}

#[async_trait::async_trait]
impl sqllogictest::AsyncDB for Db {
    type Error = DbError;
    type ColumnType = DefaultColumnType;

    async fn run(&mut self, sql: &str) -> Result<DBOutput<DefaultColumnType>, DbError> {
        let sql = sql.trim();
        let batches = if sql.starts_with("regrpo query ") {
            let (name, params, snap) = parse_call(sql)?;
            let q = library::find(&name).map_err(err)?;
            let at = At::from_option(snap.as_deref());
            let (_, df) = library::plan_on(&self.repo, at, self.cluster.as_deref(), q, &params).await.map_err(err)?;
            df.collect().await.map_err(err)?
        } else if let Some(url) = &self.cluster {
            Session::open_on(&self.repo, At::Latest, Some(url)).await.map_err(err)?.query(sql).await.map_err(err)?
        } else {
            // Fixed partitions: plans (EXPLAIN) do not depend on the machine's core count.
            let config = datafusion::prelude::SessionConfig::new().with_target_partitions(2);
            Session::open_with_config(&self.repo, At::Latest, config)
                .await
                .map_err(err)?
                .query(sql)
                .await
                .map_err(err)?
        };
        to_output(&batches, sql.to_ascii_uppercase().starts_with("EXPLAIN"))
    }

    async fn shutdown(&mut self) {}

    fn engine_name(&self) -> &str {
        "regrpo"
    }
}

/// Runs golden files; returns one line per file that differs.
async fn run_goldens(repo: &Arc<Repository>, files: &[PathBuf], cluster: Option<&str>, complete: bool) -> Vec<String> {
    let mut failures = Vec::new();
    for file in files {
        let (repo, url) = (Arc::clone(repo), cluster.map(str::to_string));
        let mut runner = sqllogictest::Runner::new(move || {
            let (repo, cluster) = ((*repo).clone(), url.clone());
            async move { Ok::<_, DbError>(Db { repo, cluster }) }
        });
        if complete {
            runner
                .update_test_file(
                    file,
                    " ",
                    sqllogictest::default_validator,
                    sqllogictest::default_normalizer,
                    sqllogictest::strict_column_validator,
                )
                .await
                .unwrap();
        } else if let Err(e) = runner.run_file_async(file).await {
            let on = cluster.map(|c| format!(" (on the cluster at {c})")).unwrap_or_default();
            failures.push(format!("{}{on}: {e}", file.display()));
        }
    }
    failures
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A scheduler and one executor in this process; returns the cluster's URL once it answers.
async fn start_cluster(repo: &Repository) -> String {
    use regrpo_queries::cluster::{ExecutorOptions, run_executor, run_scheduler};
    let scheduler: std::net::SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    tokio::spawn(run_scheduler(scheduler));
    let bind = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let executor = ExecutorOptions { scheduler, bind, grpc_port: free_port(), concurrent_tasks: 2, work_dir: None };
    tokio::spawn(run_executor(executor));
    let url = format!("df://{scheduler}");
    let started = std::time::Instant::now();
    loop {
        let answer =
            async { Session::open_on(repo, At::Latest, Some(&url)).await?.query("SELECT count(*) FROM rot").await };
        match answer.await {
            Ok(_) => return url,
            Err(e) if started.elapsed() > std::time::Duration::from_secs(60) => {
                panic!("the cluster did not answer: {e}")
            }
            Err(_) => tokio::time::sleep(std::time::Duration::from_millis(200)).await,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn named_queries_match_their_goldens_locally_and_on_a_cluster() {
    let dir = tempfile::tempdir().unwrap();
    let repo = Arc::new(build_repository(&dir.path().join("r")).await);
    let complete = std::env::var_os("REGRPO_COMPLETE").is_some();
    let slt_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/slt");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&slt_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "slt"))
        .collect();
    files.sort();
    // Every library query has a golden file of its name.
    for q in library::library() {
        assert!(files.iter().any(|f| f.file_stem().unwrap() == q.name.as_str()), "no golden for query `{}`", q.name);
    }
    let mut failures = run_goldens(&repo, &files, None, complete).await;
    if !complete {
        let url = start_cluster(&repo).await;
        // Left out there: EXPLAIN (another plan), and the two library queries with a UNION under
        // ORDER BY, which a cluster refuses (Ballista 55 answers some with no rows;
        // `cluster::check_plan`) — the refusal is checked instead.
        let refused = ["snapshot_diff", "unverified_and_rejected"];
        let on_cluster: Vec<PathBuf> = files
            .iter()
            .filter(|f| {
                let stem = f.file_stem().unwrap().to_str().unwrap();
                stem != "explain" && !refused.contains(&stem)
            })
            .cloned()
            .collect();
        failures.extend(run_goldens(&repo, &on_cluster, Some(&url), false).await);
        let given = [("base".to_string(), "s1".to_string()), ("head".to_string(), "s2".to_string())];
        for name in refused {
            let q = library::find(name).unwrap();
            let params = if name == "snapshot_diff" { &given[..] } else { &[] };
            let err = library::plan_on(&repo, At::Latest, Some(&url), q, params).await.err().expect("refused");
            assert!(err.to_string().contains("UNION under ORDER BY"), "{name}: {err}");
        }
    }
    assert!(failures.is_empty(), "goldens differ (REGRPO_COMPLETE=1 regenerates them):\n{}", failures.join("\n\n"));
}
