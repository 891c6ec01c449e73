//! `regrpo publish`: a snapshot as a dataset others train on; `regrpo export` is
//! `publish --format regrpo-json`.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use regrpo_datasets::Repository;
use regrpo_formats::publish::{PublishFormat, PublishOptions, ReviewFilter};
use regrpo_schemas::ErrorType;

/// Publish a snapshot as a dataset: hf (Parquet + card + croissant), regrpo-json, openai-jsonl.
/// The splits are the snapshot's (`snapshot create --split`).
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    what: What,
    #[arg(long, value_enum, default_value_t = PublishFormat::Hf)]
    format: PublishFormat,
}

/// Write RoT rows and clean trajectories in the ReGRPO reference JSON layout: the same as
/// `publish --format regrpo-json`.
#[derive(Debug, clap::Args)]
pub struct ExportArgs {
    #[command(flatten)]
    what: What,
}

/// What to publish and how to sample it; every format takes these.
#[derive(Debug, clap::Args)]
struct What {
    dir: PathBuf,
    /// The snapshot to publish (required: a published dataset names where it came from).
    #[arg(long, short)]
    snapshot: String,
    #[arg(long)]
    out: PathBuf,
    /// Seeds the order in which the mixture drops rows.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Build an SFT mixture with this share of RoT rows against clean trajectories (e.g. 0.5).
    #[arg(long, value_parser = fraction)]
    rot_fraction: Option<f64>,
    /// Target ErrorType shares among RoT rows, e.g. ArgInvalid=0.4,ToolMismatch=0.3,GroundingDrift=0.3.
    #[arg(long, value_parser = error_share, value_delimiter = ',')]
    error_mix: Vec<(ErrorType, f64)>,
    /// Include RoT rows that failed a verification gate.
    #[arg(long)]
    include_unverified: bool,
    /// License of what regrpo generated (toolworld rows).
    #[arg(long, default_value = "cc-by-4.0")]
    license: String,
    /// License of an external source's rows, SOURCE=LICENSE (e.g. bfcl=apache-2.0);
    /// repeatable. A source without one makes the card's license `other`.
    #[arg(long = "source-license", value_name = "SOURCE=LICENSE", value_parser = source_license)]
    source_licenses: Vec<(String, String)>,
    #[arg(long, default_value = "regrpo Reflection-of-Thought dataset")]
    pretty_name: String,
    /// Leave out the rows curators rejected (`regrpo ui`; the latest review of a row counts).
    #[arg(long, conflicts_with = "accepted_only")]
    exclude_rejected: bool,
    /// Publish only the rows curators accepted.
    #[arg(long)]
    accepted_only: bool,
}

fn fraction(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(f) if (0.0..=1.0).contains(&f) => Ok(f),
        Ok(f) => Err(format!("{f} is outside [0, 1]")),
        Err(_) => Err(format!("`{s}` is not a number")),
    }
}

fn error_share(s: &str) -> Result<(ErrorType, f64), String> {
    let (k, v) = s.split_once('=').ok_or_else(|| format!("`{s}` is not TYPE=SHARE"))?;
    let t: ErrorType = k.trim().parse().map_err(|e| format!("{e}"))?;
    let v: f64 = v.trim().parse().map_err(|_| format!("`{v}` is not a number"))?;
    Ok((t, v))
}

fn source_license(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .filter(|(k, v)| !k.trim().is_empty() && !v.trim().is_empty())
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .ok_or_else(|| format!("`{s}` is not SOURCE=LICENSE"))
}

pub async fn run(a: Args) -> Result<()> {
    publish(a.what, a.format).await
}

pub async fn export(a: ExportArgs) -> Result<()> {
    publish(a.what, PublishFormat::RegrpoJson).await
}

async fn publish(w: What, format: PublishFormat) -> Result<()> {
    if w.error_mix.iter().any(|(_, v)| *v < 0.0)
        || (!w.error_mix.is_empty() && w.error_mix.iter().all(|(_, v)| *v == 0.0))
    {
        bail!("--error-mix: shares must be non-negative and not all zero");
    }
    let opts = PublishOptions {
        format,
        seed: w.seed,
        verified_only: !w.include_unverified,
        rot_fraction: w.rot_fraction,
        error_mix: (!w.error_mix.is_empty()).then(|| w.error_mix.into_iter().collect::<BTreeMap<_, _>>()),
        license: w.license,
        source_licenses: w.source_licenses.into_iter().collect(),
        pretty_name: w.pretty_name,
        reviews: if w.accepted_only {
            ReviewFilter::AcceptedOnly
        } else if w.exclude_rejected {
            ReviewFilter::ExcludeRejected
        } else {
            ReviewFilter::All
        },
        ..Default::default()
    };
    let repo = Repository::open(&w.dir).await?;
    let p = regrpo_formats::publish::publish(&repo, &w.snapshot, &w.out, &opts)
        .await
        .with_context(|| format!("publishing snapshot `{}`", w.snapshot))?;
    let rows: Vec<String> = p.rows.iter().map(|(k, v)| format!("{k} {v}")).collect();
    println!(
        "published snapshot `{}` ({}) to {}: {}; {} files (provenance.json names the table versions)",
        p.snapshot,
        p.table_versions.iter().map(|(t, v)| format!("{t}@{v}")).collect::<Vec<_>>().join(" "),
        p.out.display(),
        rows.join(", "),
        p.files.len()
    );
    let r = &p.reviews;
    println!(
        "reviews: {} of the snapshot's RoT rows reviewed ({} accepted, {} rejected, {} flagged); {} left out by the review filter",
        r.reviewed, r.accepted, r.rejected, r.flagged, r.left_out
    );
    if !p.empty_splits.is_empty() {
        println!(
            "empty splits left out (no file, no card or Croissant entry): {}; with this few source trajectories, \
             snapshot with other `--split` fractions",
            p.empty_splits.join(", ")
        );
    }
    if !p.unlicensed_sources.is_empty() {
        println!(
            "no license given for the rows of {}: the card says `other` and asks readers to check the sources' terms; \
             name them with --source-license SOURCE=LICENSE",
            p.unlicensed_sources.join(", ")
        );
    }
    Ok(())
}
