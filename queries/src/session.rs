//! A DataFusion session over a repository, every table registered at a pinned version.
//!
//! This is the one path by which the CLI, the Flight SQL server and the trainer read data:
//! `Session::open(&repo, At::Snapshot("v1"))` pins every table to the snapshot's Delta
//! version, so the same query over the same snapshot returns the same rows forever.

use std::collections::BTreeMap;
use std::sync::Arc;

use datafusion::catalog::MemorySchemaProvider;
use datafusion::common::TableReference;
use datafusion::dataframe::DataFrame;
use datafusion::execution::context::SQLOptions;
use datafusion::execution::{SendableRecordBatchStream, SessionStateBuilder};
use datafusion::prelude::{SessionConfig, SessionContext};
use regrpo_datasets::{Repository, Snapshot, snapshot};
use regrpo_schemas::SplitSpec;

use crate::error::{Error, Result};
use crate::run_count::RunCount;

/// Which versions of the tables a session reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum At {
    /// The latest version of every table.
    Latest,
    /// The versions a named snapshot pinned.
    Snapshot(String),
}

impl At {
    /// `Some(name)` → that snapshot, `None` → latest.
    pub fn from_option(name: Option<&str>) -> At {
        name.map_or(At::Latest, |n| At::Snapshot(n.to_string()))
    }
}

/// A read-only SQL session over a repository.
#[derive(Clone)]
pub struct Session {
    ctx: SessionContext,
    snapshot: Option<Snapshot>,
    versions: BTreeMap<String, i64>,
    /// Whether statements run on a Ballista cluster.
    cluster: bool,
}

/// Registers every table at its version, unqualified or under `schema`. With `listings_only`
/// (a cluster session) a version only Delta's reader can read is an error.
async fn register_tables(
    ctx: &SessionContext,
    repo: &Repository,
    versions: &BTreeMap<String, i64>,
    schema: Option<&str>,
    listings_only: bool,
) -> Result<()> {
    for (name, version) in versions {
        let table = repo.load(name, Some(*version)).await?;
        table
            .update_datafusion_session(&ctx.state())
            .map_err(|e| Error::Dataset(regrpo_datasets::Error::Delta { table: name.clone(), source: Box::new(e) }))?;
        let delta = table.table_provider().await?;
        let provider = match crate::pinned::listing(&table, &delta, &ctx.state())? {
            Some(listing) => listing,
            None if listings_only && table.snapshot().is_ok_and(|s| s.log_data().num_files() > 0) => {
                return Err(Error::Usage(format!(
                    "table `{name}` at version {version} needs Delta's own reader (deletion vectors, column \
                     mapping or partitions), which a cluster does not have: run this query locally"
                )));
            }
            // No file: nothing for an executor to read, and the Delta provider cannot travel.
            None if listings_only => crate::pinned::empty(&delta)?,
            None => delta,
        };
        match schema {
            None => ctx.register_table(name.as_str(), provider)?,
            Some(schema) => ctx.register_table(TableReference::partial(schema, name.as_str()), provider)?,
        };
    }
    Ok(())
}

/// The options every statement runs with: no DDL, no DML (which includes COPY), no
/// `SET`/transaction statements.
pub fn read_only() -> SQLOptions {
    SQLOptions::new().with_allow_ddl(false).with_allow_dml(false).with_allow_statements(false)
}

impl Session {
    /// Opens a session with every table registered at the chosen versions.
    pub async fn open(repo: &Repository, at: At) -> Result<Session> {
        Self::open_with_config(repo, at, SessionConfig::new()).await
    }

    /// Like [`Session::open`], with a DataFusion configuration (memory limits, batch size…).
    pub async fn open_with_config(repo: &Repository, at: At, config: SessionConfig) -> Result<Session> {
        Self::open_inner(repo, at, config, None).await
    }

    /// [`Session::open`], or with `cluster` a session whose statements run on a Ballista
    /// cluster (`df://HOST:PORT`, started with `regrpo cluster`): the tables are the Parquet
    /// files the chosen versions pin, read by the cluster's executors (see [`crate::cluster`]).
    pub async fn open_on(repo: &Repository, at: At, cluster: Option<&str>) -> Result<Session> {
        Self::open_inner(repo, at, SessionConfig::new(), cluster).await
    }

    async fn open_inner(repo: &Repository, at: At, config: SessionConfig, cluster: Option<&str>) -> Result<Session> {
        let (snapshot, versions) = match &at {
            At::Latest => (None, repo.versions().await?),
            At::Snapshot(name) => {
                let s = snapshot::get(repo, name).await?;
                let v = s.versions();
                (Some(s), v)
            }
        };
        let mut config = config.with_information_schema(true).with_default_catalog_and_schema("regrpo", "public");
        // Filters are evaluated inside the Parquet scan, cheapest first, so a selective filter
        // decodes only the rows it keeps (the Delta provider forced this on its own scans).
        let parquet = &mut config.options_mut().execution.parquet;
        parquet.pushdown_filters = true;
        parquet.reorder_filters = true;
        let mut builder = SessionStateBuilder::new()
            .with_config(config)
            .with_default_features()
            .with_physical_optimizer_rule(Arc::new(RunCount));
        if cluster.is_some() {
            builder = builder.with_runtime_env(crate::cluster::runtime()?);
        }
        let mut state = builder.build();
        if let Some(url) = cluster {
            state = crate::cluster::upgrade(state, url)?;
        }
        let mut ctx = SessionContext::new_with_state(state);
        // The pinned listings read `s3://bucket/…` files through the repository's store.
        repo.register_store(ctx.runtime_env().as_ref());
        register_tables(&ctx, repo, &versions, None, cluster.is_some()).await?;
        crate::udf::register_all(&mut ctx)?;
        Ok(Session { ctx, snapshot, versions, cluster: cluster.is_some() })
    }

    /// Makes the tables of another snapshot readable as `schema.<table>` (for queries that
    /// compare snapshots). The unqualified tables keep their versions.
    pub async fn attach(&self, repo: &Repository, schema: &str, snapshot_name: &str) -> Result<()> {
        if ["public", "information_schema"].contains(&schema) {
            return Err(Error::Usage(format!("`{schema}` cannot name an attached snapshot")));
        }
        let versions = snapshot::get(repo, snapshot_name).await?.versions();
        let catalog = self.ctx.catalog("regrpo").expect("sessions are opened with the `regrpo` catalog");
        catalog.register_schema(schema, Arc::new(MemorySchemaProvider::new()))?;
        register_tables(&self.ctx, repo, &versions, Some(schema), self.cluster).await
    }

    /// Registers table `name` at its latest version in place of the version this session
    /// read, and returns that version. For tables a reader wants current whatever snapshot it
    /// reads (the web view's `reviews`, which it appends to itself).
    pub async fn register_latest(&self, repo: &Repository, name: &str) -> Result<i64> {
        let version = repo.load(name, None).await?.version().unwrap_or(0) as i64;
        self.ctx.deregister_table(name)?;
        register_tables(&self.ctx, repo, &BTreeMap::from([(name.to_string(), version)]), None, self.cluster).await?;
        Ok(version)
    }

    /// Whether statements run on a Ballista cluster ([`Session::open_on`]).
    pub fn on_cluster(&self) -> bool {
        self.cluster
    }

    /// The DataFusion context, for callers that build plans themselves.
    pub fn context(&self) -> &SessionContext {
        &self.ctx
    }

    /// The snapshot this session reads, if it was opened at one.
    pub fn snapshot(&self) -> Option<&Snapshot> {
        self.snapshot.as_ref()
    }

    /// The split every job reading this session uses: the snapshot's, or the default one when
    /// the session reads the latest tables.
    pub fn split(&self) -> SplitSpec {
        self.snapshot.as_ref().map_or_else(SplitSpec::default, |s| s.split)
    }

    /// `{table: version}` this session reads.
    pub fn versions(&self) -> &BTreeMap<String, i64> {
        &self.versions
    }

    /// Plans a read-only statement. Writes of any kind are refused with [`Error::ReadOnly`].
    pub async fn sql(&self, sql: &str) -> Result<DataFrame> {
        match self.ctx.sql_with_options(sql, read_only()).await {
            Ok(df) if self.cluster => crate::cluster::check_plan(df.logical_plan()).map(|()| df),
            Ok(df) => Ok(df),
            Err(e) => {
                let msg = e.to_string();
                if ["DDL not supported", "DML not supported", "Statement not supported"].iter().any(|m| msg.contains(m))
                {
                    Err(Error::ReadOnly { reason: msg.trim_start_matches("Error during planning: ").to_string() })
                } else {
                    Err(Error::from(e))
                }
            }
        }
    }

    /// Opens a session whose scans keep the snapshot's row order (one partition), in batches of
    /// `batch_rows` rows: for readers that stream a table and need the same order every time.
    pub async fn open_ordered(repo: &Repository, at: At, batch_rows: usize) -> Result<Session> {
        Self::open_with_config(repo, at, SessionConfig::new().with_target_partitions(1).with_batch_size(batch_rows))
            .await
    }

    /// Runs a read-only statement and streams its batches (bounded memory for a scan).
    pub async fn stream(&self, sql: &str) -> Result<SendableRecordBatchStream> {
        Ok(self.sql(sql).await?.execute_stream().await?)
    }

    /// Runs a read-only statement and collects its batches.
    pub async fn query(&self, sql: &str) -> Result<Vec<arrow::array::RecordBatch>> {
        Ok(self.sql(sql).await?.collect().await?)
    }
}
