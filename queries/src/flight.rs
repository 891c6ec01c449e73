//! The Flight SQL server: the repository's tables, at a pinned snapshot, over the network.
//!
//! `regrpo serve DIR --snapshot S --addr 127.0.0.1:PORT --token-file F` answers Flight SQL
//! clients (ADBC, JDBC/DBeaver, `arrow-flight`'s `FlightSqlServiceClient`):
//!
//! - **Authentication**: every call must carry `authorization: Bearer <token>` (the token file's
//!   contents); anything else is refused with `Unauthenticated` before it reaches the service.
//!   `Handshake` with the bearer header answers the same token, for clients that start with it.
//! - **Read-only**: statements are planned with DDL, DML (which includes COPY) and `SET`
//!   refused; updates, ingests and transactions are refused.
//! - **TLS** when given a certificate and key (`--tls-cert`, `--tls-key`, PEM; rustls).
//! - **Limits**: each query gets its own memory pool of `memory_limit` bytes (DataFusion fails
//!   the query, not the server, when it runs out) and a deadline of `timeout`, which holds
//!   whether or not the client reads: a query runs a few batches ahead of its client in its own
//!   task and ends at the deadline, so a client that stops reading cannot keep its turn. A
//!   statement longer than `max_sql_bytes` is refused before it is parsed. At most
//!   `max_concurrent_queries` run at once (one per core by default); the others wait their turn
//!   in arrival order, so under load each query runs at full speed instead of all of them
//!   crawling together. Queries share the session's caches (Parquet footers, statistics).
//! - **Metadata**: `GetSqlInfo`, `GetCatalogs`, `GetDbSchemas`, `GetTables` (with Arrow schemas),
//!   `GetTableTypes` and `GetXdbcTypeInfo` are answered from DataFusion's catalog, so JDBC tools
//!   list the tables before they query.
//! - **Statements**: ad-hoc queries and prepared statements (without parameters). A statement
//!   is planned once: `GetFlightInfo` plans it and keeps the physical plan for the `DoGet` that
//!   follows (for `timeout` at most). The ticket also carries the SQL itself, so a `DoGet` whose
//!   plan is gone (expired, or another server) plans it again.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use arrow::array::RecordBatch;
use arrow::datatypes::{Schema, SchemaRef};
use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::error::FlightError;
use arrow_flight::flight_service_server::{FlightService, FlightServiceServer};
use arrow_flight::sql::metadata::{
    SqlInfoData, SqlInfoDataBuilder, XdbcTypeInfo, XdbcTypeInfoData, XdbcTypeInfoDataBuilder,
};
use arrow_flight::sql::server::{FlightSqlService, PeekableFlightDataStream};
use arrow_flight::sql::{
    ActionBeginTransactionRequest, ActionBeginTransactionResult, ActionClosePreparedStatementRequest,
    ActionCreatePreparedStatementRequest, ActionCreatePreparedStatementResult, CommandGetCatalogs, CommandGetDbSchemas,
    CommandGetSqlInfo, CommandGetTableTypes, CommandGetTables, CommandGetXdbcTypeInfo, CommandPreparedStatementQuery,
    CommandStatementIngest, CommandStatementQuery, CommandStatementUpdate, Nullable, ProstMessageExt, Searchable,
    SqlInfo, SqlSupportedTransaction, TicketStatementQuery, XdbcDataType,
};
use arrow_flight::{
    FlightData, FlightDescriptor, FlightEndpoint, FlightInfo, HandshakeRequest, HandshakeResponse, Ticket,
};
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::execution::{SessionStateBuilder, TaskContext};
use datafusion::physical_plan::{ExecutionPlan, execute_stream};
use datafusion::prelude::{DataFrame, SessionContext};
use futures::{Stream, StreamExt, TryStreamExt};
use prost::Message;
use tokio::sync::Semaphore;
use tonic::metadata::MetadataValue;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Identity, Server, ServerTlsConfig};
use tonic::{Request, Response, Status, Streaming};

use crate::session::{Session, read_only};

/// How the server runs.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// The bearer token every call must carry.
    pub token: String,
    /// Memory each query may use, in bytes.
    pub memory_limit: usize,
    /// Wall-clock limit of each query (planning, waiting for its turn and streaming).
    pub timeout: Duration,
    /// Queries executing at once; the rest wait in arrival order.
    pub max_concurrent_queries: usize,
    /// Longest statement taken, in bytes.
    pub max_sql_bytes: usize,
    /// Serve over TLS with this certificate chain and key (PEM).
    pub tls: Option<Tls>,
}

/// A TLS identity: a certificate chain and its private key, PEM.
#[derive(Clone)]
pub struct Tls {
    pub cert_pem: Vec<u8>,
    pub key_pem: Vec<u8>,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key.
        f.debug_struct("Tls").field("cert_pem", &format!("{} bytes", self.cert_pem.len())).finish_non_exhaustive()
    }
}

impl ServeConfig {
    pub fn new(token: impl Into<String>) -> ServeConfig {
        ServeConfig {
            token: token.into(),
            memory_limit: 1 << 30,
            timeout: Duration::from_secs(60),
            max_concurrent_queries: std::thread::available_parallelism().map_or(2, |n| n.get()),
            max_sql_bytes: 1 << 20,
            tls: None,
        }
    }
}

/// A statement planned by `GetFlightInfo`, waiting for its `DoGet`.
struct Planned {
    /// The statement, so a handle can only take the plan of the statement it names.
    sql: String,
    plan: Arc<dyn ExecutionPlan>,
    task: Arc<TaskContext>,
    created: Instant,
}

/// Plans waiting for their `DoGet`, by id. Entries older than the query timeout are dropped.
#[derive(Default)]
struct PlanCache {
    next: u64,
    plans: HashMap<u64, Planned>,
}

/// Plans kept at most (a client that never fetches must not grow the server).
const MAX_PLANS: usize = 1024;

/// The prefix of a statement handle that names a cached plan: `regrpo-plan:<id>:<sql>`.
const PLAN_HANDLE: &str = "regrpo-plan:";

/// The Flight SQL service over one session.
#[derive(Clone)]
pub struct FlightSqlServer {
    session: Session,
    cfg: Arc<ServeConfig>,
    permits: Arc<Semaphore>,
    plans: Arc<Mutex<PlanCache>>,
}

type DoGetStream = Pin<Box<dyn Stream<Item = Result<FlightData, Status>> + Send + 'static>>;

impl FlightSqlServer {
    pub fn new(session: Session, cfg: ServeConfig) -> FlightSqlServer {
        let permits = Arc::new(Semaphore::new(cfg.max_concurrent_queries.max(1)));
        FlightSqlServer { session, cfg: Arc::new(cfg), permits, plans: Arc::default() }
    }

    /// Serves on `listener` until `shutdown` resolves.
    pub async fn serve(
        self,
        listener: tokio::net::TcpListener,
        shutdown: impl std::future::Future<Output = ()> + Send,
    ) -> Result<(), tonic::transport::Error> {
        let token = self.cfg.token.clone();
        let mut server = Server::builder();
        if let Some(tls) = &self.cfg.tls {
            // Two rustls providers are built in (ring, and aws-lc-rs for the object stores'
            // HTTPS); the server's TLS takes ring, as the clients tonic builds do.
            let _ = tokio_rustls::rustls::crypto::ring::default_provider().install_default();
            server =
                server.tls_config(ServerTlsConfig::new().identity(Identity::from_pem(&tls.cert_pem, &tls.key_pem)))?;
        }
        let service = FlightServiceServer::with_interceptor(self, move |req: Request<()>| check_token(&token, req));
        server.add_service(service).serve_with_incoming_shutdown(TcpIncoming::from(listener), shutdown).await
    }

    /// Binds `addr` (port 0 picks a free one) and returns the listener and its address.
    pub async fn bind(addr: SocketAddr) -> std::io::Result<(tokio::net::TcpListener, SocketAddr)> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let local = listener.local_addr()?;
        Ok((listener, local))
    }

    /// A context for one query: the session's tables, functions and caches (Parquet footers,
    /// statistics), its own memory pool.
    fn query_context(&self) -> Result<SessionContext, Status> {
        let shared = self.session.context().runtime_env();
        let runtime = RuntimeEnvBuilder::from_runtime_env(&shared)
            .with_memory_limit(self.cfg.memory_limit, 1.0)
            .build_arc()
            .map_err(internal)?;
        let state =
            SessionStateBuilder::new_from_existing(self.session.context().state()).with_runtime_env(runtime).build();
        Ok(SessionContext::new_with_state(state))
    }

    /// Plans a statement down to its physical plan, keeps it for the `DoGet` to come and
    /// returns its schema and the handle that names it.
    async fn plan_for_get(&self, sql: &str) -> Result<(SchemaRef, String), Status> {
        let (plan, task) = self.physical(sql).await?;
        let schema = plan.schema();
        let mut cache = self.plans.lock().unwrap_or_else(|p| p.into_inner());
        let timeout = self.cfg.timeout;
        cache.plans.retain(|_, p| p.created.elapsed() < timeout);
        if cache.plans.len() >= MAX_PLANS {
            // Drop the oldest: its client is slowest to fetch, and can still plan again.
            if let Some(oldest) = cache.plans.iter().min_by_key(|(_, p)| p.created).map(|(id, _)| *id) {
                cache.plans.remove(&oldest);
            }
        }
        cache.next += 1;
        let id = cache.next;
        cache.plans.insert(id, Planned { sql: sql.to_string(), plan, task, created: Instant::now() });
        Ok((schema, format!("{PLAN_HANDLE}{id}:{sql}")))
    }

    /// A statement's physical plan and the task context it executes in.
    async fn physical(&self, sql: &str) -> Result<(Arc<dyn ExecutionPlan>, Arc<TaskContext>), Status> {
        let (state, logical) = self.plan(sql).await?.into_parts();
        let plan = state.create_physical_plan(&logical).await.map_err(internal)?;
        Ok((plan, Arc::new(TaskContext::from(&state))))
    }

    /// The plan a handle names: the cached one if it is still there, else the statement's SQL
    /// planned again.
    async fn take_plan(&self, handle: &[u8]) -> Result<(Arc<dyn ExecutionPlan>, Arc<TaskContext>), Status> {
        let handle = handle_sql(handle)?;
        let Some(rest) = handle.strip_prefix(PLAN_HANDLE) else { return self.physical(handle).await };
        let (id, sql) = rest.split_once(':').ok_or_else(|| Status::invalid_argument("malformed statement handle"))?;
        let cached = id.parse::<u64>().ok().and_then(|id| {
            let mut cache = self.plans.lock().unwrap_or_else(|p| p.into_inner());
            match cache.plans.get(&id) {
                Some(p) if p.sql == sql => cache.plans.remove(&id),
                _ => None,
            }
        });
        match cached {
            Some(p) if p.created.elapsed() < self.cfg.timeout => Ok((p.plan, p.task)),
            _ => self.physical(sql).await,
        }
    }

    /// Plans a read-only statement.
    async fn plan(&self, sql: &str) -> Result<DataFrame, Status> {
        if sql.len() > self.cfg.max_sql_bytes {
            return Err(Status::invalid_argument(format!(
                "the statement is {} bytes; this server takes at most {}",
                sql.len(),
                self.cfg.max_sql_bytes
            )));
        }
        let ctx = self.query_context()?;
        let planned = tokio::time::timeout(self.cfg.timeout, ctx.sql_with_options(sql, read_only()))
            .await
            .map_err(|_| Status::deadline_exceeded(format!("planning took longer than {:?}", self.cfg.timeout)))?;
        let df = planned.map_err(|e| {
            let msg = e.to_string();
            if ["DDL not supported", "DML not supported", "Statement not supported"].iter().any(|m| msg.contains(m)) {
                Status::permission_denied(format!("query refused: the server is read-only ({msg})"))
            } else {
                Status::invalid_argument(msg)
            }
        })?;
        if self.session.on_cluster() {
            crate::cluster::check_plan(df.logical_plan()).map_err(|e| Status::invalid_argument(e.to_string()))?;
        }
        Ok(df)
    }

    /// Runs the statement a handle names, once its turn comes, and streams its batches,
    /// failing the stream at the deadline. The turn is held until the stream ends or the client
    /// goes away.
    async fn stream(&self, handle: &[u8]) -> Result<Response<DoGetStream>, Status> {
        let timeout = self.cfg.timeout;
        let deadline = tokio::time::Instant::now() + timeout;
        let (plan, task) = self.take_plan(handle).await?;
        let permit = tokio::time::timeout_at(deadline, Arc::clone(&self.permits).acquire_owned())
            .await
            .map_err(|_| Status::deadline_exceeded(format!("the query waited longer than {timeout:?} for its turn")))?
            .map_err(internal)?;
        let schema = plan.schema();
        let mut batches = execute_stream(plan, task).map_err(internal)?;
        // The query runs in its own task, at most two batches ahead of the client, and ends at
        // the deadline whether or not the client reads (a client that stops reading would
        // otherwise keep the turn for good); what the client had not read by then ends in
        // DeadlineExceeded after the batches it had.
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Result<RecordBatch, FlightError>>(2);
        let late = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&late);
        tokio::spawn(async move {
            let _turn = permit;
            loop {
                let item = match tokio::time::timeout_at(deadline, batches.next()).await {
                    Ok(Some(item)) => item.map_err(|e| FlightError::ExternalError(Box::new(e))),
                    Ok(None) => return,
                    Err(_) => return flag.store(true, Ordering::Release),
                };
                match tokio::time::timeout_at(deadline, tx.send(item)).await {
                    Ok(Ok(())) => {}
                    Ok(Err(_)) => return, // the client went away
                    Err(_) => return flag.store(true, Ordering::Release),
                }
            }
        });
        let received = futures::stream::poll_fn(move |cx| rx.poll_recv(cx));
        let overran =
            futures::stream::once(async move { late.load(Ordering::Acquire) }).filter_map(move |late| async move {
                late.then(|| {
                    Err(FlightError::Tonic(Box::new(Status::deadline_exceeded(format!(
                        "query ran longer than {timeout:?}"
                    )))))
                })
            });
        Ok(Response::new(encode(schema, received.chain(overran))))
    }

    fn schema_info(
        &self,
        schema: &Schema,
        cmd: impl ProstMessageExt,
        descriptor: FlightDescriptor,
    ) -> Result<FlightInfo, Status> {
        let ticket = Ticket::new(cmd.as_any().encode_to_vec());
        FlightInfo::new()
            .try_with_schema(schema)
            .map_err(internal)
            .map(|i| i.with_endpoint(FlightEndpoint::new().with_ticket(ticket)).with_descriptor(descriptor))
    }

    /// `(catalog, schema, table)` of every table the session can read.
    fn tables(&self) -> Vec<(String, String, String)> {
        let ctx = self.session.context();
        let mut out = Vec::new();
        for catalog in ctx.catalog_names() {
            let Some(c) = ctx.catalog(&catalog) else { continue };
            for schema in c.schema_names() {
                if schema == "information_schema" {
                    continue;
                }
                let Some(s) = c.schema(&schema) else { continue };
                let mut names = s.table_names();
                names.sort();
                out.extend(names.into_iter().map(|t| (catalog.clone(), schema.clone(), t)));
            }
        }
        out
    }
}

/// The interceptor: `authorization: Bearer <token>` or `Unauthenticated`.
fn check_token(token: &str, req: Request<()>) -> Result<Request<()>, Status> {
    let given =
        req.metadata().get("authorization").and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "));
    match given {
        Some(t) if constant_time_eq(t.as_bytes(), token.as_bytes()) => Ok(req),
        Some(_) => Err(Status::unauthenticated("invalid bearer token")),
        None => Err(Status::unauthenticated("missing `authorization: Bearer <token>` (regrpo serve --token-file)")),
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn internal(e: impl std::fmt::Display) -> Status {
    Status::internal(e.to_string())
}

fn encode(
    schema: SchemaRef,
    batches: impl Stream<Item = Result<RecordBatch, FlightError>> + Send + 'static,
) -> DoGetStream {
    Box::pin(FlightDataEncoderBuilder::new().with_schema(schema).build(batches).map_err(Status::from))
}

fn one_batch(batch: Result<RecordBatch, FlightError>) -> Result<Response<DoGetStream>, Status> {
    let batch = batch.map_err(internal)?;
    Ok(Response::new(encode(batch.schema(), futures::stream::once(async { Ok(batch) }))))
}

fn sql_info() -> &'static SqlInfoData {
    static INFO: OnceLock<SqlInfoData> = OnceLock::new();
    INFO.get_or_init(|| {
        let mut b = SqlInfoDataBuilder::new();
        b.append(SqlInfo::FlightSqlServerName, "regrpo");
        b.append(SqlInfo::FlightSqlServerVersion, env!("CARGO_PKG_VERSION"));
        b.append(SqlInfo::FlightSqlServerArrowVersion, "1.3");
        b.append(SqlInfo::FlightSqlServerReadOnly, true);
        b.append(SqlInfo::FlightSqlServerSql, true);
        b.append(SqlInfo::FlightSqlServerSubstrait, false);
        b.append(SqlInfo::FlightSqlServerTransaction, SqlSupportedTransaction::None as i32);
        b.append(SqlInfo::FlightSqlServerCancel, false);
        b.append(SqlInfo::SqlDdlCatalog, false);
        b.append(SqlInfo::SqlDdlSchema, false);
        b.append(SqlInfo::SqlDdlTable, false);
        b.append(SqlInfo::SqlIdentifierCase, 3i32); // SQL_CASE_SENSITIVITY_LOWERCASE
        b.append(SqlInfo::SqlIdentifierQuoteChar, "\"");
        b.append(SqlInfo::SqlQuotedIdentifierCase, 1i32); // SQL_CASE_SENSITIVITY_CASE_INSENSITIVE
        b.append(SqlInfo::SqlAllTablesAreSelectable, true);
        b.append(SqlInfo::SqlNullOrdering, 2i32); // SQL_NULLS_SORTED_AT_END
        b.append(SqlInfo::SqlTransactionsSupported, false);
        b.append(SqlInfo::SqlSchemaTerm, "schema");
        b.append(SqlInfo::SqlCatalogTerm, "catalog");
        b.append(SqlInfo::SqlCatalogAtStart, true);
        b.append(SqlInfo::SqlSelectForUpdateSupported, false);
        b.append(SqlInfo::SqlStoredProceduresSupported, false);
        b.append(SqlInfo::SqlMaxColumnsInTable, 0i32);
        b.build().expect("static SqlInfo builds")
    })
}

fn xdbc_info() -> &'static XdbcTypeInfoData {
    static INFO: OnceLock<XdbcTypeInfoData> = OnceLock::new();
    INFO.get_or_init(|| {
        let mut b = XdbcTypeInfoDataBuilder::new();
        let ty = |name: &str, t: XdbcDataType, size: Option<i32>, quote: bool| XdbcTypeInfo {
            type_name: name.into(),
            data_type: t,
            column_size: size,
            literal_prefix: quote.then(|| "'".into()),
            literal_suffix: quote.then(|| "'".into()),
            create_params: None,
            nullable: Nullable::NullabilityNullable,
            case_sensitive: quote,
            searchable: Searchable::Full,
            unsigned_attribute: (!quote).then_some(false),
            fixed_prec_scale: false,
            auto_increment: Some(false),
            local_type_name: Some(name.into()),
            minimum_scale: None,
            maximum_scale: None,
            sql_data_type: t,
            datetime_subcode: None,
            num_prec_radix: (!quote && size.is_some()).then_some(10),
            interval_precision: None,
        };
        b.append(ty("BOOLEAN", XdbcDataType::XdbcBit, Some(1), false));
        b.append(ty("INTEGER", XdbcDataType::XdbcInteger, Some(10), false));
        b.append(ty("BIGINT", XdbcDataType::XdbcBigint, Some(19), false));
        b.append(ty("DOUBLE", XdbcDataType::XdbcDouble, Some(15), false));
        b.append(ty("VARCHAR", XdbcDataType::XdbcVarchar, None, true));
        b.append(ty("TIMESTAMP", XdbcDataType::XdbcTimestamp, None, true));
        b.build().expect("static XDBC type info builds")
    })
}

fn handle_sql(handle: &[u8]) -> Result<&str, Status> {
    std::str::from_utf8(handle).map_err(|_| Status::invalid_argument("statement handle is not UTF-8"))
}

#[tonic::async_trait]
impl FlightSqlService for FlightSqlServer {
    type FlightService = FlightSqlServer;

    async fn do_handshake(
        &self,
        _request: Request<Streaming<HandshakeRequest>>,
    ) -> Result<Response<Pin<Box<dyn Stream<Item = Result<HandshakeResponse, Status>> + Send>>>, Status> {
        // The interceptor has checked the bearer token; echo it as the session token.
        let reply = HandshakeResponse { protocol_version: 0, payload: self.cfg.token.clone().into() };
        let mut response: Response<Pin<Box<dyn Stream<Item = _> + Send>>> =
            Response::new(Box::pin(futures::stream::iter([Ok(reply)])));
        let bearer = MetadataValue::try_from(format!("Bearer {}", self.cfg.token)).map_err(internal)?;
        response.metadata_mut().insert("authorization", bearer);
        Ok(response)
    }

    async fn get_flight_info_statement(
        &self,
        query: CommandStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let (schema, handle) = self.plan_for_get(&query.query).await?;
        let ticket = TicketStatementQuery { statement_handle: handle.into() };
        let info = self.schema_info(&schema, ticket, request.into_inner())?;
        Ok(Response::new(info))
    }

    async fn do_get_statement(
        &self,
        ticket: TicketStatementQuery,
        _request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        self.stream(&ticket.statement_handle).await
    }

    async fn do_action_create_prepared_statement(
        &self,
        query: ActionCreatePreparedStatementRequest,
        _request: Request<arrow_flight::Action>,
    ) -> Result<ActionCreatePreparedStatementResult, Status> {
        let df = self.plan(&query.query).await?;
        let schema = df.schema().as_arrow().clone();
        let options = arrow::ipc::writer::IpcWriteOptions::default();
        let arrow_flight::IpcMessage(dataset_schema) =
            arrow_flight::SchemaAsIpc::new(&schema, &options).try_into().map_err(internal)?;
        let empty = Schema::empty();
        let arrow_flight::IpcMessage(parameter_schema) =
            arrow_flight::SchemaAsIpc::new(&empty, &options).try_into().map_err(internal)?;
        Ok(ActionCreatePreparedStatementResult {
            prepared_statement_handle: query.query.into(),
            dataset_schema,
            parameter_schema,
        })
    }

    async fn do_action_close_prepared_statement(
        &self,
        _query: ActionClosePreparedStatementRequest,
        _request: Request<arrow_flight::Action>,
    ) -> Result<(), Status> {
        // Handles carry the statement itself; there is nothing to free.
        Ok(())
    }

    async fn get_flight_info_prepared_statement(
        &self,
        cmd: CommandPreparedStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let df = self.plan(handle_sql(&cmd.prepared_statement_handle)?).await?;
        let schema = df.schema().as_arrow().clone();
        Ok(Response::new(self.schema_info(&schema, cmd, request.into_inner())?))
    }

    async fn do_get_prepared_statement(
        &self,
        cmd: CommandPreparedStatementQuery,
        _request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        self.stream(&cmd.prepared_statement_handle).await
    }

    async fn do_put_prepared_statement_query(
        &self,
        _query: CommandPreparedStatementQuery,
        _request: Request<PeekableFlightDataStream>,
    ) -> Result<arrow_flight::sql::DoPutPreparedStatementResult, Status> {
        Err(Status::unimplemented("prepared statements take no parameters here; inline the values"))
    }

    async fn do_put_statement_update(
        &self,
        _ticket: CommandStatementUpdate,
        _request: Request<PeekableFlightDataStream>,
    ) -> Result<i64, Status> {
        Err(Status::permission_denied("query refused: the server is read-only (updates are not accepted)"))
    }

    async fn do_put_statement_ingest(
        &self,
        _ticket: CommandStatementIngest,
        _request: Request<PeekableFlightDataStream>,
    ) -> Result<i64, Status> {
        Err(Status::permission_denied("query refused: the server is read-only (ingest is not accepted)"))
    }

    async fn do_action_begin_transaction(
        &self,
        _query: ActionBeginTransactionRequest,
        _request: Request<arrow_flight::Action>,
    ) -> Result<ActionBeginTransactionResult, Status> {
        Err(Status::permission_denied("the server is read-only; transactions are not supported"))
    }

    async fn get_flight_info_sql_info(
        &self,
        query: CommandGetSqlInfo,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query.clone().into_builder(sql_info()).schema();
        Ok(Response::new(self.schema_info(&schema, query, request.into_inner())?))
    }

    async fn do_get_sql_info(
        &self,
        query: CommandGetSqlInfo,
        _request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        one_batch(query.into_builder(sql_info()).build())
    }

    async fn get_flight_info_catalogs(
        &self,
        query: CommandGetCatalogs,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query.into_builder().schema();
        Ok(Response::new(self.schema_info(&schema, query, request.into_inner())?))
    }

    async fn do_get_catalogs(
        &self,
        query: CommandGetCatalogs,
        _request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        let mut b = query.into_builder();
        let mut catalogs: Vec<String> = self.tables().into_iter().map(|(c, _, _)| c).collect();
        catalogs.dedup();
        for c in catalogs {
            b.append(c);
        }
        one_batch(b.build())
    }

    async fn get_flight_info_schemas(
        &self,
        query: CommandGetDbSchemas,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query.clone().into_builder().schema();
        Ok(Response::new(self.schema_info(&schema, query, request.into_inner())?))
    }

    async fn do_get_schemas(
        &self,
        query: CommandGetDbSchemas,
        _request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        let mut b = query.into_builder();
        let mut schemas: Vec<(String, String)> = self.tables().into_iter().map(|(c, s, _)| (c, s)).collect();
        schemas.dedup();
        for (c, s) in schemas {
            b.append(c, s);
        }
        one_batch(b.build())
    }

    async fn get_flight_info_tables(
        &self,
        query: CommandGetTables,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query.clone().into_builder().schema();
        Ok(Response::new(self.schema_info(&schema, query, request.into_inner())?))
    }

    async fn do_get_tables(
        &self,
        query: CommandGetTables,
        _request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        let ctx = self.session.context();
        let mut b = query.into_builder();
        for (catalog, schema, table) in self.tables() {
            let provider = ctx
                .catalog(&catalog)
                .and_then(|c| c.schema(&schema))
                .ok_or_else(|| Status::internal(format!("schema {catalog}.{schema} vanished")))?
                .table(&table)
                .await
                .map_err(internal)?
                .ok_or_else(|| Status::internal(format!("table {table} vanished")))?;
            b.append(&catalog, &schema, &table, "TABLE", provider.schema().as_ref()).map_err(internal)?;
        }
        one_batch(b.build())
    }

    async fn get_flight_info_table_types(
        &self,
        query: CommandGetTableTypes,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query.into_builder().schema();
        Ok(Response::new(self.schema_info(&schema, query, request.into_inner())?))
    }

    async fn do_get_table_types(
        &self,
        query: CommandGetTableTypes,
        _request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        let mut b = query.into_builder();
        b.append("TABLE");
        one_batch(b.build())
    }

    async fn get_flight_info_xdbc_type_info(
        &self,
        query: CommandGetXdbcTypeInfo,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query.into_builder(xdbc_info()).schema();
        Ok(Response::new(self.schema_info(&schema, query, request.into_inner())?))
    }

    async fn do_get_xdbc_type_info(
        &self,
        query: CommandGetXdbcTypeInfo,
        _request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        one_batch(query.into_builder(xdbc_info()).build())
    }

    async fn register_sql_info(&self, _id: i32, _result: &SqlInfo) {}
}
