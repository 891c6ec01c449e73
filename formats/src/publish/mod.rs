//! Publishing a snapshot as a dataset others train on (`regrpo publish`).
//!
//! ```text
//!  snapshot ──rows──▶ examples (verified RoT rows + clean chats) ──split──▶ train | validation | test
//!                                                                            │ mix (optional)
//!                                 ┌─────────────────────────┬────────────────┴──────────┐
//!                                 ▼                         ▼                           ▼
//!            hf: Parquet shards + card + Croissant   regrpo-json (reference)   openai-jsonl (chat)
//!                                 └────────── provenance.json (snapshot, versions, options) ──┘
//! ```
//!
//! Formats:
//! - `hf` ([`hf`]): the Hugging Face dataset repository layout — `data/{split}-{i:05}-of-{n:05}.parquet`,
//!   a `README.md` dataset card (YAML header with `configs`, `dataset_info`, `splits`, license,
//!   task categories, size category, tags; a body with counts per ErrorType and tool and a PNG
//!   histogram) and `croissant.json` (Croissant 1.0 JSON-LD with every file's sha256).
//! - `regrpo-json` ([`regrpo_json`]): the ReGRPO reference layout, `rot_{split}.json` and
//!   `clean_{split}.json`.
//! - `openai-jsonl` ([`jsonl`]): `{split}.jsonl`, one `{"messages": […]}` chat per line, with
//!   `"tools"` (the declarations, OpenAI shape) when its trajectory declares any.
//!
//! Every format also writes `provenance.json`: the snapshot, its table versions and split, and
//! the options.
//!
//! **Splits** are the snapshot's own (`regrpo_schemas::split`): each source trajectory goes, with
//! all its rows, to the split its id hashes to under the snapshot's split spec, so the published
//! test split is the set `regrpo eval` holds out. **Mix** ([`sampling`], optional) builds an SFT
//! mixture per split by the one mixture rule (`regrpo_schemas::mixture`): a target share of RoT
//! rows against clean trajectories, and a target ErrorType distribution, by dropping rows in
//! seeded hash order (never by repeating them).
//!
//! Nothing depends on the clock or on iteration order: publishing the same snapshot with the
//! same options twice gives byte-identical files.

pub mod hf;
pub mod jsonl;
pub mod license;
pub mod regrpo_json;
pub mod sampling;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use regrpo_datasets::snapshot::{self, Snapshot};
use regrpo_datasets::{Repository, Verdicts};
use regrpo_schemas::{ErrorType, IoContext, Rot, Split, Trajectory, Verdict};
use serde::Serialize;
use serde_json::{Value, json};

use crate::error::{Error, Result};
pub use sampling::{Example, examples, mix};

/// The published formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum PublishFormat {
    Hf,
    RegrpoJson,
    OpenaiJsonl,
}

/// Which rows curators' reviews (`regrpo ui`, the `reviews` table) let through: a RoT row's
/// verdict is its latest review's.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ReviewFilter {
    /// Reviews are counted, nothing is left out.
    #[default]
    All,
    /// Leave out rows whose verdict is `reject`.
    ExcludeRejected,
    /// Only rows whose verdict is `accept`.
    AcceptedOnly,
}

/// What curators' reviews said about a publication's candidate RoT rows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ReviewCounts {
    /// Candidate rows (the snapshot's RoT rows) holding a verdict.
    pub reviewed: usize,
    pub accepted: usize,
    pub rejected: usize,
    pub flagged: usize,
    /// Rows the review filter left out.
    pub left_out: usize,
}

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
    /// Which reviewed rows to publish.
    pub reviews: ReviewFilter,
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
            reviews: ReviewFilter::All,
        }
    }
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
    /// What reviews said about the snapshot's RoT rows, and what the filter left out.
    pub reviews: ReviewCounts,
    pub files: Vec<PathBuf>,
}

/// What every format writes: the examples of each split (indexed by [`Split::index`]), where
/// they came from, and how.
pub(crate) struct Publication<'a> {
    pub splits: Vec<Vec<Example>>,
    pub snapshot: &'a Snapshot,
    pub opts: &'a PublishOptions,
    /// `(source, rows, license)` of the published rows (`None`: no license given).
    pub sources: Vec<(String, usize, Option<String>)>,
    pub trajectories: &'a [Trajectory],
    pub rots: &'a [Rot],
    pub reviews: ReviewCounts,
}

impl Publication<'_> {
    /// The non-empty splits with their examples, in order.
    pub fn non_empty(&self) -> impl Iterator<Item = (Split, &Vec<Example>)> {
        Split::ALL.into_iter().zip(&self.splits).filter(|(_, s)| !s.is_empty())
    }
}

/// Publishes what snapshot `snapshot_name` pins into `out` (which must be empty or absent).
pub async fn publish(repo: &Repository, snapshot_name: &str, out: &Path, opts: &PublishOptions) -> Result<Published> {
    if out.read_dir().map(|mut d| d.next().is_some()).unwrap_or(false) {
        return Err(Error::OutputNotEmpty { path: out.to_path_buf() });
    }
    let snap = snapshot::get(repo, snapshot_name).await?;
    let versions = snap.versions();
    let mut trajectories = repo.read::<Trajectory>(versions.get("trajectories").copied()).await?;
    trajectories.sort_by(|a, b| a.trajectory_id.cmp(&b.trajectory_id));
    let mut rots = repo.read::<Rot>(versions.get("rot").copied()).await?;
    rots.sort_by(|a, b| a.rot_id.cmp(&b.rot_id));
    // Reviews are read as they stand now: a verdict given after the snapshot still counts.
    let (rots, review_counts) = apply_reviews(rots, &Verdicts::load(repo).await?, opts.reviews);
    // A license given for a source wins over one found beside its files.
    let mut opts = opts.clone();
    for (source, license) in license::detected_source_licenses(&trajectories) {
        opts.source_licenses.entry(source).or_insert(license);
    }
    let opts = &opts;
    // Every format publishes the same rows: the verification gate, the snapshot's split and
    // the mixture are applied here, once.
    let mut splits: Vec<Vec<Example>> = vec![Vec::new(); 3];
    for e in examples(&trajectories, &rots, opts.verified_only) {
        splits[snap.split_of(&e.source_trajectory_id).index()].push(e);
    }
    for split in &mut splits {
        mix(split, opts)?;
    }
    let rows: BTreeMap<String, usize> =
        Split::ALL.iter().zip(&splits).map(|(s, e)| (s.as_str().to_string(), e.len())).collect();
    // An empty split has no file and no entry in the card or Croissant: `datasets` refuses a
    // split that names no data.
    let empty_splits: Vec<String> =
        Split::ALL.iter().zip(&splits).filter(|(_, e)| e.is_empty()).map(|(s, _)| s.as_str().to_string()).collect();
    let sources = license::source_licenses(&splits, opts);
    let p = Publication {
        splits,
        snapshot: &snap,
        opts,
        sources,
        trajectories: &trajectories,
        rots: &rots,
        reviews: review_counts,
    };
    let provenance = json!({
        "snapshot": snapshot_name,
        "table_versions": versions,
        "split": snap.split,
        "published_by": format!("regrpo {}", env!("CARGO_PKG_VERSION")),
        "options": opts,
        "rows": rows,
        "empty_splits": empty_splits,
        "reviews": review_counts,
    });
    // The folder appears whole, provenance included, or not at all: a publish killed midway
    // leaves only `.NAME.tmp` beside it, which the next try replaces.
    let files = regrpo_schemas::write_folder(out, |tmp| -> Result<Vec<PathBuf>> {
        let mut files = match opts.format {
            PublishFormat::Hf => hf::write(tmp, &p)?,
            PublishFormat::OpenaiJsonl => jsonl::write(tmp, &p)?,
            PublishFormat::RegrpoJson => regrpo_json::write(tmp, &p)?,
        };
        let path = tmp.join("provenance.json");
        write_json(&path, &provenance)?;
        files.push(path);
        Ok(files.iter().map(|f| out.join(f.strip_prefix(tmp).unwrap_or(f))).collect())
    })?;
    Ok(Published {
        out: out.to_path_buf(),
        snapshot: snapshot_name.to_string(),
        table_versions: versions,
        rows,
        empty_splits,
        unlicensed_sources: p.sources.into_iter().filter(|(_, _, l)| l.is_none()).map(|(s, _, _)| s).collect(),
        reviews: review_counts,
        files,
    })
}

/// The RoT rows the review filter lets through, and what the reviews said.
fn apply_reviews(rots: Vec<Rot>, verdicts: &Verdicts, filter: ReviewFilter) -> (Vec<Rot>, ReviewCounts) {
    let mut counts = ReviewCounts::default();
    let kept = rots
        .into_iter()
        .filter(|r| {
            let verdict = verdicts.of(&r.rot_id);
            match verdict {
                Some(Verdict::Accept) => counts.accepted += 1,
                Some(Verdict::Reject) => counts.rejected += 1,
                Some(Verdict::Flag) => counts.flagged += 1,
                Some(Verdict::Clear) | None => {}
            }
            counts.reviewed += usize::from(verdict.is_some());
            let keep = match filter {
                ReviewFilter::All => true,
                ReviewFilter::ExcludeRejected => verdict != Some(Verdict::Reject),
                ReviewFilter::AcceptedOnly => verdict == Some(Verdict::Accept),
            };
            counts.left_out += usize::from(!keep);
            keep
        })
        .collect();
    (kept, counts)
}

pub(crate) fn write_json(path: &Path, v: &Value) -> Result<()> {
    let text = serde_json::to_string_pretty(v).map_err(|e| Error::Internal(e.to_string()))?;
    Ok(std::fs::write(path, text + "\n").at(path)?)
}
