//! Which rows a publication holds: the examples of a snapshot, and the mixture of each split.
//! The mixture's numbering and filtering are polars lazy frames over the examples' sampling
//! columns (the rows themselves stay typed records); the rule itself — quotas and the seeded
//! drop order — is `regrpo_schemas::mixture`, which SFT applies too.

use std::collections::{BTreeMap, HashMap};

use polars::prelude::{
    self as pl, DataFrame, Expr, IntoLazy, LazyFrame, Literal, PolarsResult, SortMultipleOptions, UnionArgs, col,
    concat, df, len, lit, when,
};
use regrpo_schemas::mixture::{error_quotas, order_key, share_quotas};
use regrpo_schemas::react::trajectory_messages;
use regrpo_schemas::{Message, Rot, Trajectory};
use serde::Serialize;

use super::PublishOptions;
use crate::error::Result;

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
pub(crate) fn split_counts<const N: usize>(
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

#[cfg(test)]
mod tests {
    use super::*;
    use regrpo_schemas::ErrorType;

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
