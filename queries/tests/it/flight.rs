//! The Flight SQL server end to end, with the `arrow-flight` crate's Flight SQL client.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use arrow::array::RecordBatch;
use arrow::util::pretty::pretty_format_batches;
use arrow_flight::sql::client::FlightSqlServiceClient;
use arrow_flight::sql::{CommandGetDbSchemas, CommandGetTables, SqlInfo};
use arrow_flight::sql::{ProstMessageExt, TicketStatementQuery};
use arrow_flight::{FlightInfo, Ticket};
use futures::TryStreamExt;
use prost::Message;
use regrpo_datasets::{Repository, snapshot};
use regrpo_formats::ingest::{self, Format, IngestOptions};
use regrpo_queries::flight::{FlightSqlServer, ServeConfig, Tls};
use regrpo_queries::{At, Session};
use tonic::transport::{Certificate, Channel, ClientTlsConfig};

const TOKEN: &str = "test-token-7f3a";

async fn repository(dir: &Path) -> Repository {
    let repo = Repository::init(dir).await.unwrap();
    let f = |p: &str| Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures").join(p);
    ingest::ingest(&repo, Format::Regrpo, &[f("regrpo/rot_sample.json")], &IngestOptions::default()).await.unwrap();
    snapshot::create(&repo, "s1", None).await.unwrap();
    // Rows after the snapshot: the server pinned at s1 must not see them.
    ingest::ingest(&repo, Format::Mat, &[f("mat/trajectories.json")], &IngestOptions::default()).await.unwrap();
    repo
}

/// Starts a server at snapshot s1; returns its address and a stopper.
async fn start(repo: &Repository, cfg: ServeConfig) -> (SocketAddr, tokio::sync::oneshot::Sender<()>) {
    let session = Session::open(repo, At::Snapshot("s1".into())).await.unwrap();
    let (listener, addr) = FlightSqlServer::bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(FlightSqlServer::new(session, cfg).serve(listener, async {
        stopped.await.ok();
    }));
    (addr, stop)
}

async fn client(addr: SocketAddr, token: Option<&str>) -> FlightSqlServiceClient<Channel> {
    let channel = Channel::from_shared(format!("http://{addr}")).unwrap().connect().await.unwrap();
    let mut c = FlightSqlServiceClient::new(channel);
    if let Some(t) = token {
        c.set_token(t.to_string());
    }
    c
}

async fn fetch(c: &mut FlightSqlServiceClient<Channel>, info: FlightInfo) -> Result<Vec<RecordBatch>, String> {
    let mut out = Vec::new();
    for ep in info.endpoint {
        let stream = c.do_get(ep.ticket.unwrap()).await.map_err(|e| e.to_string())?;
        out.extend(stream.try_collect::<Vec<_>>().await.map_err(|e| e.to_string())?);
    }
    Ok(out)
}

async fn run(c: &mut FlightSqlServiceClient<Channel>, sql: &str) -> Result<Vec<RecordBatch>, String> {
    let info = c.execute(sql.to_string(), None).await.map_err(|e| e.to_string())?;
    fetch(c, info).await
}

fn text(batches: &[RecordBatch]) -> String {
    pretty_format_batches(batches).unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn flight_sql_serves_a_snapshot_read_only_to_authenticated_clients() {
    let dir = tempfile::tempdir().unwrap();
    let repo = repository(&dir.path().join("r")).await;
    let (addr, stop) = start(&repo, ServeConfig::new(TOKEN)).await;

    // No token, a wrong token: refused before anything runs.
    for token in [None, Some("wrong")] {
        let e = run(&mut client(addr, token).await, "SELECT 1").await.unwrap_err();
        assert!(e.contains("authentication") && e.to_lowercase().contains("bearer"), "{token:?}: {e}");
    }

    // A query's result equals the same query through a session at the same snapshot.
    let mut c = client(addr, Some(TOKEN)).await;
    let sql = "SELECT error_type, count(*) AS n, count(DISTINCT trajectory_id) AS t FROM rot GROUP BY 1 ORDER BY 1";
    let local = Session::open(&repo, At::Snapshot("s1".into())).await.unwrap().query(sql).await.unwrap();
    assert_eq!(text(&run(&mut c, sql).await.unwrap()), text(&local));
    let n = run(&mut c, "SELECT count(*) FROM trajectories").await.unwrap();
    assert_eq!(
        text(&n),
        text(
            &Session::open(&repo, At::Snapshot("s1".into()))
                .await
                .unwrap()
                .query("SELECT count(*) FROM trajectories")
                .await
                .unwrap()
        )
    );
    assert!(text(&n).contains("| 4 "), "pinned at s1: {}", text(&n));

    // Writes of every kind are refused, and the table is unchanged afterwards.
    for write in [
        "CREATE TABLE t AS SELECT 1",
        "DROP TABLE rot",
        "INSERT INTO rot (rot_id) VALUES ('x')",
        "COPY (SELECT 1) TO '/tmp/regrpo-flight-copy.csv'",
        "SET datafusion.execution.batch_size = 1",
    ] {
        let e = run(&mut c, write).await.unwrap_err();
        assert!(e.contains("read-only"), "{write}: {e}");
    }
    let e = c.execute_update("DELETE FROM rot".into(), None).await.unwrap_err().to_string();
    assert!(e.contains("read-only"), "{e}");
    assert_eq!(text(&run(&mut c, sql).await.unwrap()), text(&local));

    // The metadata calls JDBC/ADBC clients make first.
    let info = c.get_sql_info(vec![SqlInfo::FlightSqlServerName, SqlInfo::FlightSqlServerReadOnly]).await.unwrap();
    let rows = text(&fetch(&mut c, info).await.unwrap());
    assert!(rows.contains("regrpo") && rows.contains("true"), "{rows}");
    let catalogs = text(
        &{
            let info = c.get_catalogs().await.unwrap();
            fetch(&mut c, info)
        }
        .await
        .unwrap(),
    );
    assert!(catalogs.contains("regrpo"), "{catalogs}");
    let schemas = CommandGetDbSchemas { catalog: None, db_schema_filter_pattern: None };
    let schemas = text(
        &{
            let info = c.get_db_schemas(schemas).await.unwrap();
            fetch(&mut c, info)
        }
        .await
        .unwrap(),
    );
    assert!(schemas.contains("public"), "{schemas}");
    let tables = CommandGetTables {
        catalog: Some("regrpo".into()),
        db_schema_filter_pattern: None,
        table_name_filter_pattern: Some("r%".into()),
        table_types: vec![],
        include_schema: true,
    };
    let tables = {
        let info = c.get_tables(tables).await.unwrap();
        fetch(&mut c, info)
    }
    .await
    .unwrap();
    let listed = text(&tables);
    for t in ["rot", "rejects", "rollouts", "runs"] {
        assert!(listed.contains(&format!("| {t} ")), "{t} missing: {listed}");
    }
    assert!(!listed.contains("| trajectories "), "the name filter applies: {listed}");
    let types = text(
        &{
            let info = c.get_table_types().await.unwrap();
            fetch(&mut c, info)
        }
        .await
        .unwrap(),
    );
    assert!(types.contains("TABLE"), "{types}");
    let xdbc = {
        let info = c.get_xdbc_type_info(Default::default()).await.unwrap();
        fetch(&mut c, info)
    }
    .await
    .unwrap();
    assert!(text(&xdbc).contains("VARCHAR"), "{}", text(&xdbc));

    // Prepared statements.
    let mut prepared = c.prepare("SELECT count(*) AS n FROM rot".into(), None).await.unwrap();
    let info = prepared.execute().await.unwrap();
    assert_eq!(
        text(&fetch(&mut c, info).await.unwrap()),
        text(
            &Session::open(&repo, At::Snapshot("s1".into()))
                .await
                .unwrap()
                .query("SELECT count(*) AS n FROM rot")
                .await
                .unwrap()
        )
    );
    prepared.close().await.unwrap();

    // 16 clients at once, each with its own query, each gets its own correct answer.
    let session = Session::open(&repo, At::Snapshot("s1".into())).await.unwrap();
    let mut expected = Vec::new();
    let queries: Vec<String> = (0..16)
        .map(|i| {
            format!(
                "SELECT {i} AS client, count(*) AS n, sum(step_index) + {i} AS s FROM rot WHERE step_index >= {}",
                i % 3
            )
        })
        .collect();
    for q in &queries {
        expected.push(text(&session.query(q).await.unwrap()));
    }
    let tasks: Vec<_> = queries
        .into_iter()
        .map(|q| {
            tokio::spawn(async move {
                let mut c = client(addr, Some(TOKEN)).await;
                text(&run(&mut c, &q).await.unwrap())
            })
        })
        .collect();
    for (task, want) in tasks.into_iter().zip(expected) {
        assert_eq!(task.await.unwrap(), want);
    }
    stop.send(()).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queries_past_the_deadline_or_the_memory_limit_fail_and_the_server_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let repo = repository(&dir.path().join("r")).await;
    let cfg = ServeConfig { memory_limit: 4 << 20, timeout: Duration::from_millis(300), ..ServeConfig::new(TOKEN) };
    let (addr, stop) = start(&repo, cfg).await;
    let mut c = client(addr, Some(TOKEN)).await;
    let e = run(&mut c, "SELECT count(*) FROM generate_series(1, 20000000000) a").await.unwrap_err();
    assert!(e.contains("longer than"), "{e}");
    let e = run(&mut c, "SELECT v, count(*) FROM generate_series(1, 50000000) t(v) GROUP BY v ORDER BY 2 DESC LIMIT 1")
        .await
        .unwrap_err();
    assert!(e.to_lowercase().contains("resources exhausted") || e.contains("longer than"), "{e}");
    assert!(text(&run(&mut c, "SELECT count(*) FROM rot").await.unwrap()).contains('4'));
    stop.send(()).unwrap();
}

/// A statement's ticket, decoded: the handle the server wrote.
fn handle_of(info: &FlightInfo) -> String {
    let bytes = info.endpoint[0].ticket.as_ref().unwrap().ticket.clone();
    let any = arrow_flight::sql::Any::decode(bytes).unwrap();
    let t: TicketStatementQuery = any.unpack().unwrap().unwrap();
    String::from_utf8(t.statement_handle.to_vec()).unwrap()
}

fn ticket(handle: &str) -> Ticket {
    Ticket::new(TicketStatementQuery { statement_handle: handle.to_string().into() }.as_any().encode_to_vec())
}

async fn get(c: &mut FlightSqlServiceClient<Channel>, t: Ticket) -> String {
    text(&c.do_get(t).await.unwrap().try_collect::<Vec<_>>().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ticket_runs_the_statement_it_names_and_queries_past_the_limit_wait_their_turn() {
    let dir = tempfile::tempdir().unwrap();
    let repo = repository(&dir.path().join("r")).await;
    let (addr, stop) = start(&repo, ServeConfig { max_concurrent_queries: 1, ..ServeConfig::new(TOKEN) }).await;
    let mut c = client(addr, Some(TOKEN)).await;
    let info = c.execute("SELECT count(*) AS n FROM rot".into(), None).await.unwrap();
    let handle = handle_of(&info);
    // The first DoGet takes the plan GetFlightInfo made; a second one plans the SQL again.
    let first = get(&mut c, ticket(&handle)).await;
    assert!(first.contains("| 4 |"), "{first}");
    assert_eq!(get(&mut c, ticket(&handle)).await, first);
    // A handle naming a cached plan of another statement runs its own statement.
    let other = handle_of(&c.execute("SELECT count(*) AS n FROM rot".into(), None).await.unwrap());
    let (id, _) = other.strip_prefix("regrpo-plan:").unwrap().split_once(':').unwrap();
    assert!(get(&mut c, ticket(&format!("regrpo-plan:{id}:SELECT 41 + 1 AS x"))).await.contains("42"));
    assert_eq!(get(&mut c, ticket(&other)).await, first, "the plan was not taken by the other statement");

    // One query at a time: eight clients queue and each gets its own answer.
    let tasks: Vec<_> = (0..8)
        .map(|i| {
            tokio::spawn(async move {
                let mut c = client(addr, Some(TOKEN)).await;
                text(&run(&mut c, &format!("SELECT {i} * 1000 + count(*) AS v FROM rot")).await.unwrap())
            })
        })
        .collect();
    for (i, t) in tasks.into_iter().enumerate() {
        assert!(t.await.unwrap().contains(&format!("{}", i * 1000 + 4)));
    }
    stop.send(()).unwrap();
}

fn tls_fixture(name: &str) -> Vec<u8> {
    std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/tls").join(name)).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_tls_a_client_that_trusts_the_ca_is_answered_and_others_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let repo = repository(&dir.path().join("r")).await;
    let tls = Tls { cert_pem: tls_fixture("server.pem"), key_pem: tls_fixture("server.key") };
    let (addr, stop) = start(&repo, ServeConfig { tls: Some(tls), ..ServeConfig::new(TOKEN) }).await;
    let over_tls = |ca: Option<Vec<u8>>| async move {
        let mut cfg = ClientTlsConfig::new().domain_name("localhost");
        if let Some(ca) = ca {
            cfg = cfg.ca_certificate(Certificate::from_pem(ca));
        }
        let channel = Channel::from_shared(format!("https://{addr}")).unwrap().tls_config(cfg).unwrap();
        let mut c = FlightSqlServiceClient::new(channel.connect().await.map_err(|e| format!("{e:?}"))?);
        c.set_token(TOKEN.into());
        run(&mut c, "SELECT count(*) FROM trajectories").await
    };
    let n = over_tls(Some(tls_fixture("ca.pem"))).await.unwrap();
    assert!(text(&n).contains("| 4 "), "{}", text(&n));
    // A client that does not trust the CA, and one that speaks plaintext, get an error and no rows.
    assert!(over_tls(None).await.is_err());
    let plain = match Channel::from_shared(format!("http://{addr}")).unwrap().connect().await {
        Ok(channel) => {
            let mut c = FlightSqlServiceClient::new(channel);
            c.set_token(TOKEN.into());
            run(&mut c, "SELECT 1").await.map(|_| ())
        }
        Err(e) => Err(e.to_string()),
    };
    assert!(plain.is_err());
    // The server goes on.
    assert!(over_tls(Some(tls_fixture("ca.pem"))).await.is_ok());
    stop.send(()).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_oversized_and_stalled_requests_get_errors_and_never_hold_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let repo = repository(&dir.path().join("r")).await;
    let cfg = ServeConfig {
        max_concurrent_queries: 1,
        timeout: Duration::from_secs(2),
        max_sql_bytes: 4096,
        ..ServeConfig::new(TOKEN)
    };
    let (addr, stop) = start(&repo, cfg).await;
    let mut c = client(addr, Some(TOKEN)).await;
    // Tickets that are not Flight SQL commands, not UTF-8, or name no statement.
    for bytes in [b"garbage".to_vec(), vec![0xff; 64], Vec::new()] {
        let e = c.do_get(Ticket::new(bytes.clone())).await.map(drop);
        assert!(e.is_err(), "{bytes:?}");
    }
    let e = c.do_get(ticket("regrpo-plan:not-a-number")).await.map(drop);
    assert!(e.is_err());
    let bad = Ticket::new(TicketStatementQuery { statement_handle: vec![0xc3, 0x28].into() }.as_any().encode_to_vec());
    assert!(c.do_get(bad).await.unwrap_err().to_string().contains("UTF-8"));
    // A statement over the limit is refused before it is parsed.
    let long = format!("SELECT 1 {}", " ".repeat(5000));
    let e = run(&mut c, &long).await.unwrap_err();
    assert!(e.contains("at most 4096"), "{e}");
    // An unknown command (an Any of a type the server does not know).
    let unknown =
        arrow_flight::FlightDescriptor::new_cmd(prost_types_any("type.googleapis.com/regrpo.NoSuchCommand", b"x"));
    let mut req = tonic::Request::new(unknown);
    req.metadata_mut().insert("authorization", format!("Bearer {TOKEN}").parse().unwrap());
    let e = c.inner_mut().get_flight_info(req).await.unwrap_err();
    assert_ne!(e.code(), tonic::Code::Unauthenticated, "{e}");

    // A client that starts a large result and stops reading keeps the one turn only until the
    // deadline: another client's query is answered after it, and the stalled one, reading at
    // last, gets the batches it had and then DeadlineExceeded (never a result cut short).
    let info =
        c.execute("SELECT v, repeat('x', 1000) AS s FROM generate_series(1, 200000) t(v)".into(), None).await.unwrap();
    let mut stalled = c.do_get(info.endpoint[0].ticket.clone().unwrap()).await.unwrap();
    let first = stalled.try_next().await.unwrap();
    assert!(first.is_some());
    let started = std::time::Instant::now();
    let mut other = client(addr, Some(TOKEN)).await;
    assert!(text(&run(&mut other, "SELECT count(*) FROM rot").await.unwrap()).contains('4'));
    assert!(started.elapsed() < Duration::from_secs(10), "{:?}", started.elapsed());
    let mut rows = first.map_or(0, |b| b.num_rows());
    let end = loop {
        match stalled.try_next().await {
            Ok(Some(b)) => rows += b.num_rows(),
            Ok(None) => break None,
            Err(e) => break Some(e.to_string()),
        }
    };
    assert!(rows < 200_000, "the stalled query was not cut off");
    assert!(end.as_deref().is_some_and(|e| e.contains("longer than")), "{end:?} after {rows} rows");
    stop.send(()).unwrap();
}

/// A `google.protobuf.Any` of `type_url` wrapping `value`, encoded.
fn prost_types_any(type_url: &str, value: &[u8]) -> Vec<u8> {
    arrow_flight::sql::Any { type_url: type_url.into(), value: value.to_vec().into() }.encode_to_vec()
}

/// Under a bounded load — 64 clients at once for a few seconds, mixing the named queries with
/// queries past the memory limit and past the deadline — every answer is right or a clean error
/// of the kind its query asked for, and the server answers afterwards. (The timed version with
/// p50 / p99 and the server's RSS is `bench/serve_load.sh`.)
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sixty_four_clients_mixing_good_and_abusive_queries_get_right_answers_or_clean_errors() {
    let dir = tempfile::tempdir().unwrap();
    let repo = repository(&dir.path().join("r")).await;
    // 64 MiB: the named queries' sorts fit (DataFusion reserves 10 MiB for a sort's merge), the
    // abusive group-by does not.
    let cfg = ServeConfig { memory_limit: 64 << 20, timeout: Duration::from_secs(2), ..ServeConfig::new(TOKEN) };
    let (addr, stop) = start(&repo, cfg).await;
    let good = [
        "SELECT error_type, count(*) AS n FROM rot GROUP BY 1 ORDER BY 1",
        "SELECT count(*) AS n FROM trajectories",
        "SELECT tool, count(*) AS n FROM rot GROUP BY 1 ORDER BY 1",
    ];
    let local = Session::open(&repo, At::Snapshot("s1".into())).await.unwrap();
    let mut want = Vec::new();
    for q in good {
        want.push(text(&local.query(q).await.unwrap()));
    }
    let want = std::sync::Arc::new(want);
    let until = std::time::Instant::now() + Duration::from_secs(4);
    let tasks: Vec<_> = (0..64)
        .map(|i| {
            let want = want.clone();
            tokio::spawn(async move {
                let mut c = client(addr, Some(TOKEN)).await;
                let (mut right, mut refused) = (0, 0);
                let mut k = i;
                while std::time::Instant::now() < until {
                    k += 1;
                    match k % 8 {
                        6 => {
                            let e = run(&mut c, "SELECT v, count(*) FROM generate_series(1, 50000000) t(v) GROUP BY v ORDER BY 2 DESC LIMIT 1").await.unwrap_err();
                            assert!(e.to_lowercase().contains("resources exhausted") || e.contains("longer than"), "{e}");
                            refused += 1;
                        }
                        7 => {
                            let e = run(&mut c, "SELECT count(*) FROM generate_series(1, 20000000000) a").await.unwrap_err();
                            assert!(e.contains("longer than"), "{e}");
                            refused += 1;
                        }
                        j => {
                            let q = j % 3;
                            match run(&mut c, good[q]).await {
                                Ok(b) => {
                                    assert_eq!(text(&b), want[q]);
                                    right += 1;
                                }
                                // Waiting its turn behind the abusive queries may pass the deadline.
                                Err(e) => {
                                    assert!(e.contains("longer than"), "{e}");
                                    refused += 1;
                                }
                            }
                        }
                    }
                }
                (right, refused)
            })
        })
        .collect();
    let (mut right, mut refused) = (0, 0);
    for t in tasks {
        let (r, e) = t.await.unwrap();
        right += r;
        refused += e;
    }
    assert!(right > 0 && refused > 0, "{right} right, {refused} refused");
    let mut c = client(addr, Some(TOKEN)).await;
    assert_eq!(text(&run(&mut c, good[1]).await.unwrap()), want[1]);
    stop.send(()).unwrap();
}
