//! The data path: SQL over a pinned snapshot → chat samples → token batches.
//!
//! The trainer reads only through `regrpo_queries::Session`. Samples are clean trajectories and
//! RoT conversations, tokenised through the context window ([`crate::text::window`]) and batched by
//! quotas of each kind; the held-out split is chosen by a hash of the source trajectory id, so
//! no trajectory is on both sides. Padding and batching run on a background thread
//! ([`batch::Batcher`]), a bounded channel ahead of the model.

pub mod batch;
pub mod stream;

use regrpo_datasets::Repository;
use regrpo_queries::{At, Session};
use regrpo_schemas::react::opens_with_reflection;
use regrpo_schemas::{Message, Record, SplitSpec, Trajectory};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::text::window::{ChatWindow, Encoded, Truncations};

/// Which assistant turns of a RoT conversation are training targets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RotTarget {
    /// Only the reflection + corrected action turn, as the reference does.
    Reflection,
    /// Every assistant turn.
    AllAssistant,
}

/// One training sample.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sample {
    /// The row it came from: the trajectory's id for a clean sample, the RoT row's id.
    pub id: String,
    /// The source trajectory (for leakage-safe splits).
    pub trajectory_id: String,
    pub kind: SampleKind,
    pub messages: Vec<Message>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SampleKind {
    Clean,
    Rot,
}

impl Sample {
    /// Whether message `i` is a target under the given RoT policy.
    pub fn is_target(&self, i: usize, policy: RotTarget) -> bool {
        let m = &self.messages[i];
        if m.role != "assistant" {
            return false;
        }
        match (self.kind, policy) {
            (SampleKind::Clean, _) | (SampleKind::Rot, RotTarget::AllAssistant) => true,
            (SampleKind::Rot, RotTarget::Reflection) => opens_with_reflection(&m.content),
        }
    }
}

/// Reads every row of a record table through a session.
pub async fn read_table<R: Record>(session: &Session) -> Result<Vec<R>> {
    let mut out = Vec::new();
    for b in session.query(&format!("SELECT * FROM {}", R::TABLE)).await? {
        out.extend(regrpo_schemas::from_batch::<R>(&b)?);
    }
    Ok(out)
}

/// What a job reads of a snapshot: its trajectories and RoT rows (each sorted by id), the
/// table versions and the snapshot's split.
#[derive(Debug, Clone)]
pub struct SnapshotRows {
    pub trajectories: Vec<Trajectory>,
    pub rots: Vec<regrpo_schemas::Rot>,
    pub versions: std::collections::BTreeMap<String, i64>,
    pub split: SplitSpec,
}

/// Trajectories and RoT rows of a snapshot, read through a session.
pub async fn snapshot_rows(repo: &Repository, snapshot: Option<&str>) -> Result<SnapshotRows> {
    let session = Session::open(repo, At::from_option(snapshot)).await?;
    let mut trajectories: Vec<Trajectory> = read_table(&session).await?;
    trajectories.sort_by(|a, b| a.trajectory_id.cmp(&b.trajectory_id));
    let mut rots: Vec<regrpo_schemas::Rot> = read_table(&session).await?;
    rots.sort_by(|a, b| a.rot_id.cmp(&b.rot_id));
    Ok(SnapshotRows { trajectories, rots, versions: session.versions().clone(), split: session.split() })
}

/// What the SFT data is made of.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DataConfig {
    /// Share of RoT samples in each batch (0 = clean only, 1 = RoT only).
    pub rot_fraction: f64,
    /// RoT samples added to each batch on top of a full batch of clean ones (overrides
    /// `rot_fraction`): arms that differ only by this see the same clean rows in the same order.
    #[serde(default)]
    pub rot_extra: Option<usize>,
    pub rot_target: RotTarget,
    /// Only trajectories (and RoT rows of trajectories) of these sources (default: all).
    pub sources: Option<Vec<String>>,
}

impl Default for DataConfig {
    fn default() -> Self {
        DataConfig { rot_fraction: 0.5, rot_extra: None, rot_target: RotTarget::Reflection, sources: None }
    }
}

impl DataConfig {
    /// Clean and RoT samples per batch of `batch_size`.
    pub fn quotas(&self, batch_size: usize) -> Result<(usize, usize)> {
        if let Some(extra) = self.rot_extra {
            return Ok((batch_size, extra));
        }
        if !(0.0..=1.0).contains(&self.rot_fraction) {
            return Err(Error::Config(format!("rot fraction {} is outside [0, 1]", self.rot_fraction)));
        }
        let rot = (batch_size as f64 * self.rot_fraction).round() as usize;
        Ok((batch_size - rot.min(batch_size), rot.min(batch_size)))
    }
}

/// One padded batch: `ids`, `targets` (ids shifted by one) and a 0/1 loss weight per target.
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    pub batch: usize,
    pub len: usize,
    pub ids: Vec<i64>,
    pub targets: Vec<i64>,
    pub weights: Vec<f32>,
    /// Target tokens (weights that are 1).
    pub target_tokens: usize,
    /// Tokens processed (not padding).
    pub tokens: usize,
}

/// Tokenises samples through the context window: each becomes one sequence when it fits whole,
/// else one window per target turn. Returns the sequences and what was cut.
pub fn encode_all(samples: &[Sample], window: &ChatWindow, policy: RotTarget) -> Result<(Vec<Encoded>, Truncations)> {
    let mut out = Vec::new();
    let mut cuts = Truncations::default();
    for s in samples {
        let (enc, t) = window.samples(&s.messages, |i, _| s.is_target(i, policy))?;
        out.extend(enc);
        cuts.add(&t);
    }
    Ok((out, cuts))
}

/// Pads a group of encoded samples into a batch; `targets[t] = ids[t + 1]`.
pub fn collate(items: &[&Encoded], pad: u32) -> Batch {
    let len = items.iter().map(|e| e.ids.len().saturating_sub(1)).max().unwrap_or(0).max(1);
    let b = items.len();
    let mut batch = Batch {
        batch: b,
        len,
        ids: vec![i64::from(pad); b * len],
        targets: vec![i64::from(pad); b * len],
        weights: vec![0.0; b * len],
        target_tokens: 0,
        tokens: 0,
    };
    for (r, e) in items.iter().enumerate() {
        let n = e.ids.len().saturating_sub(1);
        for t in 0..n {
            batch.ids[r * len + t] = i64::from(e.ids[t]);
            batch.targets[r * len + t] = i64::from(e.ids[t + 1]);
            if e.mask[t + 1] {
                batch.weights[r * len + t] = 1.0;
                batch.target_tokens += 1;
            }
        }
        batch.tokens += n;
    }
    batch
}

/// The order samples are visited in: epoch `e` is a permutation seeded by `(seed, e)`.
pub fn epoch_order(n: usize, seed: u64, epoch: u64) -> Vec<usize> {
    use rand::SeedableRng;
    use rand::seq::SliceRandom;
    let mut v: Vec<usize> = (0..n).collect();
    v.shuffle(&mut rand_chacha::ChaCha8Rng::seed_from_u64(seed.wrapping_mul(1_000_003).wrapping_add(epoch)));
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotas_split_a_batch_or_add_to_it() {
        let c = DataConfig { rot_fraction: 0.25, ..Default::default() };
        assert_eq!(c.quotas(8).unwrap(), (6, 2));
        assert_eq!(DataConfig { rot_fraction: 0.0, ..c.clone() }.quotas(8).unwrap(), (8, 0));
        assert_eq!(DataConfig { rot_fraction: 1.0, ..c.clone() }.quotas(8).unwrap(), (0, 8));
        assert_eq!(DataConfig { rot_extra: Some(4), ..c.clone() }.quotas(8).unwrap(), (8, 4));
        assert!(DataConfig { rot_fraction: 1.5, ..c }.quotas(8).is_err());
    }

    #[test]
    fn collate_shifts_and_masks() {
        let e = Encoded { ids: vec![5, 6, 7, 8], mask: vec![false, false, true, true] };
        let b = collate(&[&e], 0);
        assert_eq!(
            (b.ids.clone(), b.targets.clone(), b.weights.clone()),
            (vec![5, 6, 7], vec![6, 7, 8], vec![0.0, 1.0, 1.0])
        );
        assert_eq!(b.target_tokens, 2);
    }
}
