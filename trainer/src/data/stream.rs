//! Training samples streamed from a snapshot, in bounded memory.
//!
//! ```text
//!  snapshot ── SELECT * FROM trajectories | rot ── one query per kind and epoch, one partition,
//!              │                                   so rows come in the snapshot's own order
//!              ▼ Arrow batches of 1,024 rows
//!  rows ── split · source · reflection · mixture ──▶ samples ──context window──▶ token windows
//!              ▼ blocks of up to 65,536 windows, each shuffled by (seed, epoch, block)
//!  a kind's endless stream ──▶ the batcher's buckets of similar lengths ──▶ batches  (crate::data::batch)
//! ```
//!
//! Nothing holds a table: a run holds one Arrow batch of rows, one block of token windows per
//! kind, and the validation samples its held-out loss uses. Before training, one pass counts the
//! training rows of each kind and collects those validation samples; when a RoT share calls for
//! the mixture rule ([`regrpo_schemas::mixture`]), that pass also histograms the rows' keys and a
//! second pass finds which rows it keeps (the same rows `mixture::keep` keeps, found without
//! holding them). A block is ordered by row id
//! before it is shuffled, so a snapshot no larger than a block is shuffled exactly as one
//! in-memory permutation of its id-sorted rows would be, whatever order its files hold them in.

use std::collections::VecDeque;
use std::sync::mpsc::sync_channel;
use std::sync::{Arc, Mutex};

use arrow::array::RecordBatch;
use futures::StreamExt;
use regrpo_datasets::Repository;
use regrpo_queries::{At, BatchStream, Session};
use regrpo_schemas::mixture::{self, Selection};
use regrpo_schemas::react::{opens_with_reflection, trajectory_messages};
use regrpo_schemas::{Rot, Split, SplitSpec, Trajectory, from_batch};

use crate::data::{DataConfig, RotTarget, Sample, SampleKind, epoch_order};
use crate::error::{Error, Result};
use crate::text::window::{ChatWindow, Encoded, Truncations};

/// What a context window cut of a stream's samples, counted while the stream is read.
pub type Cuts = Arc<Mutex<Truncations>>;

/// Rows per Arrow batch of the training scans.
const ROWS_PER_BATCH: usize = 1024;

/// Token windows shuffled together: the look-ahead of the stream.
pub const BLOCK: usize = 1 << 16;

/// A kind's samples, one epoch after another, in training order. `None` ends an epoch.
pub trait Source: Send {
    /// Starts epoch `e` (from its first sample).
    fn start(&mut self, epoch: u64) -> Result<()>;
    /// The epoch's next window and its position in the epoch's unshuffled order.
    fn next(&mut self) -> Result<Option<(usize, Encoded)>>;
}

/// Windows held in memory (tests, benchmarks, small runs): epoch `e` is a seeded permutation.
pub struct InMemory {
    items: Vec<Encoded>,
    seed: u64,
    order: Vec<usize>,
    at: usize,
}

impl InMemory {
    pub fn new(items: Vec<Encoded>, seed: u64) -> InMemory {
        InMemory { items, seed, order: Vec::new(), at: 0 }
    }
}

impl Source for InMemory {
    fn start(&mut self, epoch: u64) -> Result<()> {
        self.order = epoch_order(self.items.len(), self.seed, epoch);
        self.at = 0;
        Ok(())
    }

    fn next(&mut self) -> Result<Option<(usize, Encoded)>> {
        let Some(&i) = self.order.get(self.at) else { return Ok(None) };
        self.at += 1;
        Ok(Some((i, self.items[i].clone())))
    }
}

/// Which rows of a kind a run trains on (or validates on), decided row by row.
#[derive(Clone)]
pub struct RowFilter {
    pub kind: SampleKind,
    pub split: SplitSpec,
    pub sources: Option<Vec<String>>,
    pub rot_target: RotTarget,
    /// The mixture's seed and the largest key it keeps (`None`: no mixture; `Some(None)`: the
    /// mixture keeps none of this kind).
    pub mixture: Option<(u64, Option<u64>)>,
}

impl RowFilter {
    /// The samples of a batch of rows, with their split, before the mixture.
    fn samples(&self, batch: &RecordBatch) -> Result<Vec<(Split, Sample)>> {
        Ok(match self.kind {
            SampleKind::Clean => {
                let rows: Vec<Trajectory> = from_batch(batch)?;
                rows.into_iter()
                    .filter(|t| self.sources.as_ref().is_none_or(|s| s.contains(&t.source)))
                    .filter(|t| t.steps.iter().any(|s| s.action.is_some()))
                    .map(|t| {
                        let split = self.split.of(&t.trajectory_id);
                        let messages = trajectory_messages(&t);
                        (
                            split,
                            Sample {
                                id: t.trajectory_id.clone(),
                                trajectory_id: t.trajectory_id,
                                kind: SampleKind::Clean,
                                messages,
                            },
                        )
                    })
                    .collect()
            }
            SampleKind::Rot => {
                let rows: Vec<Rot> = from_batch(batch)?;
                rows.into_iter()
                    .filter(|r| r.conversation.iter().any(|m| opens_with_reflection(&m.content)))
                    .map(|r| {
                        let split = self.split.of(&r.trajectory_id);
                        (
                            split,
                            Sample {
                                id: r.rot_id,
                                trajectory_id: r.trajectory_id,
                                kind: SampleKind::Rot,
                                messages: r.conversation,
                            },
                        )
                    })
                    .collect()
            }
        })
    }

    /// Whether the mixture keeps a training row.
    fn kept(&self, id: &str) -> bool {
        match self.mixture {
            None => true,
            Some((_, None)) => false,
            Some((seed, Some(max))) => mixture::order_key64(seed, id) <= max,
        }
    }

    /// The query of this kind's rows: the whole table, or RoT rows of the chosen sources.
    fn sql(&self) -> String {
        match (self.kind, &self.sources) {
            (SampleKind::Clean, _) => "SELECT * FROM trajectories".into(),
            (SampleKind::Rot, None) => "SELECT * FROM rot".into(),
            (SampleKind::Rot, Some(sources)) => {
                let list: Vec<String> = sources.iter().map(|s| format!("'{}'", s.replace('\'', "''"))).collect();
                format!(
                    "SELECT * FROM rot WHERE trajectory_id IN (SELECT trajectory_id FROM trajectories WHERE source IN ({}))",
                    list.join(", ")
                )
            }
        }
    }
}

/// A session over the snapshot for scans whose row order must be the snapshot's own: one
/// partition, small batches.
pub async fn scan_session(repo: &Repository, snapshot: Option<&str>) -> Result<Session> {
    Ok(Session::open_ordered(repo, At::from_option(snapshot), ROWS_PER_BATCH).await?)
}

/// Hands each batch of a statement's rows to `each`, in order, until the rows end or `each`
/// returns `false`.
async fn each_batch(session: &Session, sql: &str, mut each: impl FnMut(&RecordBatch) -> Result<bool>) -> Result<()> {
    let mut stream = session.stream(sql).await?;
    while let Some(batch) = stream.next().await {
        if !each(&batch.map_err(regrpo_queries::Error::from)?)? {
            break;
        }
    }
    Ok(())
}

/// What the pass before training learns of a kind.
#[derive(Debug, Default)]
pub struct Census {
    /// Training rows (before the mixture).
    pub train_rows: usize,
    /// The first validation samples, in stream order, up to the cap asked for.
    pub validation: Vec<Sample>,
}

/// Counts a kind's training rows and keeps its first `validation_cap` validation samples; feeds
/// every training row's key to `selection` when there is one.
pub async fn census(
    session: &Session,
    filter: &RowFilter,
    validation_cap: usize,
    mut selection: Option<(&mut Selection, u64)>,
) -> Result<Census> {
    let mut out = Census::default();
    each_batch(session, &filter.sql(), |batch| {
        for (split, sample) in filter.samples(batch)? {
            match split {
                Split::Train => {
                    out.train_rows += 1;
                    if let Some((sel, seed)) = selection.as_mut() {
                        sel.count(mixture::order_key64(*seed, &sample.id));
                    }
                }
                Split::Validation if out.validation.len() < validation_cap => out.validation.push(sample),
                _ => {}
            }
        }
        Ok(true)
    })
    .await?;
    Ok(out)
}

/// The second pass of the mixture: every training row's key again.
pub async fn refine(session: &Session, filter: &RowFilter, selection: &mut Selection, seed: u64) -> Result<()> {
    each_batch(session, &filter.sql(), |batch| {
        for (split, sample) in filter.samples(batch)? {
            if split == Split::Train {
                selection.refine(mixture::order_key64(seed, &sample.id));
            }
        }
        Ok(true)
    })
    .await
}

/// A run's training data, found before training: what each kind's stream reads, how many
/// training rows each kind has, and the validation samples of the held-out loss.
pub struct Prepared {
    pub session: Session,
    /// The clean and RoT filters, in that order.
    pub filters: [RowFilter; 2],
    /// Training rows of each kind before the mixture, and after it.
    pub train_rows: [usize; 2],
    pub kept_rows: [usize; 2],
    /// Validation samples (clean ones first), at most the cap asked for.
    pub validation: Vec<Sample>,
    pub versions: std::collections::BTreeMap<String, i64>,
}

/// Counts, collects and (with a mixture) selects, in one streaming pass per kind, and a second
/// for a kind the mixture drops rows of.
/// Only the kinds with a quota are read.
pub async fn prepare(
    repo: &Repository,
    snapshot: Option<&str>,
    cfg: &DataConfig,
    quotas: (usize, usize),
    validation_cap: usize,
) -> Result<Prepared> {
    let session = scan_session(repo, snapshot).await?;
    let split = session.split();
    let filter =
        |kind| RowFilter { kind, split, sources: cfg.sources.clone(), rot_target: cfg.rot_target, mixture: None };
    let mut filters = [filter(SampleKind::Clean), filter(SampleKind::Rot)];
    let wanted = [quotas.0 > 0, quotas.1 > 0];
    // A RoT share (not rows added on top of full clean batches) is a mixture: the one rule,
    // rows dropped in seeded hash order, as `regrpo publish --rot-fraction` applies it.
    let mixed = cfg.rot_extra.is_none() && wanted == [true, true];
    let mut counted = [0usize; 2];
    let mut validation = Vec::new();
    // One pass each counts the rows and, with a mixture, also takes the first pass of its
    // selection (which needs no count); the quotas need both counts.
    let mut selections = if mixed { [Some(Selection::new()), Some(Selection::new())] } else { [None, None] };
    for k in 0..2 {
        if !wanted[k] {
            continue;
        }
        let cap = validation_cap.saturating_sub(validation.len());
        let selection = selections[k].as_mut().map(|sel| (sel, split.seed));
        let c = census(&session, &filters[k], cap, selection).await?;
        counted[k] = c.train_rows;
        validation.extend(c.validation);
    }
    let mut kept = counted;
    if mixed {
        let (keep_rot, keep_clean) = mixture::share_quotas(counted[1], counted[0], cfg.rot_fraction);
        kept = [keep_clean, keep_rot];
        for (k, sel) in selections.into_iter().enumerate() {
            let Some(mut sel) = sel.filter(|_| kept[k] != counted[k]) else { continue };
            if sel.locate(kept[k]).is_some() {
                refine(&session, &filters[k], &mut sel, split.seed).await?;
            }
            filters[k].mixture = Some((split.seed, sel.threshold()));
        }
    }
    let versions = session.versions().clone();
    Ok(Prepared { session, filters, train_rows: counted, kept_rows: kept, validation, versions })
}

impl Prepared {
    /// The two training streams (clean, RoT) through a context window, and what the window
    /// cut of each over the first epoch.
    pub fn sources(&self, window: &ChatWindow, seed: u64) -> ([Box<dyn Source>; 2], [Cuts; 2]) {
        let make = |k: usize, seed: u64| {
            let s = Streamed::new(self.session.clone(), self.filters[k].clone(), window.clone(), seed);
            let cuts = s.truncations();
            (Box::new(s) as Box<dyn Source>, cuts)
        };
        let (clean, clean_cuts) = make(0, seed);
        let (rot, rot_cuts) = make(1, seed ^ crate::data::batch::ROT_SEED);
        ([clean, rot], [clean_cuts, rot_cuts])
    }
}

/// A kind's training samples, collected (for small snapshots: tests, tools); training streams
/// them instead.
pub async fn training_samples(
    repo: &Repository,
    snapshot: Option<&str>,
    cfg: &DataConfig,
    kind: SampleKind,
) -> Result<Vec<Sample>> {
    let session = scan_session(repo, snapshot).await?;
    let filter = RowFilter {
        kind,
        split: session.split(),
        sources: cfg.sources.clone(),
        rot_target: cfg.rot_target,
        mixture: None,
    };
    let mut out = Vec::new();
    each_batch(&session, &filter.sql(), |batch| {
        out.extend(filter.samples(batch)?.into_iter().filter(|(s, _)| *s == Split::Train).map(|(_, x)| x));
        Ok(true)
    })
    .await?;
    Ok(out)
}

/// Every text of a snapshot a tokenizer should see — the chats of trajectories, then those of
/// RoT rows — produced by a reader thread while the consumer trains on them.
pub async fn texts(repo: &Repository, snapshot: Option<&str>) -> Result<std::sync::mpsc::IntoIter<String>> {
    let session = scan_session(repo, snapshot).await?;
    let handle = tokio::runtime::Handle::current();
    let (tx, rx) = sync_channel::<String>(4096);
    std::thread::Builder::new()
        .name("corpus-reader".into())
        .spawn(move || {
            let send_all = |texts: Vec<String>| texts.into_iter().all(|t| tx.send(t).is_ok());
            let _ = handle.block_on(each_batch(&session, "SELECT * FROM trajectories", |b| {
                let rows: Vec<Trajectory> = from_batch(b)?;
                Ok(send_all(rows.iter().flat_map(|t| trajectory_messages(t).into_iter().map(|m| m.content)).collect()))
            }));
            let _ = handle.block_on(each_batch(&session, "SELECT * FROM rot", |b| {
                let rows: Vec<Rot> = from_batch(b)?;
                Ok(send_all(rows.into_iter().flat_map(|r| r.conversation.into_iter().map(|m| m.content)).collect()))
            }));
        })
        .map_err(|e| Error::Internal(format!("starting the corpus reader: {e}")))?;
    Ok(rx.into_iter())
}

/// The training split's rows ReGRPO builds its states from, streamed: every RoT row of the
/// chosen sources whose trajectory is in the training split, and the trajectories they and the
/// clean states need — at most `cap` RoT rows and `cap` more trajectories, the first in a seeded
/// hash order, so a table of any size is read in bounded memory. Below the cap every row is
/// read, as a whole-table read would (each list sorted by id).
pub async fn regrpo_rows(
    repo: &Repository,
    snapshot: Option<&str>,
    sources: Option<&[String]>,
    cap: usize,
) -> Result<(Vec<Trajectory>, Vec<Rot>, std::collections::BTreeMap<String, i64>)> {
    use std::collections::{BTreeMap, HashSet};
    let session = scan_session(repo, snapshot).await?;
    let split = session.split();
    let filter = RowFilter {
        kind: SampleKind::Rot,
        split,
        sources: sources.map(<[String]>::to_vec),
        rot_target: RotTarget::Reflection,
        mixture: None,
    };
    // The `cap` RoT rows with the smallest keys, by key.
    let mut rots: BTreeMap<(u64, String), Rot> = BTreeMap::new();
    each_batch(&session, &filter.sql(), |batch| {
        for r in from_batch::<Rot>(batch)?.into_iter().filter(|r| split.of(&r.trajectory_id) == Split::Train) {
            rots.insert((mixture::order_key64(split.seed, &r.rot_id), r.rot_id.clone()), r);
            if rots.len() > cap {
                rots.pop_last();
            }
        }
        Ok(true)
    })
    .await?;
    let needed: HashSet<String> = rots.values().map(|r| r.trajectory_id.clone()).collect();
    let mut needed_ts = Vec::new();
    let mut clean: BTreeMap<(u64, String), Trajectory> = BTreeMap::new();
    each_batch(&session, "SELECT * FROM trajectories", |batch| {
        for t in from_batch::<Trajectory>(batch)? {
            if sources.is_some_and(|s| !s.contains(&t.source)) || split.of(&t.trajectory_id) != Split::Train {
                continue;
            }
            if needed.contains(&t.trajectory_id) {
                needed_ts.push(t);
            } else {
                clean.insert((mixture::order_key64(split.seed, &t.trajectory_id), t.trajectory_id.clone()), t);
                if clean.len() > cap {
                    clean.pop_last();
                }
            }
        }
        Ok(true)
    })
    .await?;
    let mut trajectories: Vec<Trajectory> = needed_ts.into_iter().chain(clean.into_values()).collect();
    trajectories.sort_by(|a, b| a.trajectory_id.cmp(&b.trajectory_id));
    let mut rots: Vec<Rot> = rots.into_values().collect();
    rots.sort_by(|a, b| a.rot_id.cmp(&b.rot_id));
    Ok((trajectories, rots, session.versions().clone()))
}

/// Training windows of one kind, scanned from the snapshot epoch after epoch.
pub struct Streamed {
    handle: tokio::runtime::Handle,
    session: Session,
    filter: RowFilter,
    window: ChatWindow,
    seed: u64,
    epoch: u64,
    rows: Option<BatchStream>,
    /// Windows read but not yet shuffled, with their row's id and their place in the row.
    pending: Vec<(String, usize, Encoded)>,
    /// The current block, shuffled.
    block: VecDeque<(usize, Encoded)>,
    blocks: u64,
    position: usize,
    /// Whether the epoch had a window with a target token (else training has nothing to learn).
    targets: bool,
    /// What the window cut, counted over the first epoch.
    cuts: Cuts,
}

impl Streamed {
    pub fn new(session: Session, filter: RowFilter, window: ChatWindow, seed: u64) -> Streamed {
        Streamed {
            handle: tokio::runtime::Handle::current(),
            session,
            filter,
            window,
            seed,
            epoch: 0,
            rows: None,
            pending: Vec::new(),
            block: VecDeque::new(),
            blocks: 0,
            position: 0,
            targets: false,
            cuts: Arc::default(),
        }
    }

    /// What the context window cut of the samples seen in the first epoch.
    pub fn truncations(&self) -> Cuts {
        Arc::clone(&self.cuts)
    }

    /// Reads rows until a block is full or the epoch's rows end; shuffles it.
    fn fill(&mut self) -> Result<()> {
        let Some(rows) = self.rows.as_mut() else { return Ok(()) };
        while self.pending.len() < BLOCK {
            let Some(batch) = self.handle.block_on(rows.next()) else {
                self.rows = None;
                break;
            };
            let batch = batch.map_err(regrpo_queries::Error::from)?;
            for (split, sample) in self.filter.samples(&batch)? {
                if split != Split::Train || !self.filter.kept(&sample.id) {
                    continue;
                }
                let policy = self.filter.rot_target;
                let (windows, cuts) = self.window.samples(&sample.messages, |i, _| sample.is_target(i, policy))?;
                if self.epoch == 0 {
                    self.cuts.lock().unwrap_or_else(|p| p.into_inner()).add(&cuts);
                }
                for (i, w) in windows.into_iter().enumerate() {
                    self.targets |= w.mask.iter().any(|m| *m);
                    self.pending.push((sample.id.clone(), i, w));
                }
            }
        }
        // A block is put in the order of its rows' ids (not the order the files happen to store
        // them in), numbered, then permuted: the first block as the whole epoch would be in
        // memory, later ones by their own seeds.
        self.pending.sort_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
        let first = self.position;
        self.position += self.pending.len();
        let seed = self.seed ^ self.blocks.wrapping_mul(0x9e37_79b9_7f4a_7c15);
        let order = epoch_order(self.pending.len(), seed, self.epoch);
        let mut taken: Vec<Option<Encoded>> = self.pending.drain(..).map(|(_, _, w)| Some(w)).collect();
        self.block = order.into_iter().filter_map(|i| taken[i].take().map(|w| (first + i, w))).collect();
        self.blocks += 1;
        Ok(())
    }
}

impl Source for Streamed {
    fn start(&mut self, epoch: u64) -> Result<()> {
        if epoch > 0 && !self.targets {
            return Err(Error::NoData(
                "no training sample has a target token (check the window budgets and the RoT target policy)".into(),
            ));
        }
        self.epoch = epoch;
        self.rows = Some(self.handle.block_on(self.session.stream(&self.filter.sql()))?);
        self.pending.clear();
        self.block.clear();
        self.blocks = 0;
        self.position = 0;
        Ok(())
    }

    fn next(&mut self) -> Result<Option<(usize, Encoded)>> {
        if self.block.is_empty() {
            self.fill()?;
        }
        Ok(self.block.pop_front())
    }
}
