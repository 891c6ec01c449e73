//! Load on a running `regrpo serve`, for `bench/serve_load.sh`: `CLIENTS` clients (each its own
//! connection, over TLS when given the CA) for `SECONDS` seconds, each running in turn the
//! library's named queries that take no parameters and, two queries in eight, an abusive one: a
//! hash join past the server's memory limit, and a scan past its deadline. Every answer is checked:
//! a named query's rows against what one client alone got before the load, an abusive query's
//! error against the limit it should hit. Prints one JSON line: latency p50 / p99 per kind,
//! queries/s, and errors by kind (a wrong answer or an unexpected error fails the run).
//!
//!     cargo run --release --example serve_load -- ADDR TOKEN CLIENTS SECONDS [CA_PEM] [--no-abuse]
//!
//! `--no-abuse` runs the named queries only: the latency of the same load without abusers.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use arrow::array::RecordBatch;
use arrow::util::pretty::pretty_format_batches;
use arrow_flight::sql::client::FlightSqlServiceClient;
use futures::TryStreamExt;
use serde_json::json;
use tonic::transport::{Certificate, Channel, ClientTlsConfig};

/// Past the memory limit of a server run with `--max-query-memory 64` (or its deadline): a hash
/// join's build side of 20M rows, which DataFusion cannot spill (a group-by spills to disk and,
/// in a release build, finishes within the deadline).
const OVER_MEMORY: &str =
    "SELECT count(*) FROM generate_series(1, 20000000) a(x) JOIN generate_series(1, 20000000) b(y) ON x = y";
/// Past any deadline the bench sets.
const OVER_TIME: &str = "SELECT count(*) FROM generate_series(1, 20000000000) a";

async fn connect(addr: &str, token: &str, ca: Option<&[u8]>) -> anyhow::Result<FlightSqlServiceClient<Channel>> {
    let channel = match ca {
        Some(ca) => {
            let tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca)).domain_name("localhost");
            Channel::from_shared(format!("https://{addr}"))?.tls_config(tls)?.connect().await?
        }
        None => Channel::from_shared(format!("http://{addr}"))?.connect().await?,
    };
    let mut c = FlightSqlServiceClient::new(channel);
    c.set_token(token.to_string());
    Ok(c)
}

/// A statement's answer as text, or the server's error.
async fn answer(c: &mut FlightSqlServiceClient<Channel>, sql: &str) -> Result<String, String> {
    let info = c.execute(sql.to_string(), None).await.map_err(|e| e.to_string())?;
    let mut batches: Vec<RecordBatch> = Vec::new();
    for ep in info.endpoint {
        let ticket = ep.ticket.ok_or("an endpoint without a ticket")?;
        batches.extend(
            c.do_get(ticket)
                .await
                .map_err(|e| e.to_string())?
                .try_collect::<Vec<_>>()
                .await
                .map_err(|e| e.to_string())?,
        );
    }
    Ok(pretty_format_batches(&batches).map_err(|e| e.to_string())?.to_string())
}

/// What kind of clean error this is, or `None` for one the server should not give.
fn error_kind(e: &str) -> Option<&'static str> {
    if e.to_lowercase().contains("resources exhausted") {
        Some("memory_limit")
    } else if e.contains("longer than") {
        Some("deadline")
    } else {
        None
    }
}

fn pct(sorted: &[Duration], p: f64) -> Option<f64> {
    (!sorted.is_empty()).then(|| sorted[((sorted.len() as f64 - 1.0) * p).round() as usize].as_secs_f64())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [addr, token, clients, seconds, rest @ ..] = args.as_slice() else {
        bail!("usage: serve_load ADDR TOKEN CLIENTS SECONDS [CA_PEM] [--no-abuse]");
    };
    let clients: usize = clients.parse().context("CLIENTS")?;
    let seconds: f64 = seconds.parse().context("SECONDS")?;
    let abuse = !rest.iter().any(|a| a == "--no-abuse");
    let ca = match rest.iter().find(|a| !a.starts_with("--")) {
        Some(p) => Some(std::fs::read(p).with_context(|| format!("reading {p}"))?),
        None => None,
    };
    let named: Vec<(String, String)> = regrpo_queries::library::library()
        .iter()
        .filter(|q| q.params.is_empty())
        .map(|q| (q.name.clone(), q.sql.clone()))
        .collect();
    // What one client alone gets: the right answers.
    let mut c = connect(addr, token, ca.as_deref()).await?;
    let mut want = Vec::new();
    for (name, sql) in &named {
        want.push(answer(&mut c, sql).await.map_err(|e| anyhow::anyhow!("{name} alone: {e}"))?);
    }
    let (named, want) = (Arc::new(named), Arc::new(want));
    let ca = Arc::new(ca);
    let until = Instant::now() + Duration::from_secs_f64(seconds);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for id in 0..clients {
        let (named, want, ca, addr, token) = (named.clone(), want.clone(), ca.clone(), addr.clone(), token.clone());
        tasks.push(tokio::spawn(async move {
            let mut c = connect(&addr, &token, ca.as_deref()).await?;
            // (kind of query, latency, outcome: "ok" or the error's kind)
            let mut seen: Vec<(&'static str, Duration, &'static str)> = Vec::new();
            let mut k = id;
            while Instant::now() < until {
                k += 1;
                let (kind, sql, expect) = match if abuse { k % 8 } else { k % 6 } {
                    6 => ("over_memory", OVER_MEMORY, None),
                    7 => ("over_time", OVER_TIME, None),
                    j => {
                        let q = j % named.len();
                        ("named", named[q].1.as_str(), Some(&want[q]))
                    }
                };
                let t = Instant::now();
                let got = answer(&mut c, sql).await;
                let outcome = match (got, expect) {
                    (Ok(text), Some(want)) if &text == want => "ok",
                    (Ok(text), Some(_)) => bail!("client {id}: a wrong answer to {sql}: {text}"),
                    (Ok(_), None) => bail!("client {id}: {kind} was answered"),
                    (Err(e), _) => error_kind(&e).ok_or_else(|| anyhow::anyhow!("client {id}: {kind}: {e}"))?,
                };
                seen.push((kind, t.elapsed(), outcome));
            }
            anyhow::Ok(seen)
        }));
    }
    let mut by_kind: BTreeMap<&str, Vec<Duration>> = BTreeMap::new();
    let mut outcomes: BTreeMap<String, usize> = BTreeMap::new();
    for t in tasks {
        for (kind, lat, outcome) in t.await?? {
            by_kind.entry(kind).or_default().push(lat);
            *outcomes.entry(format!("{kind}:{outcome}")).or_default() += 1;
        }
    }
    let wall = started.elapsed().as_secs_f64();
    let total: usize = by_kind.values().map(Vec::len).sum();
    let latency: BTreeMap<&str, serde_json::Value> = by_kind
        .iter_mut()
        .map(|(k, v)| {
            v.sort();
            (*k, json!({"n": v.len(), "p50_s": pct(v, 0.5), "p99_s": pct(v, 0.99), "max_s": pct(v, 1.0)}))
        })
        .collect();
    println!(
        "{}",
        json!({"clients": clients, "seconds": wall, "queries": total, "queries_per_s": total as f64 / wall,
               "tls": ca.is_some(), "abusive_queries": abuse, "named_queries": named.iter().map(|(n, _)| n).collect::<Vec<_>>(),
               "latency": latency, "outcomes": outcomes})
    );
    Ok(())
}
