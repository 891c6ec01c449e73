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
use regrpo_queries::flight::{FlightSqlServer, ServeConfig};
use regrpo_queries::{At, Session};
use tonic::transport::Channel;

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
