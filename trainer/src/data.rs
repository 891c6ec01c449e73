//! The data path: SQL over a pinned snapshot → chat samples → token batches.
//!
//! The trainer reads only through `regrpo_queries::Session`. Samples are clean trajectories and
//! RoT conversations, mixed by a ratio; the held-out split is chosen by a hash of the source
//! trajectory id, so no trajectory is on both sides. Tokenising, padding and batching run on a
//! background thread (`Batcher`), a bounded channel ahead of the model.

use std::sync::mpsc::{Receiver, sync_channel};

use regrpo_datasets::Repository;
use regrpo_datasets::repo::conform;
use regrpo_queries::{At, Session};
use regrpo_schemas::react::trajectory_messages;
use regrpo_schemas::{Message, Record, Rot, Trajectory};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::tokenizer::ChatTokenizer;

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
            (SampleKind::Rot, RotTarget::Reflection) => m.content.trim_start().starts_with("Reflection:"),
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

/// What the SFT data is made of.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DataConfig {
    /// Share of RoT samples in the mixture (0 = clean only, 1 = RoT only).
    pub rot_fraction: f64,
    pub rot_target: RotTarget,
    /// Share of trajectories held out for evaluation.
    pub eval_fraction: f64,
    /// Only clean trajectories of these sources (default: all with actions).
    pub sources: Option<Vec<String>>,
}

impl Default for DataConfig {
    fn default() -> Self {
        DataConfig { rot_fraction: 0.5, rot_target: RotTarget::Reflection, eval_fraction: 0.1, sources: None }
    }
}

/// Samples read from a snapshot, split into train and eval.
#[derive(Debug, Clone, Default)]
pub struct SftData {
    pub train: Vec<Sample>,
    pub eval: Vec<Sample>,
    pub versions: std::collections::BTreeMap<String, i64>,
    pub snapshot: Option<String>,
}

/// Whether a trajectory id falls in the held-out split (a stable hash, not an RNG).
pub fn is_held_out(trajectory_id: &str, fraction: f64) -> bool {
    let h = regrpo_schemas::id::content_id([trajectory_id.as_bytes(), b"split"]);
    let v = u64::from_str_radix(&h[..12], 16).unwrap_or(0) as f64 / (1u64 << 48) as f64;
    v < fraction
}

/// Loads the SFT mixture from a snapshot (or the latest tables).
pub async fn load(repo: &Repository, snapshot: Option<&str>, cfg: &DataConfig) -> Result<SftData> {
    let session = Session::open(repo, At::from_option(snapshot)).await?;
    let mut trajectories: Vec<Trajectory> = read_table(&session).await?;
    trajectories.sort_by(|a, b| a.trajectory_id.cmp(&b.trajectory_id));
    let mut rots: Vec<Rot> = read_table(&session).await?;
    rots.sort_by(|a, b| a.rot_id.cmp(&b.rot_id));
    let clean: Vec<Sample> = trajectories
        .iter()
        .filter(|t| cfg.sources.as_ref().is_none_or(|s| s.contains(&t.source)))
        .filter(|t| t.steps.iter().any(|s| s.action.is_some()))
        .map(|t| Sample {
            trajectory_id: t.trajectory_id.clone(),
            kind: SampleKind::Clean,
            messages: trajectory_messages(t),
        })
        .collect();
    let rot: Vec<Sample> = rots
        .iter()
        .filter(|r| r.conversation.iter().any(|m| m.content.trim_start().starts_with("Reflection:")))
        .map(|r| Sample {
            trajectory_id: r.trajectory_id.clone(),
            kind: SampleKind::Rot,
            messages: r.conversation.clone(),
        })
        .collect();
    let (mut data, eval_frac) = (SftData::default(), cfg.eval_fraction);
    let split = |v: Vec<Sample>| -> (Vec<Sample>, Vec<Sample>) {
        v.into_iter().partition(|s| !is_held_out(&s.trajectory_id, eval_frac))
    };
    let (clean_train, clean_eval) = split(clean);
    let (rot_train, rot_eval) = split(rot);
    data.train = mix(clean_train, rot_train, cfg.rot_fraction)?;
    data.eval = mix(clean_eval, rot_eval, cfg.rot_fraction).unwrap_or_default();
    data.versions = session.versions().clone();
    data.snapshot = snapshot.map(str::to_string);
    Ok(data)
}

/// Mixes clean and RoT samples so that RoT makes `fraction` of the result, repeating the
/// smaller side cyclically when it has to.
pub fn mix(clean: Vec<Sample>, rot: Vec<Sample>, fraction: f64) -> Result<Vec<Sample>> {
    if !(0.0..=1.0).contains(&fraction) {
        return Err(Error::Config(format!("rot fraction {fraction} is outside [0, 1]")));
    }
    let (nc, nr) = (clean.len(), rot.len());
    let out: Vec<Sample> = if fraction == 0.0 || nr == 0 {
        clean
    } else if fraction == 1.0 || nc == 0 {
        rot
    } else {
        // Keep all of the larger side relative to the target, repeat the other.
        let want_rot = (fraction / (1.0 - fraction) * nc as f64).round() as usize;
        if want_rot >= nr {
            let mut v = clean;
            v.extend(rot.iter().cycle().take(want_rot).cloned());
            v
        } else {
            let want_clean = ((1.0 - fraction) / fraction * nr as f64).round() as usize;
            let mut v: Vec<Sample> = clean.iter().cycle().take(want_clean.max(1)).cloned().collect();
            v.extend(rot);
            v
        }
    };
    if out.is_empty() {
        return Err(Error::NoData("the snapshot has no trajectories with actions and no RoT rows".into()));
    }
    Ok(out)
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

/// Tokenised samples.
#[derive(Debug, Clone)]
pub struct Encoded {
    pub ids: Vec<u32>,
    pub mask: Vec<bool>,
}

pub fn encode_all(samples: &[Sample], tk: &ChatTokenizer, policy: RotTarget, max_len: usize) -> Result<Vec<Encoded>> {
    samples
        .iter()
        .map(|s| {
            let (mut ids, mut mask) = tk.render(&s.messages, |i, _| s.is_target(i, policy))?;
            ids.truncate(max_len + 1);
            mask.truncate(max_len + 1);
            Ok(Encoded { ids, mask })
        })
        .collect()
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

/// Produces batches on a background thread, starting at micro-batch `start` of the stream.
pub struct Batcher {
    rx: Receiver<Batch>,
}

impl Batcher {
    pub fn spawn(encoded: Vec<Encoded>, batch_size: usize, seed: u64, start: u64, pad: u32) -> Self {
        let (tx, rx) = sync_channel(4);
        std::thread::Builder::new()
            .name("sft-batcher".into())
            .spawn(move || {
                let n = encoded.len();
                let per_epoch = n.div_ceil(batch_size).max(1) as u64;
                let mut k = start;
                loop {
                    let (epoch, i) = (k / per_epoch, (k % per_epoch) as usize);
                    let order = epoch_order(n, seed, epoch);
                    let items: Vec<&Encoded> =
                        order.iter().skip(i * batch_size).take(batch_size).map(|j| &encoded[*j]).collect();
                    if tx.send(collate(&items, pad)).is_err() {
                        return;
                    }
                    k += 1;
                }
            })
            .expect("spawning the batcher thread");
        Batcher { rx }
    }

    pub fn next(&self) -> Result<Batch> {
        self.rx.recv().map_err(|_| Error::Internal("the batcher thread stopped".into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(id: &str, kind: SampleKind) -> Sample {
        Sample { trajectory_id: id.into(), kind, messages: vec![] }
    }

    #[test]
    fn mixing_reaches_the_fraction() {
        let clean: Vec<Sample> = (0..30).map(|i| s(&i.to_string(), SampleKind::Clean)).collect();
        let rot: Vec<Sample> = (0..6).map(|i| s(&format!("r{i}"), SampleKind::Rot)).collect();
        let m = mix(clean.clone(), rot.clone(), 0.5).unwrap();
        assert_eq!(m.iter().filter(|x| x.kind == SampleKind::Rot).count(), 30);
        let m = mix(clean.clone(), rot.clone(), 0.0).unwrap();
        assert!(m.iter().all(|x| x.kind == SampleKind::Clean));
        assert!(mix(vec![], vec![], 0.5).is_err());
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
        let a = Batcher::spawn(enc.clone(), 3, 7, 0, 0);
        let all: Vec<Batch> = (0..9).map(|_| a.next().unwrap()).collect();
        let b = Batcher::spawn(enc, 3, 7, 5, 0);
        assert_eq!(b.next().unwrap(), all[5]);
    }
}
