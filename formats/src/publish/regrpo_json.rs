//! `regrpo-json`: the ReGRPO reference JSON layout (`regrpo publish --format regrpo-json`, or its
//! alias `regrpo export`).
//!
//! `rot_{split}.json` holds one reference record per RoT row (`conversations` + `rot_meta`),
//! `clean_{split}.json` one chat record per trajectory with actions. Our `regrpo` ingest format
//! reads both back with the same content; `rot_meta` carries three fields the reference does
//! not have (`verified`, `gates`, `generator`) so nothing is lost on the way.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use regrpo_schemas::react::{reflection_turn, strip_reflection, trajectory_messages};
use regrpo_schemas::{Rot, Split, Trajectory};
use serde_json::{Value, json};

use super::{Publication, write_json};
use crate::error::Result;

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

/// The ReGRPO reference layout, per split: `rot_{split}.json` (reference RoT records) and
/// `clean_{split}.json` (chat records of clean trajectories), for the non-empty ones.
pub(crate) fn write(out: &Path, p: &Publication<'_>) -> Result<Vec<PathBuf>> {
    let (splits, trajectories, rots) = (&p.splits, p.trajectories, p.rots);
    let trajectory: HashMap<&str, &Trajectory> = trajectories.iter().map(|t| (t.trajectory_id.as_str(), t)).collect();
    let rot: HashMap<&str, &Rot> = rots.iter().map(|r| (r.rot_id.as_str(), r)).collect();
    let mut files = Vec::new();
    for (name, split) in Split::ALL.iter().zip(splits) {
        let mut rot_records = Vec::new();
        let mut clean_records = Vec::new();
        for e in split {
            match e.kind.as_str() {
                "rot" => {
                    let r = rot[e.id.as_str()];
                    rot_records.push(rot_record(r, trajectory.get(r.trajectory_id.as_str()).copied()));
                }
                _ => clean_records.push(clean_record(trajectory[e.id.as_str()])),
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
