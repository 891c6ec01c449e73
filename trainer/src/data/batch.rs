//! The batcher: each kind's samples as an endless stream of epochs, dealt into buckets of
//! similar lengths, padded and batched on a background thread a bounded channel ahead of the
//! model.

use std::sync::mpsc::{Receiver, sync_channel};

use crate::data::stream::{InMemory, Source};
use crate::data::{Batch, collate, epoch_order};
use crate::error::{Error, Result};
use crate::text::window::Encoded;

/// Batches that are bucketed together: their samples are sorted by length and dealt out in
/// a seeded order, so a batch pads to lengths close to its own.
const BUCKET: u64 = 8;

/// A kind's samples one epoch after another, without end (or none at all, for an empty kind).
struct Endless {
    source: Box<dyn Source>,
    epoch: u64,
    started: bool,
    seen: bool,
}

impl Endless {
    fn new(source: Box<dyn Source>) -> Endless {
        Endless { source, epoch: 0, started: false, seen: false }
    }

    fn next(&mut self) -> Result<Option<(usize, Encoded)>> {
        if !self.started {
            self.source.start(0)?;
            self.started = true;
        }
        loop {
            if let Some(item) = self.source.next()? {
                self.seen = true;
                return Ok(Some(item));
            }
            if !self.seen {
                return Ok(None);
            }
            self.epoch += 1;
            self.source.start(self.epoch)?;
            self.seen = false;
        }
    }
}

/// Deals a kind's share of each batch: bucket `b` takes the next `BUCKET · quota` samples of
/// the kind's stream, sorts them by length (ties by their place in the epoch) and hands them
/// out as `BUCKET` batches in an order seeded by `b`.
struct Dealer {
    stream: Endless,
    quota: usize,
    seed: u64,
    bucket: Option<u64>,
    items: Vec<(usize, Encoded)>,
}

impl Dealer {
    fn new(source: Box<dyn Source>, quota: usize, seed: u64) -> Dealer {
        Dealer { stream: Endless::new(source), quota, seed, bucket: None, items: Vec::new() }
    }

    /// The kind's part of micro-batch `k` (`k` never decreases).
    fn batch(&mut self, k: u64) -> Result<Vec<&Encoded>> {
        if self.quota == 0 {
            return Ok(vec![]);
        }
        let (bucket, slot) = (k / BUCKET, k % BUCKET);
        while self.bucket != Some(bucket) {
            let want = BUCKET as usize * self.quota;
            let mut items = Vec::with_capacity(want);
            while items.len() < want {
                match self.stream.next()? {
                    Some(item) => items.push(item),
                    None => return Ok(vec![]),
                }
            }
            items.sort_by_key(|(i, e)| (e.ids.len(), *i));
            self.items = items;
            self.bucket = Some(self.bucket.map_or(0, |b| b + 1));
        }
        let order = epoch_order(BUCKET as usize, self.seed ^ 0xb0c4e7, bucket);
        let at = order[slot as usize] * self.quota;
        Ok(self.items[at..at + self.quota].iter().map(|(_, e)| e).collect())
    }
}

/// Produces batches on a background thread, starting at micro-batch `start`.
///
/// Each batch takes `quotas.0` clean and `quotas.1` RoT samples, each kind from its own endless
/// stream of epochs (bucketed by length, see `Dealer`): the clean rows of a batch do not
/// depend on how many RoT rows it has. A batch comes as one padded part per kind. Reading and
/// tokenising rows happen on this thread too, ahead of the model.
pub struct Batcher {
    rx: Receiver<Result<Vec<Batch>>>,
}

/// The seed of the RoT stream, apart from the clean one.
pub const ROT_SEED: u64 = 0x5eed_0f0a;

impl Batcher {
    /// Batches of windows held in memory.
    pub fn spawn(
        clean: Vec<Encoded>,
        rot: Vec<Encoded>,
        quotas: (usize, usize),
        seed: u64,
        start: u64,
        pad: u32,
    ) -> Self {
        let clean = Box::new(InMemory::new(clean, seed));
        let rot = Box::new(InMemory::new(rot, seed ^ ROT_SEED));
        Self::spawn_sources(clean, rot, quotas, seed, start, pad)
    }

    /// Batches of windows from any sources (streamed from a snapshot, or in memory); `rot` is
    /// seeded by `seed ^ ROT_SEED` by whoever built it.
    pub fn spawn_sources(
        clean: Box<dyn Source>,
        rot: Box<dyn Source>,
        quotas: (usize, usize),
        seed: u64,
        start: u64,
        pad: u32,
    ) -> Self {
        let (tx, rx) = sync_channel(4);
        std::thread::Builder::new()
            .name("sft-batcher".into())
            .spawn(move || {
                let mut kinds = [Dealer::new(clean, quotas.0, seed), Dealer::new(rot, quotas.1, seed ^ ROT_SEED)];
                let mut k = start;
                loop {
                    let mut parts = Vec::new();
                    for d in &mut kinds {
                        match d.batch(k) {
                            Ok(p) if p.is_empty() => {}
                            Ok(p) => parts.push(collate(&p, pad)),
                            Err(e) => {
                                let _ = tx.send(Err(e));
                                return;
                            }
                        }
                    }
                    if tx.send(Ok(parts)).is_err() {
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
        self.rx.recv().map_err(|_| Error::Internal("the batcher thread stopped".into()))?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let lengths: Vec<usize> = (0..64).map(|i| 1 + (i * 37) % 101).collect();
        let items: Vec<Encoded> = lengths.iter().map(|n| Encoded { ids: vec![0; *n], mask: vec![true; *n] }).collect();
        let mut d = Dealer::new(Box::new(InMemory::new(items, 3)), 8, 3);
        let mut seen = Vec::new();
        for k in 0..8 {
            let b: Vec<usize> = d.batch(k).unwrap().iter().map(|e| e.ids.len()).collect();
            assert!(b.iter().max().unwrap() - b.iter().min().unwrap() < 40, "batch {k}: {b:?}");
            seen.extend(b);
        }
        let mut want = lengths.clone();
        seen.sort();
        want.sort();
        assert_eq!(seen, want, "one epoch deals every sample once");
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
