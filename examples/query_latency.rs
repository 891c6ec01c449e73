//! Query latency inside one process, for `bench/queries.sh`:
//!
//! 1. **In-process**: the session is opened once (Delta log replay, timed on its own), then each
//!    query runs `RUNS` times through `Session::query` (plan + scan + collect); the best and
//!    median are printed — the figure to hold against DuckDB's in-process time on the same files.
//! 2. **Flight SQL under load**: the same session served by `FlightSqlServer` on a local port;
//!    one client alone, then `CLIENTS` concurrent clients (each its own connection) run the three
//!    queries round-robin, `PER_CLIENT` each; latency (execute + fetch every batch) p50/p95/p99
//!    and queries/s, with every answer's row count checked against the in-process one.
//!
//!     cargo run --release --example query_latency -- DIR [RUNS] [CLIENTS] [PER_CLIENT]
//!
//! Prints JSON lines.

/// The binary's allocator, so in-process figures are the binary's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::RecordBatch;
use arrow_flight::sql::client::FlightSqlServiceClient;
use futures::TryStreamExt;
use regrpo_datasets::Repository;
use regrpo_queries::flight::{FlightSqlServer, ServeConfig};
use regrpo_queries::{At, Session};
use serde_json::json;
use tonic::transport::Channel;

const QUERIES: [(&str, &str); 3] = [
    ("by_type", "SELECT error_type, count(*) AS n FROM near_misses GROUP BY error_type ORDER BY n DESC"),
    ("tool_x_type", "SELECT tool, error_type, count(*) AS n FROM rot GROUP BY tool, error_type ORDER BY tool, n DESC"),
    ("rare_filter", "SELECT near_miss_id, tool, execution.text FROM near_misses WHERE error_type = 'NonCommit'"),
];

fn rows(batches: &[RecordBatch]) -> usize {
    batches.iter().map(RecordBatch::num_rows).sum()
}

fn pct(sorted: &[Duration], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize].as_secs_f64()
}

async fn flight_query(c: &mut FlightSqlServiceClient<Channel>, sql: &str) -> anyhow::Result<usize> {
    let info = c.execute(sql.to_string(), None).await?;
    let mut n = 0;
    for ep in info.endpoint {
        let ticket = ep.ticket.ok_or_else(|| anyhow::anyhow!("endpoint without a ticket"))?;
        let batches: Vec<RecordBatch> = c.do_get(ticket).await?.try_collect().await?;
        n += rows(&batches);
    }
    Ok(n)
}

/// `clients` concurrent clients, `per_client` queries each (round-robin over QUERIES).
async fn load(
    addr: std::net::SocketAddr,
    clients: usize,
    per_client: usize,
    expected: Arc<Vec<usize>>,
) -> anyhow::Result<(Vec<Duration>, Duration)> {
    let start = Instant::now();
    let mut tasks = Vec::new();
    for id in 0..clients {
        let expected = Arc::clone(&expected);
        tasks.push(tokio::spawn(async move {
            let channel = Channel::from_shared(format!("http://{addr}"))?.connect().await?;
            let mut c = FlightSqlServiceClient::new(channel);
            c.set_token("bench".into());
            let mut lat = Vec::new();
            for k in 0..per_client {
                let q = (id + k) % QUERIES.len();
                let t = Instant::now();
                let n = flight_query(&mut c, QUERIES[q].1).await?;
                lat.push(t.elapsed());
                anyhow::ensure!(
                    n == expected[q],
                    "client {id}: {} gave {n} rows, expected {}",
                    QUERIES[q].0,
                    expected[q]
                );
            }
            anyhow::Ok(lat)
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await??);
    }
    all.sort();
    Ok((all, start.elapsed()))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let dir = args.first().ok_or_else(|| anyhow::anyhow!("usage: query_latency DIR [RUNS] [CLIENTS] [PER_CLIENT]"))?;
    let num = |i: usize, d: usize| args.get(i).map_or(Ok(d), |s| s.parse::<usize>());
    let (runs, clients, per_client) = (num(1, 5)?, num(2, 16)?, num(3, 6)?);

    let t = Instant::now();
    let repo = Repository::open(dir).await?;
    let session = Session::open(&repo, At::Latest).await?;
    println!("{}", json!({"phase": "open", "seconds": t.elapsed().as_secs_f64()}));

    // The same files as a plain Parquet listing (no Delta provider): what the table provider
    // adds per query, for the report.
    let raw = datafusion::prelude::SessionContext::new();
    for table in ["near_misses", "rot"] {
        let dir = repo.table_path(table).ok_or_else(|| anyhow::anyhow!("the bench reads a local repository"))?;
        raw.register_parquet(table, dir.to_string_lossy().as_ref(), datafusion::prelude::ParquetReadOptions::default())
            .await?;
    }
    for (name, sql) in QUERIES {
        let mut times = Vec::new();
        for _ in 0..runs {
            let t = Instant::now();
            raw.sql(sql).await?.collect().await?;
            times.push(t.elapsed());
        }
        times.sort();
        println!(
            "{}",
            json!({"phase": "raw_parquet", "query": name, "best_s": times[0].as_secs_f64(),
                   "median_s": times[times.len() / 2].as_secs_f64()})
        );
    }

    let mut expected = Vec::new();
    for (name, sql) in QUERIES {
        let mut times = Vec::new();
        let mut n = 0;
        for _ in 0..runs {
            let t = Instant::now();
            n = rows(&session.query(sql).await?);
            times.push(t.elapsed());
        }
        times.sort();
        expected.push(n);
        println!(
            "{}",
            json!({"phase": "in_process", "query": name, "rows": n, "runs": runs,
                   "best_s": times[0].as_secs_f64(), "median_s": times[times.len() / 2].as_secs_f64()})
        );
    }

    let (listener, addr) = FlightSqlServer::bind("127.0.0.1:0".parse()?).await?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(FlightSqlServer::new(session, ServeConfig::new("bench")).serve(listener, async {
        stopped.await.ok();
    }));
    let expected = Arc::new(expected);
    for c in [1, clients] {
        let (lat, wall) = load(addr, c, per_client, Arc::clone(&expected)).await?;
        println!(
            "{}",
            json!({"phase": "flight_sql", "clients": c, "queries": lat.len(),
                   "p50_s": pct(&lat, 0.5), "p95_s": pct(&lat, 0.95), "p99_s": pct(&lat, 0.99),
                   "max_s": lat.last().map(Duration::as_secs_f64),
                   "queries_per_s": lat.len() as f64 / wall.as_secs_f64()})
        );
    }
    stop.send(()).ok();
    server.await??;
    Ok(())
}
