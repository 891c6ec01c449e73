//! `hf`: the Hugging Face dataset repository layout — Parquet shards under `data/`, a dataset
//! card (`README.md`) with its YAML header and count tables, an ErrorType histogram, and
//! `croissant.json` (Croissant 1.0 JSON-LD with every file's sha256).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::{DataType, Field, Fields, Schema, SchemaRef};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;
use regrpo_schemas::id::sha256_hex;
use regrpo_schemas::{IoContext, Split};
use serde_json::{Value, json};

use super::license::dataset_license;
use super::sampling::split_counts;
use super::{Publication, PublishOptions, ReviewFilter, write_json};
use crate::error::{Error, Result};

/// The card's count tables: rows per split of each kind, ErrorType and tool.
struct Counts {
    kinds: BTreeMap<String, [usize; 3]>,
    by_type: BTreeMap<String, [usize; 3]>,
    by_tool: BTreeMap<String, [usize; 3]>,
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

/// Writes the Parquet shards, the dataset card, the histogram and `croissant.json`.
pub(crate) fn write(out: &Path, p: &Publication<'_>) -> Result<Vec<PathBuf>> {
    let (splits, opts) = (&p.splits, p.opts);
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
    for (name, split) in Split::ALL.iter().zip(splits) {
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
    let counts = Counts { kinds, by_type, by_tool };
    let hist = out.join("error_types.png");
    let bars: Vec<(String, f64)> =
        counts.by_type.iter().map(|(t, c)| (t.clone(), c.iter().sum::<usize>() as f64)).collect();
    crate::plot::bar_chart(&hist, "RoT rows per ErrorType (all splits)", "rows", &bars)?;
    files.push(hist);

    let license = dataset_license(&p.sources, opts);
    let card = card(p, &split_bytes, &counts, &license);
    let readme = out.join("README.md");
    std::fs::write(&readme, card).at(&readme)?;
    files.push(readme);

    let croissant = out.join("croissant.json");
    write_json(&croissant, &croissant_json(out, &files, &p.snapshot.name, opts, &license)?)?;
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

fn card(p: &Publication<'_>, split_bytes: &[u64], counts: &Counts, license: &str) -> String {
    let (splits, opts, sources) = (&p.splits, p.opts, &p.sources);
    let (snapshot_name, versions, split) = (&p.snapshot.name, p.snapshot.versions(), p.snapshot.split);
    let total: usize = splits.iter().map(Vec::len).sum();
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
    for (name, _) in p.non_empty() {
        y += &format!("  - split: {name}\n    path: data/{name}-*\n");
    }
    y += "dataset_info:\n  features:\n";
    for (name, dtype) in scalar_columns() {
        y += &format!("  - name: {name}\n    dtype: {dtype}\n");
    }
    y += "  - name: messages\n    list:\n    - name: role\n      dtype: string\n    - name: content\n      dtype: string\n";
    y += "  splits:\n";
    for ((name, split), bytes) in Split::ALL.iter().zip(splits).zip(split_bytes).filter(|((_, s), _)| !s.is_empty()) {
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
    let r = &p.reviews;
    y += &format!(
        "Reviewed by curators (`regrpo ui`): {} of the snapshot's RoT rows ({} accepted, {} rejected, {} flagged); {}.\n\n",
        r.reviewed,
        r.accepted,
        r.rejected,
        r.flagged,
        match opts.reviews {
            ReviewFilter::All => "no row was left out for its review".to_string(),
            ReviewFilter::ExcludeRejected => format!("{} rejected rows left out", r.left_out),
            ReviewFilter::AcceptedOnly => format!("only accepted rows published ({} others left out)", r.left_out),
        }
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
    y += &table("kind", &counts.kinds);
    y += "\n";
    y += &table("ErrorType", &counts.by_type);
    y += "\n";
    y += &table("tool", &counts.by_tool);
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
