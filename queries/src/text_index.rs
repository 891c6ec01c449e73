//! A word index over a table's text columns: substring search that reads only the rows which
//! can match, not the whole table.
//!
//! A case-insensitive substring condition (`icontains(evidence, 'report_4242.csv')`) cannot
//! be pruned by Parquet statistics, so a scan decodes every row's text: at 2M RoT rows about
//! 260 MB, ~490 ms on 2 cores. The index maps each *word* — a maximal run of letters and digits
//! of the lower-cased text — to the rows of each Parquet file that hold it (a roaring bitmap of
//! row numbers within the file).
//!
//! A needle is cut into words the same way, and each word knows whether the needle's own
//! characters bound it on the left and on the right. Wherever the needle occurs in a text, a
//! word bounded on both sides is a whole word of that text; one bounded only on the left is the
//! start of a word, only on the right the end of one, and an unbounded word (the needle is one
//! run of letters and digits) lies inside one. The rows holding, for every needle word, some
//! word that fits it are a superset of the rows holding the needle. [`TextIndex::provider`]
//! serves just those rows (each file read with a row selection, so pages without a candidate
//! are skipped), and the caller's query applies the exact condition to them: the answers are
//! those of a scan, row for row.
//!
//! ```text
//!  needle "report_4242.csv" ─▶ words: "report" (end of a word) · "4242" (whole) · "csv" (start)
//!                                       │ dictionary: which indexed words fit each
//!                                       ▼
//!  per file: ∩ over needle words of ∪ bitmaps ─▶ row selection ─▶ Parquet scan of those rows
//! ```
//!
//! The index is built from the files a session's version pins (immutable), held in memory, and
//! answers for that version only. Tables whose version needs Delta's own reader (partitions,
//! deletion vectors, column mapping) are not indexed.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use arrow::datatypes::{DataType, SchemaRef};
use async_trait::async_trait;
use datafusion::catalog::{Session as CatalogSession, TableProvider};
use datafusion::datasource::TableType;
use datafusion::datasource::file_format::FileFormat;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::PartitionedFile;
use datafusion::datasource::physical_plan::parquet::{
    DefaultParquetFileReaderFactory, ParquetAccessPlan, ParquetFileReaderFactory, RowGroupAccess,
};
use datafusion::datasource::physical_plan::{FileGroup, FileScanConfigBuilder};
use datafusion::datasource::table_schema::TableSchema;
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown};
use datafusion::object_store::ObjectStore;
use datafusion::object_store::path::Path as ObjectPath;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::metrics::ExecutionPlanMetricsSet;
use futures::{StreamExt, TryStreamExt};
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::{RowSelection, RowSelector};
use parquet::arrow::async_reader::{AsyncFileReader, ParquetRecordBatchStreamBuilder};
use regrpo_datasets::Repository;
use roaring::RoaringBitmap;

use crate::error::{Error, Result};
use crate::session::Session;

/// Dictionary words one needle word may fit before the index gives up on it (a one-letter
/// needle fits most words; a scan is as cheap as unioning them).
const MAX_FITTING_WORDS: usize = 50_000;

/// The words of a text or a needle, with their byte offsets: maximal runs of letters and
/// digits (of its lower case: callers lower-case first).
fn words(lower: &str) -> impl Iterator<Item = (usize, &str)> {
    let mut chars = lower.char_indices().peekable();
    std::iter::from_fn(move || {
        while chars.peek().is_some_and(|(_, c)| !c.is_alphanumeric()) {
            chars.next();
        }
        let (start, _) = *chars.peek()?;
        let mut end = start;
        while let Some(&(i, c)) = chars.peek() {
            if !c.is_alphanumeric() {
                break;
            }
            end = i + c.len_utf8();
            chars.next();
        }
        Some((start, &lower[start..end]))
    })
}

/// How an indexed word must relate to a needle word for the needle to be possible there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fit {
    /// The needle bounds it on both sides: the same word.
    Whole,
    /// Bounded on the left only (it ends the needle): a word starting with it.
    Start,
    /// Bounded on the right only (it starts the needle): a word ending with it.
    End,
    /// The needle is one run of letters and digits: a word containing it.
    Inside,
}

impl Fit {
    fn fits(self, word: &str, needle: &str) -> bool {
        match self {
            Fit::Whole => word == needle,
            Fit::Start => word.starts_with(needle),
            Fit::End => word.ends_with(needle),
            Fit::Inside => memchr::memmem::find(word.as_bytes(), needle.as_bytes()).is_some(),
        }
    }
}

/// A needle's words, each with how an indexed word must fit it.
fn needle_words(needle: &str) -> Vec<(String, Fit)> {
    let lower = needle.to_lowercase();
    words(&lower)
        .map(|(start, w)| {
            let left = start > 0;
            let right = start + w.len() < lower.len();
            let fit = match (left, right) {
                (true, true) => Fit::Whole,
                (true, false) => Fit::Start,
                (false, true) => Fit::End,
                (false, false) => Fit::Inside,
            };
            (w.to_string(), fit)
        })
        .collect()
}

/// One indexed Parquet file.
struct FileIndex {
    file: PartitionedFile,
    /// Rows in each row group, in file order.
    row_groups: Vec<u64>,
    /// Dictionary word id → the file's rows (0-based, in file order) holding the word.
    postings: HashMap<u32, RoaringBitmap>,
}

/// The rows of each indexed file that can hold a needle.
#[derive(Debug, Clone, Default)]
pub struct Candidates {
    files: Vec<(usize, RoaringBitmap)>,
}

impl Candidates {
    /// How many rows in all.
    pub fn rows(&self) -> u64 {
        self.files.iter().map(|(_, b)| b.len()).sum()
    }
}

/// A word index over some text columns of one table at one version; see the module docs.
pub struct TextIndex {
    table: String,
    schema: SchemaRef,
    store: ObjectStoreUrl,
    dictionary: Vec<Box<str>>,
    files: Vec<FileIndex>,
    rows: u64,
}

impl std::fmt::Debug for TextIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TextIndex")
            .field("table", &self.table)
            .field("files", &self.files.len())
            .field("rows", &self.rows)
            .field("words", &self.dictionary.len())
            .finish()
    }
}

/// What one file's build produced, before its words join the shared dictionary.
struct FileWords {
    file: PartitionedFile,
    row_groups: Vec<u64>,
    postings: HashMap<Box<str>, RoaringBitmap>,
}

impl TextIndex {
    /// Indexes `columns` (dotted paths for struct fields: `execution.text`) of `table` at the
    /// version `session` reads. `None` when the session has no such table, or its version needs
    /// Delta's own reader.
    pub async fn build(
        repo: &Repository,
        session: &Session,
        table: &str,
        columns: &[&str],
    ) -> Result<Option<TextIndex>> {
        let Some(version) = session.versions().get(table).copied() else {
            return Ok(None);
        };
        let delta = repo.load(table, Some(version)).await?;
        let Some(pinned) = crate::pinned::files(&delta)? else {
            return Ok(None);
        };
        let ctx = session.context();
        let schema = ctx.table_provider(table).await?.schema();
        let Some(first) = pinned.first() else {
            return Ok(Some(TextIndex {
                table: table.to_string(),
                schema,
                store: ObjectStoreUrl::local_filesystem(),
                dictionary: Vec::new(),
                files: Vec::new(),
                rows: 0,
            }));
        };
        let store_url = first.url.object_store();
        let store = ctx.runtime_env().object_store(&store_url)?;
        let columns: Vec<String> = columns.iter().map(|c| c.to_string()).collect();
        let parallel = std::thread::available_parallelism().map_or(2, |n| n.get());
        let built: Vec<FileWords> = futures::stream::iter(pinned.into_iter().map(|f| {
            let (store, columns) = (Arc::clone(&store), columns.clone());
            async move { index_file(store, f.url.prefix().clone(), f.size, columns).await }
        }))
        .buffered(parallel)
        .try_collect()
        .await?;

        // One dictionary for all files: a needle word is fitted against each word once.
        let mut ids: HashMap<Box<str>, u32> = HashMap::new();
        let mut dictionary: Vec<Box<str>> = Vec::new();
        let mut files = Vec::with_capacity(built.len());
        let mut rows = 0;
        for fw in built {
            rows += fw.row_groups.iter().sum::<u64>();
            let postings = fw
                .postings
                .into_iter()
                .map(|(word, rows)| {
                    let id = *ids.entry(word).or_insert_with_key(|w| {
                        dictionary.push(w.clone());
                        (dictionary.len() - 1) as u32
                    });
                    (id, rows)
                })
                .collect();
            files.push(FileIndex { file: fw.file, row_groups: fw.row_groups, postings });
        }
        Ok(Some(TextIndex { table: table.to_string(), schema, store: store_url, dictionary, files, rows }))
    }

    /// The table this index serves.
    pub fn table(&self) -> &str {
        &self.table
    }

    /// Rows indexed.
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// Distinct words indexed.
    pub fn words(&self) -> usize {
        self.dictionary.len()
    }

    /// The rows that can hold `needle` (case-insensitively) in an indexed column: a superset of
    /// those that do. `None` when the index cannot narrow the search (the needle has no letter
    /// or digit, a word of it fits too much of the dictionary, or over half the rows can hold
    /// it): scan instead.
    pub fn candidates(&self, needle: &str) -> Option<Candidates> {
        let needle = needle_words(needle);
        if needle.is_empty() {
            return None;
        }
        let mut fitting: Vec<Vec<u32>> = Vec::with_capacity(needle.len());
        for (w, fit) in &needle {
            let ids: Vec<u32> = self
                .dictionary
                .iter()
                .enumerate()
                .filter(|(_, word)| fit.fits(word, w))
                .map(|(i, _)| i as u32)
                .collect();
            if ids.len() > MAX_FITTING_WORDS {
                return None;
            }
            if ids.is_empty() {
                return Some(Candidates::default());
            }
            fitting.push(ids);
        }
        let mut out = Candidates::default();
        for (i, file) in self.files.iter().enumerate() {
            let mut rows: Option<RoaringBitmap> = None;
            for ids in &fitting {
                let mut any = RoaringBitmap::new();
                for id in ids {
                    if let Some(b) = file.postings.get(id) {
                        any |= b;
                    }
                }
                rows = Some(match rows {
                    None => any,
                    Some(r) => r & any,
                });
                if rows.as_ref().is_some_and(RoaringBitmap::is_empty) {
                    break;
                }
            }
            if let Some(r) = rows.filter(|r| !r.is_empty()) {
                out.files.push((i, r));
            }
        }
        // Past half the rows, reading by row selection saves nothing over the scan.
        (out.rows() * 2 <= self.rows).then_some(out)
    }

    /// A table of the same schema serving only `candidates`' rows. Filters are applied by the
    /// query above it (and pushed into the scan when the session pushes filters down).
    pub fn provider(&self, candidates: &Candidates) -> Arc<dyn TableProvider> {
        let files = candidates
            .files
            .iter()
            .map(|(i, rows)| {
                let f = &self.files[*i];
                f.file.clone().with_extension(access_plan(&f.row_groups, rows))
            })
            .collect();
        Arc::new(IndexedRows { schema: Arc::clone(&self.schema), store: self.store.clone(), files })
    }
}

/// Which rows of each row group to read: runs of selected rows, a whole group where every row
/// is selected, nothing where none is.
fn access_plan(row_groups: &[u64], rows: &RoaringBitmap) -> ParquetAccessPlan {
    let mut start = 0u64;
    let access = row_groups
        .iter()
        .map(|&n| {
            let end = start + n;
            let lo = start.min(u64::from(u32::MAX)) as u32;
            let mut selectors: Vec<RowSelector> = Vec::new();
            let (mut at, mut selected) = (start, 0u64);
            for r in rows.range(lo..).map(u64::from).take_while(|&r| r < end) {
                if r > at {
                    selectors.push(RowSelector::skip((r - at) as usize));
                }
                match selectors.last_mut() {
                    Some(last) if !last.skip && r == at => last.row_count += 1,
                    _ => selectors.push(RowSelector::select(1)),
                }
                at = r + 1;
                selected += 1;
            }
            let access = if selected == 0 {
                RowGroupAccess::Skip
            } else if selected == n {
                RowGroupAccess::Scan
            } else {
                if at < end {
                    selectors.push(RowSelector::skip((end - at) as usize));
                }
                RowGroupAccess::Selection(RowSelection::from(selectors))
            };
            start = end;
            access
        })
        .collect();
    ParquetAccessPlan::new(access)
}

/// Reads one file's indexed columns in file order and maps each word to the rows holding it.
async fn index_file(
    store: Arc<dyn ObjectStore>,
    path: ObjectPath,
    size: u64,
    columns: Vec<String>,
) -> Result<FileWords> {
    let file = PartitionedFile::new(path.to_string(), size);
    let what = |e: parquet::errors::ParquetError| Error::Usage(format!("text index: reading {path}: {e}"));
    // (`AsyncFileReader` is `Send` itself; the reader trait is implemented on the plain box.)
    let reader: Box<dyn AsyncFileReader> = DefaultParquetFileReaderFactory::new(store).create_reader(
        0,
        file.clone(),
        None,
        &ExecutionPlanMetricsSet::new(),
    )?;
    let builder = ParquetRecordBatchStreamBuilder::new(reader).await.map_err(what)?;
    let row_groups: Vec<u64> = builder.metadata().row_groups().iter().map(|g| g.num_rows().max(0) as u64).collect();
    let mask = ProjectionMask::columns(builder.parquet_schema(), columns.iter().map(String::as_str));
    let mut stream = builder.with_projection(mask).with_batch_size(8192).build().map_err(what)?;
    let mut postings: HashMap<Box<str>, RoaringBitmap> = HashMap::new();
    let mut row = 0u32;
    while let Some(batch) = stream.next().await {
        let batch = batch.map_err(what)?;
        let n = batch.num_rows() as u32;
        let leaves: Vec<ArrayRef> = columns.iter().filter_map(|c| leaf(&batch, c)).collect();
        // Word splitting is CPU work: off the async workers, one batch at a time.
        postings = tokio::task::spawn_blocking(move || {
            let mut scratch = String::new();
            for col in &leaves {
                for_each_text(col, |i, text| add_words(&mut postings, &mut scratch, row + i as u32, text));
            }
            postings
        })
        .await
        .map_err(|e| Error::Usage(format!("text index: {e}")))?;
        row += n;
    }
    Ok(FileWords { file, row_groups, postings })
}

/// The column at dotted `path` of `batch` (a struct field for `a.b`).
fn leaf(batch: &RecordBatch, path: &str) -> Option<ArrayRef> {
    let mut parts = path.split('.');
    let mut col = Arc::clone(batch.column_by_name(parts.next()?)?);
    for p in parts {
        col = Arc::clone(col.as_struct_opt()?.column_by_name(p)?);
    }
    Some(col)
}

/// Calls `f(row, text)` for each non-null value of a string column.
fn for_each_text(col: &ArrayRef, mut f: impl FnMut(usize, &str)) {
    match col.data_type() {
        DataType::Utf8 => {
            col.as_string::<i32>().iter().enumerate().for_each(|(i, v)| v.into_iter().for_each(|t| f(i, t)))
        }
        DataType::LargeUtf8 => {
            col.as_string::<i64>().iter().enumerate().for_each(|(i, v)| v.into_iter().for_each(|t| f(i, t)))
        }
        DataType::Utf8View => {
            col.as_string_view().iter().enumerate().for_each(|(i, v)| v.into_iter().for_each(|t| f(i, t)))
        }
        _ => {}
    }
}

/// Adds row `row` to the bitmap of every word of `text`.
fn add_words(postings: &mut HashMap<Box<str>, RoaringBitmap>, scratch: &mut String, row: u32, text: &str) {
    let mut add = |w: &str| match postings.get_mut(w) {
        Some(b) => {
            // Within a column rows arrive in order and `try_push` appends; it refuses a row
            // not past the last one (a repeat, or a row an earlier column already passed).
            if b.try_push(row).is_err() {
                b.insert(row);
            }
        }
        None => {
            postings.insert(w.into(), RoaringBitmap::from_iter([row]));
        }
    };
    if text.is_ascii() {
        // The common case, without lower-casing the whole text first.
        for w in text.split(|c: char| !c.is_ascii_alphanumeric()).filter(|w| !w.is_empty()) {
            if w.bytes().any(|b| b.is_ascii_uppercase()) {
                scratch.clear();
                scratch.extend(w.chars().map(|c| c.to_ascii_lowercase()));
                add(scratch);
            } else {
                add(w);
            }
        }
    } else {
        let lower = text.to_lowercase();
        for (_, w) in words(&lower) {
            add(w);
        }
    }
}

/// The rows a [`TextIndex`] picked, as a table: a Parquet scan of those rows only.
#[derive(Debug)]
struct IndexedRows {
    schema: SchemaRef,
    store: ObjectStoreUrl,
    files: Vec<PartitionedFile>,
}

#[async_trait]
impl TableProvider for IndexedRows {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> datafusion::error::Result<Vec<TableProviderFilterPushDown>> {
        Ok(vec![TableProviderFilterPushDown::Inexact; filters.len()])
    }

    async fn scan(
        &self,
        state: &dyn CatalogSession,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        limit: Option<usize>,
    ) -> datafusion::error::Result<Arc<dyn ExecutionPlan>> {
        let format = ParquetFormat::default().with_options(state.table_options().parquet.clone());
        let source = format.file_source(TableSchema::from(Arc::clone(&self.schema)));
        // Files dealt round-robin to the session's partitions, so the cores share the reading.
        let parts = state.config().target_partitions().max(1).min(self.files.len().max(1));
        let mut groups = vec![Vec::new(); parts];
        for (i, f) in self.files.iter().enumerate() {
            groups[i % parts].push(f.clone());
        }
        let config = FileScanConfigBuilder::new(self.store.clone(), source)
            .with_file_groups(groups.into_iter().map(FileGroup::new).collect())
            .with_projection_indices(projection.cloned())?
            .with_limit(limit)
            .build();
        format.create_physical_plan(state, config).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn needle_words_know_where_the_needle_cuts_them() {
        assert_eq!(
            needle_words("Report_4242.CSV"),
            vec![("report".into(), Fit::End), ("4242".into(), Fit::Whole), ("csv".into(), Fit::Start)]
        );
        assert_eq!(needle_words("port"), vec![("port".into(), Fit::Inside)]);
        assert_eq!(needle_words(" port "), vec![("port".into(), Fit::Whole)]);
        assert!(needle_words("._ ").is_empty());
        // A separator of several bytes still bounds its neighbours.
        assert_eq!(needle_words("a—b"), vec![("a".into(), Fit::End), ("b".into(), Fit::Start)]);
        assert_eq!(needle_words("ÉTÉ"), vec![("été".into(), Fit::Inside)]);
    }

    #[test]
    fn access_plan_selects_the_rows_of_each_group() {
        let rows = RoaringBitmap::from_iter([1u32, 2, 7]);
        let plan = access_plan(&[4, 3, 2], &rows);
        let groups = plan.inner();
        assert_eq!(
            groups[0],
            RowGroupAccess::Selection(RowSelection::from(vec![
                RowSelector::skip(1),
                RowSelector::select(2),
                RowSelector::skip(1)
            ]))
        );
        assert_eq!(groups[1], RowGroupAccess::Skip);
        assert_eq!(
            groups[2],
            RowGroupAccess::Selection(RowSelection::from(vec![RowSelector::select(1), RowSelector::skip(1)]))
        );
        let every = access_plan(&[2, 2], &RoaringBitmap::from_iter([0u32, 1, 3]));
        assert_eq!(every.inner()[0], RowGroupAccess::Scan);
        assert_eq!(
            every.inner()[1],
            RowGroupAccess::Selection(RowSelection::from(vec![RowSelector::skip(1), RowSelector::select(1)]))
        );
    }
}
