//! The dataset repository: a folder (or an S3 prefix) of Delta tables, one per record kind,
//! plus snapshots.
//!
//! ```text
//! DIR/ or s3://bucket/prefix/
//!   regrpo.json              what this folder is (format version)
//!   tables/<table>/          one Delta table per kind: _delta_log/ + Parquet files
//!   snapshots/<name>.json    immutable manifests (see `snapshot`)
//!   sandboxes/               the files toolworld tasks' tools read
//! ```
//!
//! Every append is one Delta commit, so a crash leaves the last committed version intact. Ids
//! are content hashes; [`Appender`] skips rows whose id the table already holds, so appending
//! the same input twice adds nothing.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{Array, RecordBatch, StringArray};
use arrow::compute::{SortColumn, cast, lexsort_to_indices, take_record_batch};
use arrow::datatypes::{DataType, SchemaRef};
use deltalake::datafusion::execution::runtime_env::RuntimeEnv;
use deltalake::datafusion::prelude::SessionContext;
use deltalake::kernel::engine::arrow_conversion::TryIntoKernel;
use deltalake::kernel::transaction::CommitProperties;
use deltalake::kernel::{StructField, StructType, Transaction};
use deltalake::operations::optimize::OptimizeType;
use deltalake::parquet::basic::{Compression, ZstdLevel};
use deltalake::parquet::file::properties::{EnabledStatistics, WriterProperties};
use deltalake::parquet::schema::types::ColumnPath;
use deltalake::protocol::SaveMode;
use deltalake::{DeltaTable, DeltaTableBuilder, TableProperty};
use futures::{StreamExt, TryStreamExt};
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};
use regrpo_schemas::Record;
use regrpo_schemas::table::all_tables;
use serde::{Deserialize, Serialize};
use url::Url;

use crate::error::{DeltaContext, Error, IoContext, Result, StoreContext};
use crate::store::{Location, local_cache_for, local_path_of, object_path};

const MANIFEST: &str = "regrpo.json";
const FORMAT_VERSION: u32 = 1;

/// What `regrpo.json` holds.
#[derive(Debug, Serialize, Deserialize)]
struct Manifest {
    format: u32,
    created_by: String,
}

/// A dataset repository: a local folder or an S3 prefix (see [`crate::store`]).
#[derive(Debug, Clone)]
pub struct Repository {
    location: Location,
    /// Storage options handed to every Delta table and store of the repository.
    options: HashMap<String, String>,
    /// Everything below the repository's root, as `/`-separated keys.
    store: Arc<dyn ObjectStore>,
    /// For a remote repository: the bucket's URL and a store rooted there, which query sessions
    /// register to read the Parquet files a snapshot pins.
    bucket: Option<(Url, Arc<dyn ObjectStore>)>,
    /// A local folder for what tools must read as files (sandboxes): the repository itself when
    /// it is local, a cache folder when it is remote.
    workdir: PathBuf,
}

impl Repository {
    /// Creates a repository at `location` (a folder, made if missing, or `s3://bucket/prefix`;
    /// it must not already hold one) with an empty Delta table per record kind.
    pub async fn init(location: impl AsRef<Path>) -> Result<Repository> {
        Self::init_with(location, crate::store::process_options()).await
    }

    /// [`init`](Self::init) with storage options of its own.
    pub async fn init_with(location: impl AsRef<Path>, options: HashMap<String, String>) -> Result<Repository> {
        let location = match Self::parse(location.as_ref())? {
            Location::Local(root) => {
                std::fs::create_dir_all(&root).at(&root)?;
                Location::Local(root.canonicalize().at(&root)?)
            }
            remote => remote,
        };
        let repo = Self::at(location, options)?;
        if repo.exists(MANIFEST).await? {
            return Err(Error::AlreadyExists { path: repo.display_path(MANIFEST) });
        }
        if let Location::Local(root) = &repo.location {
            std::fs::create_dir_all(root.join("tables")).at(root)?;
            std::fs::create_dir_all(root.join("snapshots")).at(root)?;
        }
        for (name, schema) in all_tables() {
            repo.create_table(name, &schema).await?;
        }
        // The manifest goes last: a folder without it is not (yet) a repository.
        let manifest = Manifest { format: FORMAT_VERSION, created_by: format!("regrpo {}", env!("CARGO_PKG_VERSION")) };
        let text = serde_json::to_string_pretty(&manifest).map_err(|e| Error::Internal(e.to_string()))? + "\n";
        match repo.put_new(MANIFEST, text.into_bytes()).await {
            Err(Error::Store { source, .. }) if matches!(*source, object_store::Error::AlreadyExists { .. }) => {
                Err(Error::AlreadyExists { path: repo.display_path(MANIFEST) })
            }
            other => other.map(|()| repo),
        }
    }

    /// Opens an existing repository (a folder or `s3://bucket/prefix`).
    pub async fn open(location: impl AsRef<Path>) -> Result<Repository> {
        Self::open_with(location, crate::store::process_options()).await
    }

    /// [`open`](Self::open) with storage options of its own.
    pub async fn open_with(location: impl AsRef<Path>, options: HashMap<String, String>) -> Result<Repository> {
        let location = Self::parse(location.as_ref())?;
        let shown = location.display();
        let missing = || Error::NotARepository { path: PathBuf::from(&shown) };
        let location = match location {
            Location::Local(root) => match root.canonicalize() {
                Ok(root) => Location::Local(root),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(missing()),
                Err(e) => return Err(Error::Io(regrpo_schemas::IoError { path: root, source: e })),
            },
            remote => remote,
        };
        let repo = Self::at(location, options)?;
        let manifest_path = repo.display_path(MANIFEST);
        let Some(bytes) = repo.get_if_present(MANIFEST).await? else {
            return Err(missing());
        };
        let manifest: Manifest = serde_json::from_slice(&bytes)
            .map_err(|e| Error::BadManifest { path: manifest_path.clone(), reason: e.to_string() })?;
        if manifest.format != FORMAT_VERSION {
            return Err(Error::UnsupportedFormat {
                path: manifest_path,
                found: manifest.format,
                supported: FORMAT_VERSION,
            });
        }
        Ok(repo)
    }

    fn parse(location: &Path) -> Result<Location> {
        match location.to_str() {
            Some(text) => Location::parse(text),
            None => Ok(Location::Local(location.to_path_buf())),
        }
    }

    /// The repository at `location`, without reading anything.
    fn at(location: Location, options: HashMap<String, String>) -> Result<Repository> {
        crate::store::register_object_stores();
        let (store, bucket, workdir): (Arc<dyn ObjectStore>, _, _) = match &location {
            Location::Local(root) => {
                let store = object_store::local::LocalFileSystem::new_with_prefix(root)
                    .map_err(|e| Error::BadLocation { location: root.display().to_string(), reason: e.to_string() })?;
                (Arc::new(store), None, root.clone())
            }
            Location::Remote(url) => {
                let root: Arc<dyn ObjectStore> = Arc::new(crate::store::s3_store(url, &options)?);
                let prefix = object_store::path::Path::from_url_path(url.path())
                    .map_err(|e| Error::BadLocation { location: url.to_string(), reason: e.to_string() })?;
                let store = Arc::new(object_store::prefix::PrefixStore::new(Arc::clone(&root), prefix));
                let mut bucket_url = url.clone();
                bucket_url.set_path("/");
                (store, Some((bucket_url, root)), local_cache_for(url))
            }
        };
        Ok(Repository { location, options, store, bucket, workdir })
    }

    /// Where the repository lives.
    pub fn location(&self) -> &Location {
        &self.location
    }

    /// The repository's folder, when it is a local one (tests and tools that edit files).
    pub fn local_root(&self) -> Option<&Path> {
        match &self.location {
            Location::Local(root) => Some(root),
            Location::Remote(_) => None,
        }
    }

    /// The storage options the repository was opened with.
    pub fn storage_options(&self) -> &HashMap<String, String> {
        &self.options
    }

    /// The local folder tools read sandbox files from: the repository's own folder, or for a
    /// remote repository the cache folder [`sandboxes`](Self::sandboxes) fills.
    pub fn workdir(&self) -> &Path {
        &self.workdir
    }

    /// Makes the repository's sandboxes readable as local files and returns the folder they
    /// are below (as [`workdir`](Self::workdir)): a local repository already is; a remote one's
    /// `sandboxes/` objects are copied to the cache folder (those already there with their size
    /// are kept).
    pub async fn sandboxes(&self) -> Result<PathBuf> {
        if self.bucket.is_some() {
            self.pull(SANDBOXES).await?;
        }
        Ok(self.workdir.clone())
    }

    /// Uploads the sandbox files written below [`workdir`](Self::workdir) that a remote
    /// repository does not hold yet (nothing to do for a local one). Returns how many.
    pub async fn push_sandboxes(&self) -> Result<usize> {
        if self.bucket.is_none() {
            return Ok(0);
        }
        let remote: HashSet<String> = self.list(SANDBOXES).await?.into_iter().map(|m| m.location.to_string()).collect();
        let mut local = Vec::new();
        let mut stack = vec![self.workdir.join(SANDBOXES)];
        while let Some(dir) = stack.pop() {
            let entries = match std::fs::read_dir(&dir) {
                Ok(e) => e,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(Error::Io(regrpo_schemas::IoError { path: dir, source: e })),
            };
            for entry in entries {
                let path = entry.at(&dir)?.path();
                if path.is_dir() {
                    stack.push(path);
                } else if let Ok(rel) = path.strip_prefix(&self.workdir) {
                    let key = rel.components().map(|c| c.as_os_str().to_string_lossy()).collect::<Vec<_>>().join("/");
                    if !remote.contains(&key) {
                        local.push((key, path));
                    }
                }
            }
        }
        let n = local.len();
        futures::stream::iter(local.into_iter().map(|(key, path)| async move {
            let bytes = tokio::fs::read(&path).await.at(&path)?;
            self.store.put(&object_path(&key)?, PutPayload::from(bytes)).await.at_key(&key)?;
            Ok::<_, Error>(())
        }))
        .buffer_unordered(TRANSFERS)
        .try_collect::<Vec<()>>()
        .await?;
        Ok(n)
    }

    /// Copies every object below `prefix` to the same path below the work folder, skipping
    /// files already there with the object's size.
    async fn pull(&self, prefix: &str) -> Result<usize> {
        let wanted: Vec<_> = self
            .list(prefix)
            .await?
            .into_iter()
            .filter(|m| {
                let local = local_path_of(&self.workdir, m.location.as_ref());
                std::fs::metadata(local).map_or(true, |l| l.len() != m.size)
            })
            .collect();
        let n = wanted.len();
        futures::stream::iter(wanted.into_iter().map(|meta| async move {
            let key = meta.location.to_string();
            let bytes = self.store.get(&meta.location).await.at_key(&key)?.bytes().await.at_key(&key)?;
            let local = local_path_of(&self.workdir, &key);
            if let Some(dir) = local.parent() {
                tokio::fs::create_dir_all(dir).await.at(dir)?;
            }
            // Written aside and renamed, so a reader never sees half a file.
            let tmp = local.with_extension(format!("part-{}", std::process::id()));
            tokio::fs::write(&tmp, &bytes).await.at(&tmp)?;
            tokio::fs::rename(&tmp, &local).await.at(&local)?;
            Ok::<_, Error>(())
        }))
        .buffer_unordered(TRANSFERS)
        .try_collect::<Vec<()>>()
        .await?;
        Ok(n)
    }

    /// Registers the store a remote repository's files are read through with a DataFusion
    /// runtime (a local repository's files need nothing: `file://` is always known).
    pub fn register_store(&self, runtime: &RuntimeEnv) {
        if let Some((url, store)) = &self.bucket {
            runtime.register_object_store(url, Arc::clone(store));
        }
    }

    /// Every object below `prefix` (a `/`-separated path below the root).
    pub(crate) async fn list(&self, prefix: &str) -> Result<Vec<object_store::ObjectMeta>> {
        let p = object_path(prefix)?;
        self.store.list(Some(&p)).try_collect().await.at_key(prefix)
    }

    /// Whether an object exists.
    pub(crate) async fn exists(&self, rel: &str) -> Result<bool> {
        match self.store.head(&object_path(rel)?).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(e).at_key(rel),
        }
    }

    /// An object's bytes, or `None` when it does not exist.
    pub(crate) async fn get_if_present(&self, rel: &str) -> Result<Option<Vec<u8>>> {
        let got = match self.store.get(&object_path(rel)?).await {
            Ok(g) => g,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(e).at_key(rel),
        };
        Ok(Some(got.bytes().await.at_key(rel)?.to_vec()))
    }

    /// Writes an object that must not exist yet: of two writers racing, one fails with
    /// `AlreadyExists` (a hard link locally, `If-None-Match: *` on S3).
    pub(crate) async fn put_new(&self, rel: &str, bytes: Vec<u8>) -> Result<()> {
        let opts = PutOptions { mode: PutMode::Create, ..Default::default() };
        self.store.put_opts(&object_path(rel)?, PutPayload::from(bytes), opts).await.at_key(rel).map(|_| ())
    }

    /// The store below the repository's root.
    pub(crate) fn store(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }

    /// How a file of the repository is named in messages: its local path, or its URL.
    pub fn display_path(&self, rel: &str) -> PathBuf {
        match &self.location {
            Location::Local(root) => local_path_of(root, rel),
            Location::Remote(url) => PathBuf::from(format!("{}/{rel}", url.as_str().trim_end_matches('/'))),
        }
    }

    /// The names of all tables.
    pub fn table_names() -> Vec<&'static str> {
        all_tables().into_iter().map(|(n, _)| n).collect()
    }

    /// The tables this repository holds: every table but those added to the format after the
    /// repository was made and not yet written (`reviews` in an older repository).
    pub async fn present_tables(&self) -> Result<Vec<&'static str>> {
        let mut out = Vec::new();
        for name in Self::table_names() {
            if self.has_table(name).await? {
                out.push(name);
            }
        }
        Ok(out)
    }

    async fn has_table(&self, name: &str) -> Result<bool> {
        let log = format!("tables/{name}/_delta_log");
        let p = object_path(&log)?;
        Ok(self.store.list(Some(&p)).next().await.transpose().at_key(&log)?.is_some())
    }

    /// Creates table `name` where this repository does not hold it yet (a table added to the
    /// format after the repository was made). Returns whether it was created.
    pub async fn ensure_table(&self, name: &str) -> Result<bool> {
        Self::check_table(name)?;
        if self.has_table(name).await? {
            return Ok(false);
        }
        let schema = all_tables().into_iter().find(|(n, _)| *n == name).map(|(_, s)| s).expect("checked above");
        self.create_table(name, &schema).await?;
        Ok(true)
    }

    fn check_table(name: &str) -> Result<()> {
        if Self::table_names().contains(&name) {
            Ok(())
        } else {
            Err(Error::UnknownTable { table: name.to_string(), known: Self::table_names().join(", ") })
        }
    }

    /// The folder of a table, when the repository is local.
    pub fn table_path(&self, name: &str) -> Option<PathBuf> {
        self.local_root().map(|root| root.join("tables").join(name))
    }

    /// The URL a Delta reader opens the table at.
    pub fn table_url(&self, name: &str) -> Result<Url> {
        Self::check_table(name)?;
        self.location.join_url(&format!("tables/{name}"), true)
    }

    fn table_builder(&self, name: &str) -> Result<DeltaTableBuilder> {
        DeltaTableBuilder::from_url(self.table_url(name)?)
            .table(name)
            .map(|b| b.with_storage_options(self.options.clone()))
    }

    async fn create_table(&self, name: &str, schema: &SchemaRef) -> Result<()> {
        if let Some(path) = self.table_path(name) {
            std::fs::create_dir_all(&path).at(&path)?;
        }
        let kernel: StructType =
            schema.as_ref().try_into_kernel().map_err(|e| Error::Internal(format!("{name}: {e}")))?;
        let table = self.table_builder(name)?.build().table(name)?;
        table
            .create()
            .with_table_name(name)
            .with_columns(kernel.fields().cloned().collect::<Vec<StructField>>())
            // Snapshots pin old versions; Delta's log cleanup would make them unreadable.
            .with_configuration_property(TableProperty::EnableExpiredLogCleanup, Some("false"))
            .with_configuration_property(TableProperty::CheckpointInterval, Some("100"))
            .await
            .table(name)?;
        Ok(())
    }

    /// Opens a table at its latest version or at `version`.
    pub async fn load(&self, name: &str, version: Option<i64>) -> Result<DeltaTable> {
        let mut builder = self.table_builder(name)?;
        if let Some(v) = version {
            builder = builder.with_version(v as _);
        }
        builder.load().await.table(name)
    }

    /// The latest version of every table the repository holds.
    pub async fn versions(&self) -> Result<BTreeMap<String, i64>> {
        let mut out = BTreeMap::new();
        for name in self.present_tables().await? {
            let t = self.load(name, None).await?;
            out.insert(name.to_string(), t.version().unwrap_or(0) as i64);
        }
        Ok(out)
    }

    /// Reads a whole table (at `version`, or the latest) as batches of its declared schema.
    pub async fn read_batches(
        &self,
        name: &str,
        version: Option<i64>,
        columns: Option<&[&str]>,
    ) -> Result<Vec<RecordBatch>> {
        let table = self.load(name, version).await?;
        let ctx = SessionContext::new();
        table.update_datafusion_session(&ctx.state()).table(name)?;
        let provider = table.table_provider().await?;
        let mut df = ctx.read_table(provider)?;
        if let Some(cols) = columns {
            df = df.select_columns(cols)?;
        }
        Ok(df.collect().await?)
    }

    /// Reads every row of a record table (at `version`, or the latest).
    pub async fn read<R: Record>(&self, version: Option<i64>) -> Result<Vec<R>> {
        let mut out = Vec::new();
        for batch in self.read_batches(R::TABLE, version, None).await? {
            out.extend(regrpo_schemas::from_batch::<R>(&batch)?);
        }
        Ok(out)
    }

    /// Appends records in one Delta commit, without checking ids. Returns the new version, or
    /// `None` when there was nothing to write.
    pub async fn commit<R: Record>(&self, records: &[R], operation: &str) -> Result<Option<i64>> {
        self.commit_as(records, operation, None).await
    }

    /// [`commit`](Self::commit), the commit also recording an application transaction (Delta's
    /// `txn` action: `app_id` reached `version`), read back by
    /// [`transaction_version`](Self::transaction_version). The rows and the mark land together
    /// or not at all, which is what makes a rerun of a writer skip what it already wrote.
    pub async fn commit_as<R: Record>(
        &self,
        records: &[R],
        operation: &str,
        txn: Option<&AppTransaction>,
    ) -> Result<Option<i64>> {
        if records.is_empty() {
            return Ok(None);
        }
        let batch = regrpo_schemas::to_batch(records)?;
        self.commit_batches_as(R::TABLE, vec![batch], operation, txn).await.map(Some)
    }

    /// Appends batches of a table's schema in one Delta commit; returns the new version.
    pub async fn commit_batches(&self, name: &str, batches: Vec<RecordBatch>, operation: &str) -> Result<i64> {
        self.commit_batches_as(name, batches, operation, None).await
    }

    async fn commit_batches_as(
        &self,
        name: &str,
        batches: Vec<RecordBatch>,
        operation: &str,
        txn: Option<&AppTransaction>,
    ) -> Result<i64> {
        let table = self.load(name, None).await?;
        self.commit_to(table, name, batches, operation, txn.into_iter().collect()).await
    }

    /// Appends batches to `table` as loaded (its version is the commit's read version: Delta
    /// checks the commits after it for conflicts), with these application transactions.
    async fn commit_to(
        &self,
        table: DeltaTable,
        name: &str,
        batches: Vec<RecordBatch>,
        operation: &str,
        txns: Vec<&AppTransaction>,
    ) -> Result<i64> {
        let mut meta = serde_json::Map::new();
        meta.insert("regrpo.operation".into(), operation.into());
        let props = CommitProperties::default()
            .with_metadata(meta)
            .with_max_retries(COMMIT_RETRIES)
            .with_application_transactions(txns.iter().map(|t| Transaction::new(&t.app_id, t.version)).collect());
        let batches = batches.iter().map(|b| cluster(name, b)).collect::<Result<Vec<_>>>()?;
        let table = table
            .write(batches)
            .with_save_mode(SaveMode::Append)
            .with_writer_properties(writer_properties(name))
            .with_commit_properties(props)
            .await
            .table(name)?;
        Ok(table.version().unwrap_or(0) as i64)
    }

    /// The last version application `app_id` recorded in table `name` with
    /// [`commit_as`](Self::commit_as), if it recorded one.
    pub async fn transaction_version(&self, name: &str, app_id: &str) -> Result<Option<i64>> {
        let table = self.load(name, None).await?;
        let state = table.snapshot().map_err(|e| Error::Internal(e.to_string()))?;
        state.transaction_version(table.log_store().as_ref(), app_id).await.table(name)
    }

    /// An appender that skips rows already in the table (or already appended through it), by
    /// any writer: see [`Appender::append`].
    pub async fn appender<R: Record>(&self) -> Result<Appender<R>> {
        let version = self.load(R::TABLE, None).await?.version().unwrap_or(0) as i64;
        let seen = self.id_fingerprints::<R>(version).await?;
        Ok(Appender { repo: self.clone(), seen, version, _rows: std::marker::PhantomData })
    }

    /// Fingerprints of the ids of a record table at `version`.
    async fn id_fingerprints<R: Record>(&self, version: i64) -> Result<HashSet<u128>> {
        let mut seen = HashSet::new();
        if !R::ID.is_empty() {
            for batch in self.read_batches(R::TABLE, Some(version), Some(&[R::ID])).await? {
                let col = cast(batch.column(0), &DataType::Utf8)?;
                let col = col
                    .as_any()
                    .downcast_ref::<StringArray>()
                    .ok_or_else(|| Error::Internal("id column is not a string".into()))?;
                seen.extend(col.iter().flatten().map(fingerprint));
            }
        }
        Ok(seen)
    }

    /// Rewrites a table's small files into large ones — clustered by `error_type` and `tool`
    /// (Z-order) for `near_misses`, `rot` and `rollouts`, plain compaction for the others — as
    /// one new version. Older versions (and so every snapshot) keep their files until `gc`.
    pub async fn optimize(&self, name: &str) -> Result<Optimized> {
        let table = self.load(name, None).await?;
        let before = table.version().unwrap_or(0) as i64;
        let files_before = active_files(&table)?.len();
        let columns = cluster_columns(name);
        let kind = if columns.is_empty() {
            OptimizeType::Compact
        } else {
            OptimizeType::ZOrder(columns.iter().map(|c| c.to_string()).collect())
        };
        let (table, metrics) = table
            .optimize()
            .with_type(kind)
            .with_writer_properties(writer_properties(name))
            .with_commit_properties(CommitProperties::default().with_metadata(serde_json::Map::from_iter([(
                "regrpo.operation".to_string(),
                serde_json::Value::from("optimize"),
            )])))
            .await
            .table(name)?;
        let after = table.version().unwrap_or(0) as i64;
        Ok(Optimized {
            table: name.to_string(),
            version_before: before,
            version_after: after,
            files_before,
            files_removed: metrics.num_files_removed,
            files_added: metrics.num_files_added,
            clustered_by: columns.iter().map(|c| c.to_string()).collect(),
        })
    }
}

/// How often a commit that lost a race to another writer is checked and tried again. Appends
/// never conflict with appends (Delta's conflict checker lets blind appends through), so each
/// retry only waits for a version number; shards of an engine run racing on one table need a
/// few at most.
const COMMIT_RETRIES: usize = 100;

/// The folder of the tools' files (see [`Repository::sandboxes`]).
const SANDBOXES: &str = "sandboxes";

/// How many objects move at once when sandboxes are copied to or from an object store.
const TRANSFERS: usize = 16;

/// An application's mark in a commit: `app_id` has written up to `version` (Delta `txn`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppTransaction {
    pub app_id: String,
    pub version: i64,
}

/// What `optimize` did to one table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Optimized {
    pub table: String,
    pub version_before: i64,
    /// Equal to `version_before` when there was nothing to rewrite.
    pub version_after: i64,
    pub files_before: usize,
    pub files_removed: u64,
    pub files_added: u64,
    pub clustered_by: Vec<String>,
}

/// The columns a table's files are clustered by: the columns curators filter on.
pub fn cluster_columns(table: &str) -> &'static [&'static str] {
    match table {
        "near_misses" | "rot" => &["error_type", "tool"],
        "rollouts" => &["error_type"],
        _ => &[],
    }
}

/// Low-cardinality columns: dictionary-encoded (a few distinct values per row group). Other
/// columns (ids, free text, JSON) are written plain, where a dictionary only costs.
fn dictionary_columns(table: &str) -> &'static [&'static str] {
    match table {
        "trajectories" => &["source", "source_file", "ingest_batch"],
        "near_misses" => &[
            "error_type",
            "tool",
            "operator",
            "source",
            "verdict",
            "engine_run_id",
            "execution.status",
            "execution.error_code",
            "execution.tool_version",
            "original_action.tool",
            "original_action.surface",
            "failed_action.tool",
            "failed_action.surface",
        ],
        "rot" => &[
            "error_type",
            "tool",
            "generator",
            "engine_run_id",
            "failed_action.tool",
            "failed_action.surface",
            "corrected_action.tool",
            "corrected_action.surface",
        ],
        "rejects" => &["format", "file", "ingest_batch"],
        "runs" => &["kind", "snapshot", "status"],
        "metrics" => &["run_id", "name", "split"],
        "rollouts" => &["run_id", "state_kind", "error_type", "exec_status", "parsed_action.tool"],
        _ => &[],
    }
}

/// Parquet settings: zstd, statistics on every column page, dictionaries for low-cardinality
/// columns only, small pages for text read row by row, row groups of at most 64k rows (rows
/// here are whole trajectories or RoT samples, so groups stay in the tens of MB, well under
/// 128 MB).
pub fn writer_properties(table: &str) -> WriterProperties {
    let mut b = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(1).unwrap_or_default()))
        .set_statistics_enabled(EnabledStatistics::Page)
        .set_dictionary_enabled(false)
        .set_max_row_group_row_count(Some(64 * 1024));
    let path = |c: &str| ColumnPath::from(c.split('.').map(str::to_string).collect::<Vec<_>>());
    for c in dictionary_columns(table) {
        b = b.set_column_dictionary_enabled(path(c), true);
    }
    for c in row_lookup_columns(table) {
        b = b.set_column_data_page_size_limit(path(c), ROW_LOOKUP_PAGE_BYTES);
    }
    b.build()
}

/// Page size of the columns read row by row (see [`row_lookup_columns`]): the writer closes a
/// page at the first 1,024-row write batch past it, so these pages hold about 1,024 rows.
const ROW_LOOKUP_PAGE_BYTES: usize = 64 * 1024;

/// Columns a reader fetches for a few scattered rows (the web view's free text reads the rows
/// its word index picks, with a row selection): small pages, so a scattered row costs one small
/// page to decompress rather than a 1 MB one (~7,000 rows of observation text).
fn row_lookup_columns(table: &str) -> &'static [&'static str] {
    match table {
        "rot" => &["rot_id", "evidence", "failed_observation"],
        "near_misses" => &["near_miss_id", "execution.text"],
        _ => &[],
    }
}

/// Sorts a batch by the table's cluster columns, so each commit's files hold runs of one
/// ErrorType and tool and their statistics prune well.
fn cluster(table: &str, batch: &RecordBatch) -> Result<RecordBatch> {
    let columns = cluster_columns(table);
    if columns.is_empty() || batch.num_rows() < 2 {
        return Ok(batch.clone());
    }
    let keys: Vec<SortColumn> = columns
        .iter()
        .filter_map(|c| batch.column_by_name(c))
        .map(|values| SortColumn { values: Arc::clone(values), options: None })
        .collect();
    let order = lexsort_to_indices(&keys, None)?;
    Ok(take_record_batch(batch, &order)?)
}

/// A 128-bit fingerprint of a row id: what an appender remembers of each id, so its memory is
/// 16 bytes a row rather than the id's text (1.75M ingested rows: 330 MiB less). Two ids of one
/// table collide with probability about n²/2¹²⁹ — never, at any size a table reaches.
fn fingerprint(id: &str) -> u128 {
    use std::hash::{Hash, Hasher};
    let half = |salt: u8| {
        let mut h = std::hash::DefaultHasher::new();
        salt.hash(&mut h);
        id.hash(&mut h);
        h.finish() as u128
    };
    (half(0) << 64) | half(1)
}

/// Appends records, skipping any whose id the table already holds.
pub struct Appender<R: Record> {
    repo: Repository,
    /// Fingerprints of the ids in the table (at `version`) and appended since.
    seen: HashSet<u128>,
    /// The table version `seen` holds every id of.
    version: i64,
    _rows: std::marker::PhantomData<R>,
}

/// What one append did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    pub added: usize,
    pub duplicates: usize,
    pub version: Option<i64>,
}

impl<R: Record> Appender<R> {
    /// Whether a row with this id exists (or was appended here).
    pub fn contains(&self, id: &str) -> bool {
        self.seen.contains(&fingerprint(id))
    }

    /// Appends the rows not seen before, as one commit.
    ///
    /// Every append to a table of ids carries one application transaction ([`APPEND_APP_ID`]),
    /// so two appends that race (two ingests, engine shards) are a conflict to Delta: the one that
    /// lands second re-reads the table's ids as the first left them, drops the rows now there,
    /// and commits again. A row added by both lands once, whichever process adds it.
    pub async fn append(&mut self, records: Vec<R>, operation: &str) -> Result<Appended> {
        self.append_as(records, operation, None).await
    }

    /// [`append`](Self::append), the commit carrying an application transaction (see
    /// [`Repository::commit_as`]). Nothing new to write means no commit and no mark.
    pub async fn append_as(
        &mut self,
        records: Vec<R>,
        operation: &str,
        txn: Option<&AppTransaction>,
    ) -> Result<Appended> {
        let total = records.len();
        if R::ID.is_empty() {
            let version = self.repo.commit_as(&records, operation, txn).await?;
            return Ok(Appended { added: total, duplicates: 0, version });
        }
        let mut batch_ids = HashSet::new();
        let mut fresh: Vec<R> = records.into_iter().filter(|r| batch_ids.insert(fingerprint(r.id()))).collect();
        for attempt in 0.. {
            let table = self.repo.load(R::TABLE, None).await?;
            let read = table.version().unwrap_or(0) as i64;
            if read != self.version {
                // Another writer committed since: its ids count too.
                self.seen.extend(self.repo.id_fingerprints::<R>(read).await?);
                self.version = read;
            }
            fresh.retain(|r| !self.seen.contains(&fingerprint(r.id())));
            if fresh.is_empty() {
                return Ok(Appended { added: 0, duplicates: total, version: None });
            }
            regrpo_schemas::pause_point(&format!("append:{}", R::TABLE));
            let mark = AppTransaction { app_id: APPEND_APP_ID.into(), version: read + 1 };
            let batch = regrpo_schemas::to_batch(&fresh)?;
            let txns = std::iter::once(&mark).chain(txn).collect();
            match self.repo.commit_to(table, R::TABLE, vec![batch], operation, txns).await {
                Ok(version) => {
                    self.seen.extend(fresh.iter().map(|r| fingerprint(r.id())));
                    // With no commit between the read and this one, `seen` is the table's.
                    if version == read + 1 {
                        self.version = version;
                    }
                    return Ok(Appended {
                        added: fresh.len(),
                        duplicates: total - fresh.len(),
                        version: Some(version),
                    });
                }
                Err(e) if attempt < APPEND_ATTEMPTS && e.is_concurrent_append() => continue,
                Err(e) => return Err(e),
            }
        }
        unreachable!("the loop returns")
    }
}

/// The application id every [`Appender`] commit carries (see [`Appender::append`]).
pub const APPEND_APP_ID: &str = "regrpo.append";

/// How often an append re-reads the ids and commits again after losing a race.
const APPEND_ATTEMPTS: usize = 50;

/// The active data files of a loaded table version: `(relative path, size, rows)`.
pub(crate) fn active_files(table: &DeltaTable) -> Result<Vec<(String, i64, i64)>> {
    let state = table.snapshot().map_err(|e| Error::Internal(e.to_string()))?;
    let mut files: Vec<_> = state
        .log_data()
        .iter()
        .map(|f| (f.path().to_string(), f.size(), f.num_records().unwrap_or(0) as i64))
        .collect();
    files.sort();
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;
    use regrpo_schemas::Reject;

    fn reject(i: i64) -> Reject {
        Reject {
            reject_id: format!("r{i}"),
            format: "mat".into(),
            file: "f".into(),
            line: None,
            byte_offset: i,
            reason: "bad".into(),
            excerpt: String::new(),
            ingest_batch: "b".into(),
        }
    }

    #[tokio::test]
    async fn appends_are_idempotent_and_read_back_equal() {
        let dir = tempfile::tempdir().unwrap();
        let repo = Repository::init(dir.path().join("repo")).await.unwrap();
        assert!(matches!(Repository::init(repo.workdir()).await, Err(Error::AlreadyExists { .. })));
        let mut app = repo.appender::<Reject>().await.unwrap();
        let first = app.append(vec![reject(1), reject(2), reject(2)], "test").await.unwrap();
        assert_eq!((first.added, first.duplicates, first.version), (2, 1, Some(1)));
        let mut again = Repository::open(repo.workdir()).await.unwrap().appender::<Reject>().await.unwrap();
        let second = again.append(vec![reject(1), reject(2)], "test").await.unwrap();
        assert_eq!((second.added, second.version), (0, None));
        let mut rows = repo.read::<Reject>(None).await.unwrap();
        rows.sort_by(|a, b| a.reject_id.cmp(&b.reject_id));
        assert_eq!(rows, vec![reject(1), reject(2)]);
        assert_eq!(repo.read::<Reject>(Some(0)).await.unwrap(), vec![]);
    }

    #[tokio::test]
    async fn a_commit_records_its_application_transaction() {
        let dir = tempfile::tempdir().unwrap();
        let repo = Repository::init(dir.path().join("repo")).await.unwrap();
        assert_eq!(repo.transaction_version("rejects", "writer-a").await.unwrap(), None);
        let mut app = repo.appender::<Reject>().await.unwrap();
        let mark = |v| AppTransaction { app_id: "writer-a".into(), version: v };
        app.append_as(vec![reject(1)], "test", Some(&mark(1))).await.unwrap();
        app.append_as(vec![reject(2)], "test", Some(&mark(2))).await.unwrap();
        app.append(vec![reject(3)], "test").await.unwrap();
        // Nothing new: no commit, so the mark stays where the last rows landed.
        assert_eq!(app.append_as(vec![reject(3)], "test", Some(&mark(3))).await.unwrap().version, None);
        assert_eq!(repo.transaction_version("rejects", "writer-a").await.unwrap(), Some(2));
        assert_eq!(repo.transaction_version("rejects", "writer-b").await.unwrap(), None);
    }

    #[tokio::test]
    async fn opening_a_plain_folder_says_what_to_do() {
        let dir = tempfile::tempdir().unwrap();
        let err = Repository::open(dir.path()).await.unwrap_err();
        assert!(err.to_string().contains("regrpo init"), "{err}");
    }
}
