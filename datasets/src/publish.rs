//! Publishing a snapshot as a dataset others train on (`regrpo publish`).
//!
//! Formats:
//! - `hf`: the Hugging Face dataset repository layout — `data/{split}-{i:05}-of-{n:05}.parquet`,
//!   a `README.md` dataset card (YAML header with `configs`, `dataset_info`, `splits`, license,
//!   task categories, size category, tags; a body with counts per ErrorType and tool and a PNG
//!   histogram) and `croissant.json` (Croissant 1.0 JSON-LD with every file's sha256).
//! - `regrpo-json`: the ReGRPO reference layout, written by [`crate::export`].
//! - `openai-jsonl`: `{split}.jsonl`, one `{"messages": […]}` chat per line, with `"tools"` (the
//!   declarations, OpenAI shape) when its trajectory declares any.
//!
//! Every format also writes `provenance.json`: the snapshot, its table versions and the options.
//!
//! **Splits** are the snapshot's own (`regrpo_schemas::split`): each source trajectory goes, with
//! all its rows, to the split its id hashes to under the snapshot's split spec, so the published
//! test split is the set `regrpo eval` holds out. **Mix** (optional) builds an SFT mixture per
//! split by the one mixture rule (`regrpo_schemas::mixture`): a target share of RoT rows against
//! clean trajectories, and a target ErrorType distribution, by dropping rows in seeded hash order
//! (never by repeating them).
//!
//! Nothing depends on the clock or on iteration order: publishing the same snapshot with the
//! same options twice gives byte-identical files.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::{DataType, Field, Fields, Schema, SchemaRef};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;
use polars::prelude::{
    self as pl, DataFrame, Expr, IntoLazy, LazyFrame, Literal, PolarsResult, SortMultipleOptions, UnionArgs, col,
    concat, df, len, lit, when,
};
use regrpo_schemas::id::sha256_hex;
use regrpo_schemas::mixture::{error_quotas, order_key, share_quotas};
use regrpo_schemas::react::trajectory_messages;
use regrpo_schemas::{ErrorType, Message, Rot, Trajectory};
use serde::Serialize;
use serde_json::{Value, json};

use crate::error::{Error, IoContext, Result};
use crate::repo::Repository;
use crate::snapshot::{self, Snapshot};

/// The published formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum PublishFormat {
    Hf,
    RegrpoJson,
    OpenaiJsonl,
}

impl std::str::FromStr for PublishFormat {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "hf" => Ok(PublishFormat::Hf),
            "regrpo-json" => Ok(PublishFormat::RegrpoJson),
            "openai-jsonl" => Ok(PublishFormat::OpenaiJsonl),
            _ => Err(format!("unknown format `{s}` (hf, regrpo-json, openai-jsonl)")),
        }
    }
}

/// The split names, in order.
pub const SPLITS: [&str; 3] = ["train", "validation", "test"];

/// How to publish.
#[derive(Debug, Clone, Serialize)]
pub struct PublishOptions {
    pub format: PublishFormat,
    /// Seeds the order in which the mixture drops rows.
    pub seed: u64,
    /// Only RoT rows that passed every gate (default).
    pub verified_only: bool,
    /// Mixture: the share of RoT rows against clean trajectories in every split.
    pub rot_fraction: Option<f64>,
    /// Mixture: the target share of each ErrorType among the RoT rows.
    pub error_mix: Option<BTreeMap<ErrorType, f64>>,
    /// The license of what regrpo itself generated (toolworld trajectories and their rows).
    pub license: String,
    /// The license of each external source's rows (`bfcl`, `mat`, `gta`, `openai`, `regrpo`),
    /// as the curator states it. A source without one makes the card's license `other` and is
    /// named in the card and in [`Published::unlicensed_sources`].
    pub source_licenses: BTreeMap<String, String>,
    pub pretty_name: String,
    /// Rows per Parquet file (files are sharded beyond it).
    pub rows_per_file: usize,
}

impl Default for PublishOptions {
    fn default() -> Self {
        PublishOptions {
            format: PublishFormat::Hf,
            seed: 0,
            verified_only: true,
            rot_fraction: None,
            error_mix: None,
            license: "cc-by-4.0".into(),
            source_licenses: BTreeMap::new(),
            pretty_name: "regrpo Reflection-of-Thought dataset".into(),
            rows_per_file: 200_000,
        }
    }
}

/// One published example.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Example {
    pub id: String,
    /// `rot` or `clean`.
    pub kind: String,
    pub source_trajectory_id: String,
    pub source: String,
    pub error_type: Option<String>,
    pub tool: Option<String>,
    pub evidence: Option<String>,
    pub fix_plan: Option<String>,
    pub failed_action: Option<String>,
    pub corrected_action: Option<String>,
    pub verified: Option<bool>,
    pub messages: Vec<Message>,
}

fn example_schema() -> SchemaRef {
    let message = DataType::Struct(Fields::from(vec![
        Field::new("role", DataType::Utf8, false),
        Field::new("content", DataType::Utf8, false),
    ]));
    let s = |n: &str| Field::new(n, DataType::Utf8, false);
    let o = |n: &str| Field::new(n, DataType::Utf8, true);
    Arc::new(Schema::new(vec![
        s("id"),
        s("kind"),
        s("source_trajectory_id"),
        s("source"),
        o("error_type"),
        o("tool"),
        o("evidence"),
        o("fix_plan"),
        o("failed_action"),
        o("corrected_action"),
        Field::new("verified", DataType::Boolean, true),
        Field::new("messages", DataType::List(Arc::new(Field::new("element", message, false))), false),
    ]))
}

/// The scalar columns of [`example_schema`] with their Hugging Face dtype (`string`, `bool`),
/// in schema order: the card's features and Croissant's fields are derived from it.
fn scalar_columns() -> impl Iterator<Item = (&'static str, &'static str)> {
    static SCHEMA: std::sync::OnceLock<SchemaRef> = std::sync::OnceLock::new();
    SCHEMA.get_or_init(example_schema).fields().iter().filter_map(|f| match f.data_type() {
        DataType::Utf8 => Some((f.name().as_str(), "string")),
        DataType::Boolean => Some((f.name().as_str(), "bool")),
        _ => None,
    })
}

/// What a publish wrote.
#[derive(Debug, Clone, Serialize)]
pub struct Published {
    pub out: PathBuf,
    pub snapshot: String,
    pub table_versions: BTreeMap<String, i64>,
    /// Examples per split.
    pub rows: BTreeMap<String, usize>,
    /// Splits that came out empty: no file, no card or Croissant entry.
    pub empty_splits: Vec<String>,
    /// Sources of published rows whose license was not given.
    pub unlicensed_sources: Vec<String>,
    pub files: Vec<PathBuf>,
}

/// The sources of the published rows: `(source, rows, license)` (`None`: not given).
fn source_licenses(splits: &[Vec<Example>], opts: &PublishOptions) -> Vec<(String, usize, Option<String>)> {
    let mut rows: BTreeMap<&str, usize> = BTreeMap::new();
    for e in splits.iter().flatten() {
        *rows.entry(e.source.as_str()).or_default() += 1;
    }
    rows.into_iter()
        .map(|(source, n)| {
            let license = match source {
                "toolworld" => Some(opts.license.clone()),
                other => opts.source_licenses.get(other).cloned(),
            };
            (source.to_string(), n, license)
        })
        .collect()
}

/// The license a `LICENSE` (or `LICENSE.txt`, `LICENSE.md`, `COPYING`) file in `dir` states, as
/// a Hugging Face license id, for the licenses a data folder commonly carries.
pub fn detect_license(dir: &Path) -> Option<String> {
    let text = ["LICENSE", "LICENSE.txt", "LICENSE.md", "COPYING"]
        .iter()
        .find_map(|n| std::fs::read(dir.join(n)).ok())
        .map(|b| String::from_utf8_lossy(&b[..b.len().min(4096)]).to_string())?;
    let t = text.split_whitespace().collect::<Vec<_>>().join(" ");
    let has = |s: &str| t.contains(s);
    Some(
        if has("Apache License") && has("Version 2.0") {
            "apache-2.0"
        } else if has("MIT License") || has("Permission is hereby granted, free of charge") {
            "mit"
        } else if has("Attribution-NonCommercial 4.0") {
            "cc-by-nc-4.0"
        } else if has("Attribution-ShareAlike 4.0") {
            "cc-by-sa-4.0"
        } else if has("Attribution 4.0 International") {
            "cc-by-4.0"
        } else if has("BSD 3-Clause") {
            "bsd-3-clause"
        } else {
            return None;
        }
        .to_string(),
    )
}

/// Licenses found beside the files each source's trajectories were ingested from (paths as
/// ingest recorded them, relative ones from the current folder): a source whose files agree
/// on one license gets it.
fn detected_source_licenses(trajectories: &[Trajectory]) -> BTreeMap<String, String> {
    let mut folders: BTreeMap<&str, std::collections::BTreeSet<&Path>> = BTreeMap::new();
    for t in trajectories.iter().filter(|t| t.source != "toolworld") {
        if let Some(dir) = Path::new(&t.source_file).parent() {
            folders.entry(t.source.as_str()).or_default().insert(dir);
        }
    }
    folders
        .into_iter()
        .filter_map(|(source, dirs)| {
            let found: std::collections::BTreeSet<Option<String>> = dirs
                .iter()
                .map(|d| detect_license(if d.as_os_str().is_empty() { Path::new(".") } else { d }))
                .collect();
            match found.into_iter().collect::<Vec<_>>().as_slice() {
                [Some(l)] => Some((source.to_string(), l.clone())),
                _ => None,
            }
        })
        .collect()
}

/// The license of the whole: the one license every source shares, or `other`.
fn dataset_license(sources: &[(String, usize, Option<String>)], opts: &PublishOptions) -> String {
    let mut licenses = sources.iter().map(|(_, _, l)| l.as_deref());
    match licenses.next() {
        None => opts.license.clone(),
        Some(Some(first)) if licenses.all(|l| l == Some(first)) => first.to_string(),
        _ => "other".into(),
    }
}

/// The sampling columns of `examples` as a polars frame, one row per example: `row` (its index),
/// `kind`, `trajectory`, `error_type`, `tool`.
fn sampling_frame(examples: &[Example]) -> PolarsResult<DataFrame> {
    df!(
        "row" => (0..examples.len() as u32).collect::<Vec<_>>(),
        "kind" => examples.iter().map(|e| e.kind.as_str()).collect::<Vec<_>>(),
        "trajectory" => examples.iter().map(|e| e.source_trajectory_id.as_str()).collect::<Vec<_>>(),
        "error_type" => examples.iter().map(|e| e.error_type.as_deref()).collect::<Vec<_>>(),
        "tool" => examples.iter().map(|e| e.tool.as_deref()).collect::<Vec<_>>(),
    )
}

/// [`sampling_frame`] plus column `name`: the seeded hash order of `key(example)`.
fn keyed_frame(examples: &[Example], seed: u64, name: &str, key: impl Fn(&Example) -> &str) -> PolarsResult<DataFrame> {
    let mut frame = sampling_frame(examples)?;
    let keys: Vec<String> = examples.iter().map(|e| order_key(seed, key(e))).collect();
    frame.with_column(pl::Column::new(name.into(), keys))?;
    Ok(frame)
}

/// Sorts by `partition` then `order` and numbers each row within its partition from 0 (`pos`).
fn number_within(frame: LazyFrame, partition: &[&str], order: &str) -> PolarsResult<LazyFrame> {
    let by: Vec<&str> = partition.iter().copied().chain([order]).collect();
    // Partitions are contiguous after the sort: a row's position is its index minus the first.
    let first = col("i").min().over(partition.iter().map(|c| col(*c)).collect::<Vec<_>>())?;
    Ok(frame
        .sort(by, SortMultipleOptions::default())
        .with_row_index("i", None)
        .with_column((col("i") - first).alias("pos"))
        .drop(pl::cols(["i"])))
}

/// `when(col(key) == k₁).then(v₁) … .otherwise(default)` over a small map.
fn lookup<V: Copy + Literal>(key: &str, map: &BTreeMap<String, V>, default: V) -> Expr {
    map.iter()
        .rev()
        .fold(lit(default), |otherwise, (k, v)| when(col(key).eq(lit(k.as_str()))).then(lit(*v)).otherwise(otherwise))
}

/// Runs `f` on a thread of its own and waits for it. Polars' planner blocks on its own async
/// runtime, which tokio refuses on a runtime's thread (a current-thread runtime panics), and
/// publishing runs inside tokio.
fn on_plain_thread<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| s.spawn(f).join().unwrap_or_else(|panic| std::panic::resume_unwind(panic)))
}

/// Applies the mixture to one split's examples: drops rows in seeded hash order (never repeats
/// them) until the RoT rows follow the ErrorType target and the RoT share is met; the rows left
/// are sorted by id.
pub fn mix(examples: &mut Vec<Example>, opts: &PublishOptions) -> Result<()> {
    if opts.error_mix.is_none() && opts.rot_fraction.is_none() {
        examples.sort_by(|a, b| a.id.cmp(&b.id));
        return Ok(());
    }
    let rows = on_plain_thread(|| mixed_rows(examples, opts))?;
    let mut kept: Vec<Example> = rows.into_iter().map(|r| examples[r as usize].clone()).collect();
    kept.sort_by(|a, b| a.id.cmp(&b.id));
    *examples = kept;
    Ok(())
}

/// The indexes of the rows the mixture keeps.
fn mixed_rows(examples: &[Example], opts: &PublishOptions) -> Result<Vec<u32>> {
    let mut frame = keyed_frame(examples, opts.seed, "id_key", |e| &e.id)?;
    if let Some(target) = &opts.error_mix {
        let have = counts(&frame, "error_type", Some(col("kind").eq(lit("rot"))))?;
        let quota: BTreeMap<String, u32> =
            error_quotas(target, &have).into_iter().map(|(t, q)| (t, q as u32)).collect();
        frame = number_within(frame.lazy(), &["kind", "error_type"], "id_key")?
            .filter(col("kind").neq(lit("rot")).or(col("pos").lt(lookup("error_type", &quota, 0u32))))
            .collect()?
            .drop("pos")?;
    }
    if let Some(f) = opts.rot_fraction {
        let kinds = counts(&frame, "kind", None)?;
        let rot = *kinds.get("rot").unwrap_or(&0);
        let (keep_rot, keep_clean) = share_quotas(rot, frame.height() - rot, f);
        let keep = BTreeMap::from([("rot".to_string(), keep_rot as u32)]);
        frame = number_within(frame.lazy(), &["kind"], "id_key")?
            .filter(col("pos").lt(lookup("kind", &keep, keep_clean as u32)))
            .collect()?;
    }
    Ok(frame.column("row")?.u32()?.into_no_null_iter().collect())
}

/// Rows per non-null value of `column` (among the rows `filter` keeps).
fn counts(frame: &DataFrame, column: &str, filter: Option<Expr>) -> Result<BTreeMap<String, usize>> {
    let mut lf = frame.clone().lazy();
    if let Some(f) = filter {
        lf = lf.filter(f);
    }
    let df = lf.filter(col(column).is_not_null()).group_by([col(column)]).agg([len().alias("n")]).collect()?;
    let keys = df.column(column)?.str()?;
    let n = df.column("n")?.idx()?;
    Ok(keys.iter().zip(n.iter()).filter_map(|(k, n)| Some((k?.to_string(), n? as usize))).collect())
}

/// Rows per split of every value of each of `columns` — the card's count tables, one per
/// column, in the order asked.
fn split_counts<const N: usize>(
    splits: &[Vec<Example>],
    columns: [&str; N],
) -> Result<[BTreeMap<String, [usize; 3]>; N]> {
    on_plain_thread(|| {
        let mut frames = Vec::new();
        for (i, split) in splits.iter().enumerate() {
            frames.push(
                sampling_frame(split)?.lazy().with_column(lit(i as u32).cast(pl::DataType::UInt32).alias("split")),
            );
        }
        let all = concat(frames, UnionArgs::default())?.collect()?;
        let mut tables = Vec::new();
        for column in &columns {
            let df = all
                .clone()
                .lazy()
                .filter(col(*column).is_not_null())
                .group_by([col(*column), col("split")])
                .agg([len().alias("n")])
                .collect()?;
            let mut out: BTreeMap<String, [usize; 3]> = BTreeMap::new();
            let (keys, split, n) = (df.column(column)?.str()?, df.column("split")?.u32()?, df.column("n")?.idx()?);
            for ((k, s), n) in keys.iter().zip(split.iter()).zip(n.iter()) {
                if let (Some(k), Some(s), Some(n)) = (k, s, n) {
                    out.entry(k.to_string()).or_default()[s as usize] = n as usize;
                }
            }
            tables.push(out);
        }
        Ok(tables.try_into().unwrap_or_else(|_| unreachable!("one table per column")))
    })
}

/// The examples of a snapshot: RoT rows (verified ones unless told otherwise) and clean
/// trajectories with actions.
pub fn examples(trajectories: &[Trajectory], rots: &[Rot], verified_only: bool) -> Vec<Example> {
    let source: HashMap<&str, &str> =
        trajectories.iter().map(|t| (t.trajectory_id.as_str(), t.source.as_str())).collect();
    let mut out: Vec<Example> = rots
        .iter()
        .filter(|r| r.verified || !verified_only)
        .map(|r| Example {
            id: r.rot_id.clone(),
            kind: "rot".into(),
            source_trajectory_id: r.trajectory_id.clone(),
            source: source.get(r.trajectory_id.as_str()).unwrap_or(&"unknown").to_string(),
            error_type: Some(r.error_type.as_str().to_string()),
            tool: Some(r.tool.clone()),
            evidence: Some(r.evidence.clone()),
            fix_plan: Some(r.fix_plan.clone()),
            failed_action: Some(r.failed_action.raw.clone()),
            corrected_action: Some(r.corrected_action.raw.clone()),
            verified: Some(r.verified),
            messages: r.conversation.clone(),
        })
        .collect();
    out.extend(trajectories.iter().filter(|t| t.steps.iter().any(|s| s.action.is_some())).map(|t| Example {
        id: t.trajectory_id.clone(),
        kind: "clean".into(),
        source_trajectory_id: t.trajectory_id.clone(),
        source: t.source.clone(),
        error_type: None,
        tool: None,
        evidence: None,
        fix_plan: None,
        failed_action: None,
        corrected_action: None,
        verified: None,
        messages: trajectory_messages(t),
    }));
    out
}

/// Tool declarations in OpenAI's `{"type": "function", "function": {…}}` shape, whichever of
/// it or the bare `{name, description, parameters}` a source used.
fn openai_tools(specs: Vec<Value>) -> Value {
    Value::Array(
        specs
            .into_iter()
            .map(|s| if s.get("function").is_some() { s } else { json!({"type": "function", "function": s}) })
            .collect(),
    )
}

/// Publishes what snapshot `snapshot_name` pins into `out` (which must be empty or absent).
pub async fn publish(repo: &Repository, snapshot_name: &str, out: &Path, opts: &PublishOptions) -> Result<Published> {
    if out.read_dir().map(|mut d| d.next().is_some()).unwrap_or(false) {
        return Err(Error::Usage(format!("{} is not empty; publish into a new folder", out.display())));
    }
    let snap = snapshot::get(repo, snapshot_name)?;
    let versions = snap.versions();
    std::fs::create_dir_all(out).at(out)?;
    let mut files = Vec::new();
    let mut rows = BTreeMap::new();
    let mut trajectories = repo.read::<Trajectory>(versions.get("trajectories").copied()).await?;
    trajectories.sort_by(|a, b| a.trajectory_id.cmp(&b.trajectory_id));
    let mut rots = repo.read::<Rot>(versions.get("rot").copied()).await?;
    rots.sort_by(|a, b| a.rot_id.cmp(&b.rot_id));
    // A license given for a source wins over one found beside its files.
    let mut opts = opts.clone();
    for (source, license) in detected_source_licenses(&trajectories) {
        opts.source_licenses.entry(source).or_insert(license);
    }
    let opts = &opts;
    // Every format publishes the same rows: the verification gate, the split by source
    // trajectory and the mixture are applied here, once.
    let mut by_split: Vec<Vec<Example>> = vec![Vec::new(); 3];
    for e in examples(&trajectories, &rots, opts.verified_only) {
        by_split[snap.split_of(&e.source_trajectory_id).index()].push(e);
    }
    for split in &mut by_split {
        mix(split, opts)?;
    }
    for (name, split) in SPLITS.iter().zip(&by_split) {
        rows.insert(name.to_string(), split.len());
    }
    // An empty split has no file and no entry in the card or Croissant: `datasets` refuses a
    // split that names no data.
    let empty_splits: Vec<String> =
        SPLITS.iter().zip(&by_split).filter(|(_, s)| s.is_empty()).map(|(n, _)| n.to_string()).collect();
    let sources = source_licenses(&by_split, opts);
    match opts.format {
        PublishFormat::Hf => files.extend(write_hf(out, &by_split, &sources, &snap, opts)?),
        PublishFormat::OpenaiJsonl => {
            // The declared tools go in the `tools` field too, where a chat template renders them.
            let tools: HashMap<&str, Value> = trajectories
                .iter()
                .filter_map(|t| match serde_json::from_str::<Value>(&t.tool_specs) {
                    Ok(Value::Array(a)) if !a.is_empty() => Some((t.trajectory_id.as_str(), openai_tools(a))),
                    _ => None,
                })
                .collect();
            for (name, split) in SPLITS.iter().zip(&by_split).filter(|(_, s)| !s.is_empty()) {
                let path = out.join(format!("{name}.jsonl"));
                let mut w = std::io::BufWriter::new(std::fs::File::create(&path).at(&path)?);
                for e in split {
                    let mut line = json!({"messages": e.messages.iter().map(|m| json!({"role": m.role, "content": m.content})).collect::<Vec<_>>()});
                    if let Some(t) = tools.get(e.source_trajectory_id.as_str()) {
                        line["tools"] = t.clone();
                    }
                    writeln!(w, "{line}").at(&path)?;
                }
                w.flush().at(&path)?;
                files.push(path);
            }
        }
        PublishFormat::RegrpoJson => files.extend(write_regrpo_json(out, &by_split, &trajectories, &rots)?),
    }
    let provenance = json!({
        "snapshot": snapshot_name,
        "table_versions": versions,
        "split": snap.split,
        "published_by": format!("regrpo {}", env!("CARGO_PKG_VERSION")),
        "options": opts,
        "rows": rows,
        "empty_splits": empty_splits,
    });
    let path = out.join("provenance.json");
    write_json(&path, &provenance)?;
    files.push(path);
    Ok(Published {
        out: out.to_path_buf(),
        snapshot: snapshot_name.to_string(),
        table_versions: versions,
        rows,
        empty_splits,
        unlicensed_sources: sources.into_iter().filter(|(_, _, l)| l.is_none()).map(|(s, _, _)| s).collect(),
        files,
    })
}

/// The ReGRPO reference layout, per split: `rot_{split}.json` (reference RoT records) and
/// `clean_{split}.json` (chat records of clean trajectories), for the non-empty ones.
fn write_regrpo_json(
    out: &Path,
    splits: &[Vec<Example>],
    trajectories: &[Trajectory],
    rots: &[Rot],
) -> Result<Vec<PathBuf>> {
    let trajectory: HashMap<&str, &Trajectory> = trajectories.iter().map(|t| (t.trajectory_id.as_str(), t)).collect();
    let rot: HashMap<&str, &Rot> = rots.iter().map(|r| (r.rot_id.as_str(), r)).collect();
    let mut files = Vec::new();
    for (name, split) in SPLITS.iter().zip(splits) {
        let mut rot_records = Vec::new();
        let mut clean_records = Vec::new();
        for e in split {
            match e.kind.as_str() {
                "rot" => {
                    let r = rot[e.id.as_str()];
                    rot_records.push(crate::export::rot_record(r, trajectory.get(r.trajectory_id.as_str()).copied()));
                }
                _ => clean_records.push(crate::export::clean_record(trajectory[e.id.as_str()])),
            }
        }
        for (kind, records) in [("rot", rot_records), ("clean", clean_records)] {
            if records.is_empty() {
                continue;
            }
            let path = out.join(format!("{kind}_{name}.json"));
            write_json(&path, &Value::Array(records))?;
            files.push(path);
        }
    }
    Ok(files)
}

fn write_json(path: &Path, v: &Value) -> Result<()> {
    let text = serde_json::to_string_pretty(v).map_err(|e| Error::Internal(e.to_string()))?;
    Ok(std::fs::write(path, text + "\n").at(path)?)
}

fn size_category(n: usize) -> &'static str {
    match n {
        0..1_000 => "n<1K",
        1_000..10_000 => "1K<n<10K",
        10_000..100_000 => "10K<n<100K",
        100_000..1_000_000 => "100K<n<1M",
        1_000_000..10_000_000 => "1M<n<10M",
        _ => "10M<n<100M",
    }
}

/// Writes the Parquet shards, the dataset card, the histogram and `croissant.json`.
fn write_hf(
    out: &Path,
    splits: &[Vec<Example>],
    sources: &[(String, usize, Option<String>)],
    snapshot: &Snapshot,
    opts: &PublishOptions,
) -> Result<Vec<PathBuf>> {
    let data = out.join("data");
    std::fs::create_dir_all(&data).at(&data)?;
    let schema = example_schema();
    let props = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(3).unwrap_or_default()))
        // Rows are chat samples of a few KB: 8k rows keep row groups far below 128 MB.
        .set_max_row_group_row_count(Some(8 * 1024))
        .set_created_by(format!("regrpo {}", env!("CARGO_PKG_VERSION")))
        .build();
    let mut files = Vec::new();
    let mut split_bytes = Vec::new();
    for (name, split) in SPLITS.iter().zip(splits) {
        if split.is_empty() {
            split_bytes.push(0);
            continue;
        }
        let shards = split.len().div_ceil(opts.rows_per_file.max(1));
        let mut bytes = 0u64;
        for i in 0..shards {
            let rows =
                &split[(i * opts.rows_per_file).min(split.len())..((i + 1) * opts.rows_per_file).min(split.len())];
            let path = data.join(format!("{name}-{i:05}-of-{shards:05}.parquet"));
            let batch: RecordBatch = serde_arrow::to_record_batch(schema.fields(), &rows)
                .map_err(|e| Error::Internal(format!("building {name} rows: {e}")))?;
            let file = std::fs::File::create(&path).at(&path)?;
            let mut w = ArrowWriter::try_new(file, Arc::clone(&schema), Some(props.clone()))?;
            w.write(&batch)?;
            w.close()?;
            bytes += std::fs::metadata(&path).at(&path)?.len();
            files.push(path);
        }
        split_bytes.push(bytes);
    }

    // Counts for the card.
    let [kinds, by_type, by_tool] = split_counts(splits, ["kind", "error_type", "tool"])?;
    let hist = out.join("error_types.png");
    let bars: Vec<(String, f64)> = by_type.iter().map(|(t, c)| (t.clone(), c.iter().sum::<usize>() as f64)).collect();
    crate::plot::bar_chart(&hist, "RoT rows per ErrorType (all splits)", "rows", &bars)?;
    files.push(hist);

    let total: usize = splits.iter().map(Vec::len).sum();
    let license = dataset_license(sources, opts);
    let card = card(splits, &split_bytes, &kinds, &by_type, &by_tool, sources, &license, snapshot, opts, total);
    let readme = out.join("README.md");
    std::fs::write(&readme, card).at(&readme)?;
    files.push(readme);

    let croissant = out.join("croissant.json");
    write_json(&croissant, &croissant_json(out, &files, &snapshot.name, opts, &license)?)?;
    files.push(croissant);
    Ok(files)
}

fn table(title: &str, rows: &BTreeMap<String, [usize; 3]>) -> String {
    let mut s = format!("| {title} | train | validation | test | total |\n| --- | ---: | ---: | ---: | ---: |\n");
    for (k, c) in rows {
        s += &format!("| {k} | {} | {} | {} | {} |\n", c[0], c[1], c[2], c.iter().sum::<usize>());
    }
    s
}

#[allow(clippy::too_many_arguments)]
fn card(
    splits: &[Vec<Example>],
    split_bytes: &[u64],
    kinds: &BTreeMap<String, [usize; 3]>,
    by_type: &BTreeMap<String, [usize; 3]>,
    by_tool: &BTreeMap<String, [usize; 3]>,
    sources: &[(String, usize, Option<String>)],
    license: &str,
    snapshot: &Snapshot,
    opts: &PublishOptions,
    total: usize,
) -> String {
    let (snapshot_name, versions, split) = (&snapshot.name, snapshot.versions(), snapshot.split);
    let mut y = String::from("---\n");
    y += &format!("license: {license}\n");
    if license == "other" {
        y += "license_name: per-source\nlicense_details: \"Rows keep the license of their source; see Sources and licenses.\"\n";
    }
    y += &format!("pretty_name: \"{}\"\n", opts.pretty_name.replace('"', "'"));
    y += "task_categories:\n- text-generation\n";
    y += "tags:\n- tool-use\n- agents\n- reflection\n- regrpo\n- reflection-of-thought\n";
    y += &format!("size_categories:\n- {}\n", size_category(total));
    y += "configs:\n- config_name: default\n  data_files:\n";
    for (name, _) in SPLITS.iter().zip(splits).filter(|(_, s)| !s.is_empty()) {
        y += &format!("  - split: {name}\n    path: data/{name}-*\n");
    }
    y += "dataset_info:\n  features:\n";
    for (name, dtype) in scalar_columns() {
        y += &format!("  - name: {name}\n    dtype: {dtype}\n");
    }
    y += "  - name: messages\n    list:\n    - name: role\n      dtype: string\n    - name: content\n      dtype: string\n";
    y += "  splits:\n";
    for ((name, split), bytes) in SPLITS.iter().zip(splits).zip(split_bytes).filter(|((_, s), _)| !s.is_empty()) {
        y += &format!("  - name: {name}\n    num_bytes: {bytes}\n    num_examples: {}\n", split.len());
    }
    let download: u64 = split_bytes.iter().sum();
    y += &format!("  download_size: {download}\n  dataset_size: {download}\n---\n\n");

    y += &format!("# {}\n\n", opts.pretty_name);
    y += "Reflection-of-Thought (RoT) rows built by regrpo's Structured Reflective Data Engine: a \
          successful agent trajectory, a near-miss action **executed** against the real tool, the \
          tool's failure observation, the reflection (ErrorType, Evidence quoting the observation, \
          FixPlan) and the corrected action — plus the clean trajectories they came from \
          (`kind = clean`), for supervised fine-tuning mixtures.\n\n";
    y += &format!(
        "Published from snapshot `{snapshot_name}` (table versions: {}), the snapshot's splits {:?} \
         (seed {}) by source trajectory (no trajectory is in two splits), mixture seed {}{}.\n\n",
        versions.iter().map(|(t, v)| format!("{t}@{v}")).collect::<Vec<_>>().join(", "),
        split.fractions,
        split.seed,
        opts.seed,
        if opts.verified_only { "; only rows that passed every verification gate" } else { "" }
    );
    if opts.rot_fraction.is_some() || opts.error_mix.is_some() {
        y += &format!(
            "Mixture: RoT share {:?}, ErrorType target {:?}.\n\n",
            opts.rot_fraction,
            opts.error_mix.as_ref().map(|m| m.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>())
        );
    }
    y += "## Sources and licenses\n\n| source | rows | license |\n| --- | ---: | --- |\n";
    for (source, n, l) in sources {
        let l = l.clone().unwrap_or_else(|| {
            "not stated: check the source's terms before redistributing (`--source-license SOURCE=LICENSE`)".into()
        });
        y += &format!("| {source} | {n} | {l} |\n");
    }
    y += "\n## Counts\n\n";
    y += &table("kind", kinds);
    y += "\n";
    y += &table("ErrorType", by_type);
    y += "\n";
    y += &table("tool", by_tool);
    y += "\n![RoT rows per ErrorType](error_types.png)\n\n";
    y += "## Loading\n\n```python\nfrom datasets import load_dataset\nds = load_dataset(\"parquet\", data_dir=\"data\")  # or load_dataset(\"<this folder>\")\n```\n";
    y
}

fn croissant_json(
    out: &Path,
    files: &[PathBuf],
    snapshot_name: &str,
    opts: &PublishOptions,
    license: &str,
) -> Result<Value> {
    let mut distribution = Vec::new();
    for f in files.iter().filter(|f| f.extension().is_some_and(|e| e == "parquet")) {
        let rel = f.strip_prefix(out).unwrap_or(f).to_string_lossy().replace('\\', "/");
        let bytes = std::fs::read(f).at(f)?;
        distribution.push(json!({
            "@type": "cr:FileObject",
            "@id": rel,
            "name": rel,
            "contentUrl": rel,
            "contentSize": format!("{} B", bytes.len()),
            "encodingFormat": "application/x-parquet",
            "sha256": sha256_hex(&bytes),
        }));
    }
    let field = |name: &str, ty: &str| {
        json!({
            "@type": "cr:Field",
            "@id": format!("examples/{name}"),
            "name": name,
            "dataType": ty,
            "source": {"fileSet": {"@id": "parquet-files"}, "extract": {"column": name}},
        })
    };
    distribution.push(json!({
        "@type": "cr:FileSet",
        "@id": "parquet-files",
        "name": "parquet-files",
        "encodingFormat": "application/x-parquet",
        "includes": "data/*.parquet",
    }));
    let fields: Vec<Value> = scalar_columns()
        .map(|(name, dtype)| field(name, if dtype == "bool" { "sc:Boolean" } else { "sc:Text" }))
        .collect();
    Ok(json!({
        "@context": {
            "@language": "en",
            "@vocab": "https://schema.org/",
            "cr": "http://mlcommons.org/croissant/",
            "rai": "http://mlcommons.org/croissant/RAI/",
            "sc": "https://schema.org/",
            "dct": "http://purl.org/dc/terms/",
            "citeAs": "cr:citeAs",
            "column": "cr:column",
            "conformsTo": "dct:conformsTo",
            "data": {"@id": "cr:data", "@type": "@json"},
            "dataType": {"@id": "cr:dataType", "@type": "@vocab"},
            "examples": {"@id": "cr:examples", "@type": "@json"},
            "extract": "cr:extract",
            "field": "cr:field",
            "fileObject": "cr:fileObject",
            "fileProperty": "cr:fileProperty",
            "fileSet": "cr:fileSet",
            "format": "cr:format",
            "includes": "cr:includes",
            "isLiveDataset": "cr:isLiveDataset",
            "jsonPath": "cr:jsonPath",
            "key": "cr:key",
            "md5": "cr:md5",
            "parentField": "cr:parentField",
            "path": "cr:path",
            "recordSet": "cr:recordSet",
            "references": "cr:references",
            "regex": "cr:regex",
            "repeated": "cr:repeated",
            "replace": "cr:replace",
            "separator": "cr:separator",
            "source": "cr:source",
            "subField": "cr:subField",
            "transform": "cr:transform"
        },
        "@type": "sc:Dataset",
        "conformsTo": "http://mlcommons.org/croissant/1.0",
        "name": opts.pretty_name,
        "description": format!("Reflection-of-Thought rows and clean trajectories published by regrpo from snapshot {snapshot_name}."),
        "license": license,
        "version": snapshot_name,
        "url": "https://github.com/regrpo/regrpo",
        "distribution": distribution,
        "recordSet": [{
            "@type": "cr:RecordSet",
            "@id": "examples",
            "name": "examples",
            "field": fields,
        }],
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_license_file_beside_the_data_names_its_license() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(detect_license(dir.path()), None);
        std::fs::write(
            dir.path().join("LICENSE"),
            "MIT License\n\nCopyright (c) 2024 Lab\n\nPermission is hereby granted, free of charge, to any person",
        )
        .unwrap();
        assert_eq!(detect_license(dir.path()).as_deref(), Some("mit"));
        std::fs::write(
            dir.path().join("LICENSE"),
            "                                 Apache License\n                           Version 2.0, January 2004\n",
        )
        .unwrap();
        assert_eq!(detect_license(dir.path()).as_deref(), Some("apache-2.0"));
        std::fs::write(dir.path().join("LICENSE"), "All rights reserved.").unwrap();
        assert_eq!(detect_license(dir.path()), None, "an unknown text is not guessed at");
    }

    fn ex(id: &str, traj: &str, et: Option<&str>) -> Example {
        Example {
            id: id.into(),
            kind: if et.is_some() { "rot" } else { "clean" }.into(),
            source_trajectory_id: traj.into(),
            source: "t".into(),
            error_type: et.map(str::to_string),
            tool: None,
            evidence: None,
            fix_plan: None,
            failed_action: None,
            corrected_action: None,
            verified: None,
            messages: vec![],
        }
    }

    /// The plain-Rust definition of the mixture (the quota arithmetic is shared; what is checked
    /// is the polars numbering and filtering), in place.
    fn reference_mix(examples: &mut Vec<Example>, opts: &PublishOptions) {
        examples.sort_by_cached_key(|e| order_key(opts.seed, &e.id));
        if let Some(target) = &opts.error_mix {
            let mut have: BTreeMap<String, usize> = BTreeMap::new();
            for e in examples.iter().filter(|e| e.kind == "rot") {
                *have.entry(e.error_type.clone().unwrap_or_default()).or_default() += 1;
            }
            let mut quota = error_quotas(target, &have);
            examples.retain(|e| {
                if e.kind != "rot" {
                    return true;
                }
                match quota.get_mut(e.error_type.as_deref().unwrap_or("")) {
                    Some(q) if *q > 0 => {
                        *q -= 1;
                        true
                    }
                    _ => false,
                }
            });
        }
        if let Some(f) = opts.rot_fraction {
            // `mixture::keep` is what SFT applies: the polars plan must keep the same rows.
            let (rot, clean): (Vec<Example>, Vec<Example>) = examples.drain(..).partition(|e| e.kind == "rot");
            let (r, c) = share_quotas(rot.len(), clean.len(), f);
            examples.extend(regrpo_schemas::mixture::keep(rot, r, opts.seed, |e| &e.id));
            examples.extend(regrpo_schemas::mixture::keep(clean, c, opts.seed, |e| &e.id));
        }
        examples.sort_by(|a, b| a.id.cmp(&b.id));
    }

    /// Random examples: trajectories with 0–4 RoT rows of random ErrorTypes (ties happen).
    fn random_examples(seed: u64) -> Vec<Example> {
        let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        let mut next = move |n: u64| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % n
        };
        let types = ["ArgInvalid", "ToolMismatch", "GroundingDrift", "CodeError", "NonCommit"];
        let mut all = Vec::new();
        for t in 0..300 {
            if next(4) > 0 {
                all.push(ex(&format!("c{t}"), &format!("t{t}"), None));
            }
            for k in 0..next(5) {
                all.push(ex(&format!("r{t}-{k}"), &format!("t{t}"), Some(types[next(5) as usize])));
            }
        }
        all
    }

    #[test]
    fn polars_plans_agree_with_the_plain_definitions() {
        for seed in 0..4 {
            let all = random_examples(seed + 1);
            for opts in [
                PublishOptions { seed, rot_fraction: Some(0.3), ..Default::default() },
                PublishOptions {
                    seed,
                    rot_fraction: Some(0.6),
                    error_mix: Some(BTreeMap::from([(ErrorType::ArgInvalid, 0.2), (ErrorType::GroundingDrift, 0.8)])),
                    ..Default::default()
                },
            ] {
                let (mut a, mut b) = (all.clone(), all.clone());
                mix(&mut a, &opts).unwrap();
                reference_mix(&mut b, &opts);
                assert_eq!(a, b, "seed {seed}, {opts:?}");
            }
        }
    }

    #[test]
    fn mix_hits_the_rot_share_and_the_error_type_target() {
        let mut v: Vec<Example> = (0..100).map(|i| ex(&format!("c{i}"), &format!("t{i}"), None)).collect();
        for i in 0..60 {
            v.push(ex(&format!("a{i}"), "x", Some("ArgInvalid")));
        }
        for i in 0..20 {
            v.push(ex(&format!("m{i}"), "x", Some("ToolMismatch")));
        }
        let opts = PublishOptions {
            rot_fraction: Some(0.5),
            error_mix: Some(BTreeMap::from([(ErrorType::ArgInvalid, 0.5), (ErrorType::ToolMismatch, 0.5)])),
            ..Default::default()
        };
        mix(&mut v, &opts).unwrap();
        let count = |k: &str| v.iter().filter(|e| e.error_type.as_deref() == Some(k)).count();
        assert_eq!((count("ArgInvalid"), count("ToolMismatch")), (20, 20));
        assert_eq!(v.iter().filter(|e| e.kind == "clean").count(), 40);
    }
}
