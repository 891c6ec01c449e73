//! Export in the ReGRPO reference JSON layout (`regrpo export --format regrpo-json`).
//!
//! `rot_train.json` holds one reference record per RoT row (`conversations` + `rot_meta`),
//! `clean_train.json` one chat record per trajectory with actions. Our `regrpo` ingest format
//! reads both back with the same content; `rot_meta` carries three fields the reference does
//! not have (`verified`, `gates`, `generator`) so nothing is lost on the way.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use regrpo_schemas::react::{reflection_turn, strip_reflection, trajectory_messages};
use regrpo_schemas::{Rot, Trajectory};
use serde_json::{Value, json};

use crate::error::{Error, IoContext, Result};
use crate::repo::Repository;
use crate::snapshot;

/// What an export wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportSummary {
    pub rot_file: PathBuf,
    pub rot_records: usize,
    pub clean_file: PathBuf,
    pub clean_records: usize,
}

/// One RoT row as a reference record.
pub fn rot_record(r: &Rot, t: Option<&Trajectory>) -> Value {
    let convo: Vec<Value> = r.conversation.iter().map(|m| json!({"role": m.role, "content": m.content})).collect();
    let refl_at = reflection_turn(&r.conversation);
    let failed_text = refl_at
        .and_then(|i| i.checked_sub(2))
        .map(|i| r.conversation[i].content.clone())
        .unwrap_or_else(|| r.failed_action.raw.clone());
    let corrected_text = refl_at
        .map(|i| strip_reflection(&r.conversation[i].content).to_string())
        .unwrap_or_else(|| r.corrected_action.raw.clone());
    let answer = t.and_then(|t| t.final_answer.clone()).map(Value::String).unwrap_or(Value::Null);
    json!({
        "id": format!("{}_rot", r.rot_id),
        "image": {},
        "answer": answer,
        "conversations": convo,
        "rot_meta": {
            "src_id": t.map(|t| t.source_id.clone()).unwrap_or_else(|| r.trajectory_id.clone()),
            "step_index": r.step_index,
            "error_type": r.error_type,
            "failed_action": failed_text,
            "failed_observation": r.failed_observation,
            "reflection": {"error_type": r.error_type, "evidence": r.evidence, "fix_plan": r.fix_plan},
            "corrected_action": corrected_text,
            "final_answer": answer,
            "verified": r.verified,
            "derivable": r.derivable,
            "gates": r.gates,
            "generator": r.generator,
            "evidence_span": r.evidence_start.zip(r.evidence_end),
        }
    })
}

/// One trajectory as a clean chat record.
pub fn clean_record(t: &Trajectory) -> Value {
    let convo: Vec<Value> =
        trajectory_messages(t).iter().map(|m| json!({"role": m.role, "content": m.content})).collect();
    json!({"id": t.source_id, "image": {}, "answer": t.final_answer, "conversations": convo})
}

/// Exports the RoT rows and clean trajectories a snapshot pins (or the latest).
pub async fn export_regrpo_json(repo: &Repository, snapshot_name: Option<&str>, out: &Path) -> Result<ExportSummary> {
    let versions = match snapshot_name {
        Some(n) => Some(snapshot::get(repo, n)?.versions()),
        None => None,
    };
    let v = |table: &str| versions.as_ref().and_then(|m| m.get(table).copied());
    let mut trajectories = repo.read::<Trajectory>(v("trajectories")).await?;
    trajectories.sort_by(|a, b| a.trajectory_id.cmp(&b.trajectory_id));
    let mut rots = repo.read::<Rot>(v("rot")).await?;
    rots.sort_by(|a, b| a.rot_id.cmp(&b.rot_id));
    let by_id: HashMap<&str, &Trajectory> = trajectories.iter().map(|t| (t.trajectory_id.as_str(), t)).collect();
    std::fs::create_dir_all(out).at(out)?;
    let rot_records: Vec<Value> =
        rots.iter().map(|r| rot_record(r, by_id.get(r.trajectory_id.as_str()).copied())).collect();
    let clean: Vec<Value> =
        trajectories.iter().filter(|t| t.steps.iter().any(|s| s.action.is_some())).map(clean_record).collect();
    let write = |name: &str, v: &[Value]| -> Result<PathBuf> {
        let path = out.join(name);
        let text = serde_json::to_string_pretty(v).map_err(|e| Error::Internal(e.to_string()))?;
        std::fs::write(&path, text + "\n").at(&path)?;
        Ok(path)
    };
    Ok(ExportSummary {
        rot_file: write("rot_train.json", &rot_records)?,
        rot_records: rot_records.len(),
        clean_file: write("clean_train.json", &clean)?,
        clean_records: clean.len(),
    })
}
