//! A table at its pinned Delta version, read as the plain Parquet files that version names.
//!
//! The Delta provider replays the version's file actions and re-parses every file's JSON
//! statistics on each scan, reads all files as one group, and rewrites every batch it returns.
//! Our tables need none of that: no partition columns, no deletion vectors, no column mapping.
//! For such a version the session registers DataFusion's own Parquet listing over exactly the
//! files the Delta log names (not a directory scan: files a later version or a killed writer
//! left are never read), with the Delta table's schema, its statistics collected once and
//! cached, footers cached across queries, and the scan split across the cores. A version that
//! needs the Delta machinery keeps the Delta provider.

use std::sync::Arc;

use datafusion::catalog::TableProvider;
use datafusion::catalog::view::ViewTable;
use datafusion::common::ScalarValue;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl};
use datafusion::datasource::physical_plan::parquet::transform_schema_to_view;
use datafusion::execution::context::SessionState;
use datafusion::functions::expr_fn::random;
use datafusion::logical_expr::{LogicalPlanBuilder, col, lit};
use deltalake::DeltaTable;

use crate::error::{Error, Result};

/// A Parquet file a table's version names: where it is and how many bytes it holds.
#[derive(Debug, Clone)]
pub(crate) struct PinnedFile {
    pub url: ListingTableUrl,
    pub size: u64,
}

/// The files `table`'s version names, or `None` when the version needs the Delta provider
/// (partitions, deletion vectors, column mapping): plain Parquet would read it wrongly.
pub(crate) fn files(table: &DeltaTable) -> Result<Option<Vec<PinnedFile>>> {
    let snapshot = table.snapshot().map_err(|e| Error::Usage(format!("Delta snapshot: {e}")))?;
    let metadata = snapshot.metadata();
    let mapped = metadata.configuration().get("delta.columnMapping.mode").is_some_and(|m| m != "none");
    if !metadata.partition_columns().is_empty() || mapped {
        return Ok(None);
    }
    let mut root = table.table_url().clone();
    if !root.path().ends_with('/') {
        let dir = format!("{}/", root.path());
        root.set_path(&dir);
    }
    let mut files = Vec::new();
    for file in snapshot.log_data().iter() {
        if file.deletion_vector_descriptor().is_some() {
            return Ok(None);
        }
        let url = root.join(&file.path()).map_err(|e| Error::Usage(format!("file URL of {}: {e}", file.path())))?;
        files.push(PinnedFile { url: ListingTableUrl::parse(url.as_str())?, size: file.size().max(0) as u64 });
    }
    Ok(Some(files))
}

/// An empty table of the Delta provider's schema, for a version with no files, in a form that
/// can travel to a cluster: a view of one row of typed NULLs filtered by `random() < 0`. (An
/// empty relation loses its columns on the way to the scheduler, a constant `false` filter or
/// `LIMIT 0` is folded into one, and an empty listing gives a stage of no partitions, which a
/// cluster never finishes; a volatile filter is kept, and drops the row when it runs.)
pub fn empty(delta: &Arc<dyn TableProvider>) -> Result<Arc<dyn TableProvider>> {
    let schema = transform_schema_to_view(&delta.schema());
    let row =
        schema.fields().iter().map(|f| Ok(lit(ScalarValue::try_from(f.data_type())?))).collect::<Result<Vec<_>>>()?;
    let named = schema.fields().iter().enumerate().map(|(i, f)| col(format!("column{}", i + 1)).alias(f.name()));
    let plan = LogicalPlanBuilder::values(vec![row])?.filter(random().lt(lit(0.0)))?.project(named)?.build()?;
    Ok(Arc::new(ViewTable::new(plan, None)))
}

/// The listing of `table`'s pinned files, or `None` when the version needs the Delta provider
/// (partitions, deletion vectors, column mapping) or has no file to infer anything from.
pub fn listing(
    table: &DeltaTable,
    delta: &Arc<dyn TableProvider>,
    state: &SessionState,
) -> Result<Option<Arc<dyn TableProvider>>> {
    let urls: Vec<ListingTableUrl> = match files(table)? {
        Some(files) if !files.is_empty() => files.into_iter().map(|f| f.url).collect(),
        _ => return Ok(None),
    };
    let options = ListingOptions::new(Arc::new(ParquetFormat::default())).with_file_extension(".parquet");
    // Strings come out of the scan as views (no copy of the bytes), as the Delta provider's do.
    let schema = Arc::new(transform_schema_to_view(&delta.schema()));
    let config = ListingTableConfig::new_with_multi_paths(urls).with_listing_options(options).with_schema(schema);
    let cache = state.runtime_env().cache_manager.get_file_statistic_cache();
    Ok(Some(Arc::new(ListingTable::try_new(config)?.with_cache(cache))))
}
