//! The data path: SQL over a pinned snapshot → chat samples → token batches.
//!
//! The trainer reads only through `regrpo_queries::Session`. Samples are clean trajectories and
//! RoT conversations, tokenised through the context window ([`crate::window`]) and batched by
//! quotas of each kind; the held-out split is chosen by a hash of the source trajectory id, so
//! no trajectory is on both sides. Padding and batching run on a background thread
//! (`Batcher`), a bounded channel ahead of the model.

use std::sync::mpsc::{Receiver, sync_channel};

use regrpo_datasets::Repository;
use regrpo_queries::{At, Session};
use regrpo_schemas::mixture;
use regrpo_schemas::react::{opens_with_reflection, trajectory_messages};
use regrpo_schemas::{Message, Record, Rot, Split, SplitSpec, Trajectory, conform};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::window::{ChatWindow, Encoded, Truncations};

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
    let schema = R::schema();
    let mut out = Vec::new();
    for b in session.query(&format!("SELECT * FROM {}", R::TABLE)).await? {
        out.extend(regrpo_schemas::from_batch::<R>(&conform(&b, &schema)?)?);
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

/// Samples read from a snapshot: the training mixture and the validation split.
#[derive(Debug, Clone, Default)]
pub struct SftData {
    pub clean: Vec<Sample>,
    pub rot: Vec<Sample>,
    /// Samples of the validation split (the held-out loss); the test split is left for eval.
    pub eval: Vec<Sample>,
    pub versions: std::collections::BTreeMap<String, i64>,
    pub snapshot: Option<String>,
}

/// Loads clean trajectories and RoT conversations from a snapshot (or the latest tables).
pub async fn load(repo: &Repository, snapshot: Option<&str>, cfg: &DataConfig) -> Result<SftData> {
    let session = Session::open(repo, At::from_option(snapshot)).await?;
    let mut trajectories: Vec<Trajectory> = read_table(&session).await?;
    trajectories.sort_by(|a, b| a.trajectory_id.cmp(&b.trajectory_id));
    let mut rots: Vec<Rot> = read_table(&session).await?;
    rots.sort_by(|a, b| a.rot_id.cmp(&b.rot_id));
    let wanted = |t: &Trajectory| cfg.sources.as_ref().is_none_or(|s| s.contains(&t.source));
    let kept: std::collections::HashSet<&str> =
        trajectories.iter().filter(|t| wanted(t)).map(|t| t.trajectory_id.as_str()).collect();
    let clean: Vec<Sample> = trajectories
        .iter()
        .filter(|t| wanted(t))
        .filter(|t| t.steps.iter().any(|s| s.action.is_some()))
        .map(|t| Sample {
            id: t.trajectory_id.clone(),
            trajectory_id: t.trajectory_id.clone(),
            kind: SampleKind::Clean,
            messages: trajectory_messages(t),
        })
        .collect();
    let rot: Vec<Sample> = rots
        .iter()
        .filter(|r| cfg.sources.is_none() || kept.contains(r.trajectory_id.as_str()))
        .filter(|r| r.conversation.iter().any(|m| opens_with_reflection(&m.content)))
        .map(|r| Sample {
            id: r.rot_id.clone(),
            trajectory_id: r.trajectory_id.clone(),
            kind: SampleKind::Rot,
            messages: r.conversation.clone(),
        })
        .collect();
    let spec = session.split();
    let mut eval = Vec::new();
    let mut take = |v: Vec<Sample>| -> Vec<Sample> {
        let mut train = Vec::new();
        for s in v {
            match spec.of(&s.trajectory_id) {
                Split::Train => train.push(s),
                Split::Validation => eval.push(s),
                Split::Test => {}
            }
        }
        train
    };
    let (mut clean_train, mut rot_train) = (take(clean), take(rot));
    // A RoT share (not rows added on top of full clean batches) is a mixture: the one rule,
    // rows dropped in seeded hash order, as `regrpo publish --rot-fraction` applies it.
    if cfg.rot_extra.is_none() {
        let (keep_rot, keep_clean) = mixture::share_quotas(rot_train.len(), clean_train.len(), cfg.rot_fraction);
        rot_train = mixture::keep(rot_train, keep_rot, spec.seed, |s| &s.id);
        clean_train = mixture::keep(clean_train, keep_clean, spec.seed, |s| &s.id);
    }
    Ok(SftData {
        clean: clean_train,
        rot: rot_train,
        eval,
        versions: session.versions().clone(),
        snapshot: snapshot.map(str::to_string),
    })
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

/// Items `from..from + count` of an endless stream over `n` samples, epoch after epoch.
fn stream_slice(n: usize, seed: u64, from: u64, count: usize) -> Vec<usize> {
    if n == 0 {
        return vec![];
    }
    let mut out = Vec::with_capacity(count);
    let mut order: Option<(u64, Vec<usize>)> = None;
    for k in from..from + count as u64 {
        let epoch = k / n as u64;
        if order.as_ref().is_none_or(|(e, _)| *e != epoch) {
            order = Some((epoch, epoch_order(n, seed, epoch)));
        }
        out.push(order.as_ref().map_or(0, |(_, o)| o[(k % n as u64) as usize]));
    }
    out
}

/// Batches that are bucketed together: their samples are sorted by length and dealt out in
/// order, so a batch pads to lengths close to its own.
const BUCKET: u64 = 8;

/// The samples of batch `k` of a kind (`quota` per batch): batches come in buckets of
/// [`BUCKET`] drawn from the stream, sorted by length, and visited in a seeded order.
fn bucketed_batch(lengths: &[usize], seed: u64, k: u64, quota: usize) -> Vec<usize> {
    if quota == 0 || lengths.is_empty() {
        return vec![];
    }
    let (bucket, slot) = (k / BUCKET, k % BUCKET);
    let mut items = stream_slice(lengths.len(), seed, bucket * BUCKET * quota as u64, BUCKET as usize * quota);
    items.sort_by_key(|i| (lengths[*i], *i));
    let order = epoch_order(BUCKET as usize, seed ^ 0xb0c4e7, bucket);
    let at = order[slot as usize] * quota;
    items[at..at + quota].to_vec()
}

/// Produces batches on a background thread, starting at micro-batch `start` of the stream.
///
/// Each batch takes `quotas.0` clean and `quotas.1` RoT samples, each kind from its own endless
/// stream of epochs (bucketed by length, see [`bucketed_batch`]): the clean rows of a batch do
/// not depend on how many RoT rows it has. A batch comes as one padded part per kind.
pub struct Batcher {
    rx: Receiver<Vec<Batch>>,
}

impl Batcher {
    pub fn spawn(
        clean: Vec<Encoded>,
        rot: Vec<Encoded>,
        quotas: (usize, usize),
        seed: u64,
        start: u64,
        pad: u32,
    ) -> Self {
        let (tx, rx) = sync_channel(4);
        let (qc, qr) = (if clean.is_empty() { 0 } else { quotas.0 }, if rot.is_empty() { 0 } else { quotas.1 });
        std::thread::Builder::new()
            .name("sft-batcher".into())
            .spawn(move || {
                let mut k = start;
                let clean_len: Vec<usize> = clean.iter().map(|e| e.ids.len()).collect();
                let rot_len: Vec<usize> = rot.iter().map(|e| e.ids.len()).collect();
                loop {
                    let clean_part: Vec<&Encoded> =
                        bucketed_batch(&clean_len, seed, k, qc).into_iter().map(|j| &clean[j]).collect();
                    let rot_part: Vec<&Encoded> =
                        bucketed_batch(&rot_len, seed ^ 0x5eed_0f0a, k, qr).into_iter().map(|j| &rot[j]).collect();
                    let parts: Vec<Batch> =
                        [clean_part, rot_part].iter().filter(|p| !p.is_empty()).map(|p| collate(p, pad)).collect();
                    if tx.send(parts).is_err() {
                        return;
                    }
                    k += 1;
                }
            })
            .expect("spawning the batcher thread");
        Batcher { rx }
    }

    /// The next batch, one part per kind of sample in it.
    pub fn next(&self) -> Result<Vec<Batch>> {
        self.rx.recv().map_err(|_| Error::Internal("the batcher thread stopped".into()))
    }
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
    fn clean_rows_do_not_depend_on_the_rot_quota() {
        let clean: Vec<Encoded> = (0..7).map(|i| Encoded { ids: vec![i, i + 1], mask: vec![true; 2] }).collect();
        let rot: Vec<Encoded> = (0..5).map(|i| Encoded { ids: vec![100 + i, 1, 2], mask: vec![true; 3] }).collect();
        let a = Batcher::spawn(clean.clone(), vec![], (3, 0), 9, 0, 0);
        let b = Batcher::spawn(clean, rot, (3, 2), 9, 0, 0);
        for _ in 0..6 {
            let (x, y) = (a.next().unwrap(), b.next().unwrap());
            assert_eq!((x.len(), y.len()), (1, 2));
            assert_eq!(x[0], y[0], "the same clean part");
            assert_eq!((y[1].batch, y[1].len), (2, 2), "RoT rows padded on their own");
            assert!((0..2).all(|r| y[1].ids[r * y[1].len] >= 100));
        }
    }

    #[test]
    fn buckets_deal_every_sample_once_per_epoch_in_batches_of_similar_length() {
        let lengths: Vec<usize> = (0..64).map(|i| (i * 37) % 101).collect();
        let mut seen: Vec<usize> = (0..8).flat_map(|k| bucketed_batch(&lengths, 3, k, 8)).collect();
        let spread = |b: &[usize]| {
            let l: Vec<usize> = b.iter().map(|i| lengths[*i]).collect();
            l.iter().max().unwrap() - l.iter().min().unwrap()
        };
        assert!((0..8).all(|k| spread(&bucketed_batch(&lengths, 3, k, 8)) < 40));
        seen.sort();
        assert_eq!(seen, (0..64).collect::<Vec<_>>());
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

    #[test]
    fn batcher_resumes_where_it_left_off() {
        let enc: Vec<Encoded> = (0..10).map(|i| Encoded { ids: vec![i, i + 1, i + 2], mask: vec![true; 3] }).collect();
        let a = Batcher::spawn(enc.clone(), vec![], (3, 0), 7, 0, 0);
        let all: Vec<Vec<Batch>> = (0..9).map(|_| a.next().unwrap()).collect();
        let b = Batcher::spawn(enc, vec![], (3, 0), 7, 5, 0);
        assert_eq!(b.next().unwrap(), all[5]);
    }
}
