//! Ingest: external agent data → `trajectories` (+ `rot`), bad records → `rejects`.
//!
//! ```text
//!  files ──Scanner (blocking thread)──▶ record bytes ──FormatReader::convert──▶ rows | reject
//!                                                   chunks of rows (bounded channel)
//!                                                               ▼
//!                                   Appender per table: dedupe by content id, one commit per chunk
//! ```
//!
//! Reading and converting run on a blocking thread while the async side commits the previous
//! chunk, so parsing and writing overlap and memory stays bounded by a few chunks.

mod bfcl;
mod common;
mod gta;
mod mat;
mod openai;
mod regrpo;

use std::fmt;
use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use regrpo_schemas::id::{content_id, seal};
use regrpo_schemas::{FileRef, Reject, Rot, Step, Trajectory};

use regrpo_datasets::Repository;
use regrpo_schemas::IoContext;

use crate::error::{Error, Result};
use crate::jsonscan::{Item, Layout, Scanner};

pub use common::steps_from_chat;

/// The input formats `regrpo ingest` reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum Format {
    /// ReGRPO reference records (`conversations` + optional `rot_meta`).
    Regrpo,
    /// MM-Traj (MAT) ShareGPT records with Python-call code blocks.
    Mat,
    /// Berkeley Function Calling Leaderboard questions + answers.
    Bfcl,
    /// The GTA benchmark's `dataset.json`.
    Gta,
    /// OpenAI chat fine-tuning JSONL.
    Openai,
}

impl Format {
    pub const ALL: [Format; 5] = [Format::Regrpo, Format::Mat, Format::Bfcl, Format::Gta, Format::Openai];

    pub fn as_str(self) -> &'static str {
        match self {
            Format::Regrpo => "regrpo",
            Format::Mat => "mat",
            Format::Bfcl => "bfcl",
            Format::Gta => "gta",
            Format::Openai => "openai",
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

impl FromStr for Format {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        Format::ALL
            .into_iter()
            .find(|f| f.as_str() == s)
            .ok_or_else(|| format!("unknown format `{s}` (expected one of regrpo, mat, bfcl, gta, openai)"))
    }
}

/// One record as the scanner delimited it.
pub(crate) struct RawRecord<'a> {
    pub file: &'a str,
    pub offset: u64,
    pub line: Option<u64>,
    pub key: Option<&'a str>,
    pub bytes: &'a [u8],
    pub batch: &'a str,
}

impl RawRecord<'_> {
    /// Parses the bytes into `T`, with the JSON path of the first problem in the message.
    pub fn parse<T: serde::de::DeserializeOwned>(&self) -> std::result::Result<T, String> {
        let de = &mut serde_json::Deserializer::from_slice(self.bytes);
        serde_path_to_error::deserialize(de).map_err(|e| {
            let path = e.path().to_string();
            let inner = e.into_inner();
            let what = if inner.to_string().contains("recursion limit") {
                "nesting deeper than 128 levels".to_string()
            } else if inner.to_string().contains("UTF-8") || inner.to_string().contains("unicode") {
                format!("invalid UTF-8 or unicode escape: {inner}")
            } else {
                inner.to_string()
            };
            if path == "." { what } else { format!("field `{path}`: {what}") }
        })
    }

    /// Refuses a record that is not a JSON object (an array or a scalar on its own line), with
    /// what was expected: serde would read an array positionally into a struct and say only
    /// that its length is wrong.
    pub fn expect_object(&self, what: &str) -> std::result::Result<(), String> {
        let found = match self.bytes.trim_ascii_start().first() {
            Some(b'{') | None => return Ok(()),
            Some(b'[') => "a JSON array",
            Some(b'"') => "a string",
            Some(_) => "something else",
        };
        Err(format!("expected {what} on this line, found {found}"))
    }

    /// The trajectory this record holds: what the reader read of it, the source's name and id,
    /// and where it was read from (this record's file, offset, line and ingest batch); its id
    /// sealed from its content.
    pub fn trajectory(&self, source: &str, source_id: String, c: Content) -> Trajectory {
        seal(Trajectory {
            trajectory_id: String::new(),
            source: source.to_string(),
            source_id,
            source_file: self.file.to_string(),
            source_offset: self.offset as i64,
            source_line: self.line.map(|l| l as i64),
            task: c.task,
            system_prompt: c.system_prompt,
            files: c.files,
            tool_specs: c.tool_specs,
            steps: c.steps,
            final_answer: c.final_answer,
            gt_answer: c.gt_answer,
            meta: c.meta,
            ingest_batch: self.batch.to_string(),
        })
    }
}

/// What a reader reads of a trajectory; [`RawRecord::trajectory`] adds where it came from.
pub(crate) struct Content {
    pub task: String,
    pub system_prompt: Option<String>,
    pub files: Vec<FileRef>,
    /// JSON array of tool specs in the OpenAI function-calling shape.
    pub tool_specs: String,
    pub steps: Vec<Step>,
    pub final_answer: Option<String>,
    /// JSON: the ground truth as the source states it.
    pub gt_answer: Option<String>,
    /// JSON object of source fields that have no column of their own.
    pub meta: Option<String>,
}

/// What one record turned into.
#[derive(Debug, Default)]
pub(crate) struct Converted {
    pub trajectories: Vec<Trajectory>,
    pub rots: Vec<Rot>,
}

/// A reader for one input format.
pub(crate) trait FormatReader: Send {
    fn layout(&self) -> Layout;
    /// Called before each file, e.g. to load a side file of answers.
    fn open_file(&mut self, _path: &Path) -> Result<()> {
        Ok(())
    }
    /// Converts one record; `Err` holds a reason for `rejects`.
    fn convert(&mut self, rec: &RawRecord<'_>) -> std::result::Result<Converted, String>;
}

fn reader_for(format: Format, opts: &IngestOptions) -> Box<dyn FormatReader> {
    match format {
        Format::Regrpo => Box::new(regrpo::RegrpoReader),
        Format::Mat => Box::new(mat::MatReader),
        Format::Bfcl => Box::new(bfcl::BfclReader::new(opts.answers.clone())),
        Format::Gta => Box::new(gta::GtaReader),
        Format::Openai => Box::new(openai::OpenaiReader),
    }
}

/// Receives progress while an ingest runs.
pub trait Progress: Send + Sync {
    /// Total input bytes, once known.
    fn start(&self, _total_bytes: u64) {}
    /// `bytes` more input consumed, `records` more records read.
    fn advance(&self, bytes: u64, records: u64);
}

/// Options of an ingest.
#[derive(Clone, Default)]
pub struct IngestOptions {
    /// Rows per commit (default 20,000).
    pub chunk_rows: Option<usize>,
    /// For BFCL: the answers file, when it is not beside the questions.
    pub answers: Option<PathBuf>,
    pub progress: Option<Arc<dyn Progress>>,
}

/// What an ingest did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IngestSummary {
    pub files: usize,
    pub bytes: u64,
    pub records_read: u64,
    pub trajectories_added: usize,
    pub rot_added: usize,
    /// Records that could not be read (each is a row in `rejects`).
    pub rejected: u64,
    /// Rows already in the repository, skipped.
    pub duplicates: usize,
    pub commits: usize,
    pub elapsed: Duration,
    pub ingest_batch: String,
}

#[derive(Default)]
struct Chunk {
    trajectories: Vec<Trajectory>,
    rots: Vec<Rot>,
    rejects: Vec<Reject>,
}

impl Chunk {
    fn rows(&self) -> usize {
        self.trajectories.len() + self.rots.len() + self.rejects.len()
    }
}

/// Ingests files of one format into the repository.
pub async fn ingest(
    repo: &Repository,
    format: Format,
    paths: &[PathBuf],
    opts: &IngestOptions,
) -> Result<IngestSummary> {
    let started = Instant::now();
    let mut total_bytes = 0;
    let mut batch_parts = vec![format.as_str().as_bytes().to_vec()];
    for p in paths {
        let meta = std::fs::metadata(p).at(p)?;
        if !meta.is_file() {
            return Err(Error::NotAFile { path: p.clone() });
        }
        total_bytes += meta.len();
        let canon = p.canonicalize().at(p)?;
        batch_parts.push(canon.to_string_lossy().as_bytes().to_vec());
        batch_parts.push(meta.len().to_le_bytes().to_vec());
    }
    let batch = content_id(batch_parts.iter().map(Vec::as_slice));
    if let Some(p) = &opts.progress {
        p.start(total_bytes);
    }

    let chunk_rows = opts.chunk_rows.unwrap_or(20_000).max(1);
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Chunk>(2);
    let mut reader = reader_for(format, opts);
    let paths_owned = paths.to_vec();
    let progress = opts.progress.clone();
    let batch_for_reader = batch.clone();
    let producer = tokio::task::spawn_blocking(move || -> Result<(u64, u64)> {
        let mut records = 0u64;
        let mut rejected = 0u64;
        let mut chunk = Chunk::default();
        for path in &paths_owned {
            let mut open = true;
            let (n, r) =
                read_file_with(reader.as_mut(), format, path, &batch_for_reader, progress.as_deref(), |row| {
                    match row {
                        Ok(c) => {
                            chunk.trajectories.extend(c.trajectories);
                            chunk.rots.extend(c.rots);
                        }
                        Err(rej) => chunk.rejects.push(rej),
                    }
                    if chunk.rows() >= chunk_rows {
                        // A send error means the writer failed; its error is the one reported.
                        open = tx.blocking_send(std::mem::take(&mut chunk)).is_ok();
                    }
                    open
                })?;
            records += n;
            rejected += r;
            if !open {
                return Ok((records, rejected));
            }
        }
        if chunk.rows() > 0 {
            let _ = tx.blocking_send(chunk);
        }
        Ok((records, rejected))
    });

    let mut summary =
        IngestSummary { files: paths.len(), bytes: total_bytes, ingest_batch: batch.clone(), ..Default::default() };
    let op = format!("ingest {format} {batch}");
    let write = async {
        let mut trajectories = repo.appender::<Trajectory>().await?;
        let mut rots = repo.appender::<Rot>().await?;
        let mut rejects = repo.appender::<Reject>().await?;
        while let Some(chunk) = rx.recv().await {
            let t = trajectories.append(chunk.trajectories, &op).await?;
            let r = rots.append(chunk.rots, &op).await?;
            let j = rejects.append(chunk.rejects, &op).await?;
            summary.trajectories_added += t.added;
            summary.rot_added += r.added;
            summary.duplicates += t.duplicates + r.duplicates;
            summary.commits += [t.version, r.version, j.version].iter().flatten().count();
        }
        Ok::<_, Error>(())
    };
    let written = write.await;
    drop(rx);
    let produced = producer.await.map_err(|e| Error::Internal(format!("ingest reader panicked: {e}")))?;
    written?;
    let (records, rejected) = produced?;
    summary.records_read = records;
    summary.rejected = rejected;
    summary.elapsed = started.elapsed();
    Ok(summary)
}

/// Scans one file with a reader, handing every converted record or reject to `sink` until it
/// returns `false`. Returns `(records, rejected)`.
fn read_file_with(
    reader: &mut dyn FormatReader,
    format: Format,
    path: &Path,
    batch: &str,
    progress: Option<&dyn Progress>,
    mut sink: impl FnMut(std::result::Result<Converted, Reject>) -> bool,
) -> Result<(u64, u64)> {
    reader.open_file(path)?;
    let file = std::fs::File::open(path).at(path)?;
    let mut scanner = Scanner::new(BufReader::with_capacity(1 << 20, file), reader.layout());
    let display = path.display().to_string();
    // Rejects are keyed by the canonical path, so one file given as a relative and then an
    // absolute path rejects its records once.
    let canonical = path.canonicalize().map_or_else(|_| display.clone(), |p| p.display().to_string());
    let (mut records, mut rejected, mut last) = (0u64, 0u64, 0u64);
    while let Some(item) = scanner.next_item().at(path)? {
        records += 1;
        let row = match item {
            Item::Record { offset, line, key, bytes } => {
                let raw = RawRecord { file: &display, offset, line, key: key.as_deref(), bytes: &bytes, batch };
                reader.convert(&raw).map_err(|reason| reject(format, &canonical, offset, line, &reason, &bytes, batch))
            }
            Item::Bad { offset, line, reason, excerpt } => {
                Err(reject(format, &canonical, offset, line, &reason, &excerpt, batch))
            }
        };
        rejected += u64::from(row.is_err());
        if let Some(p) = progress {
            p.advance(scanner.offset() - last, 1);
            last = scanner.offset();
        }
        if !sink(row) {
            break;
        }
    }
    if let Some(p) = progress {
        p.advance(scanner.offset() - last, 0);
    }
    Ok((records, rejected))
}

/// What a file converts to, in memory, without touching a repository (`ingest --dry-run`,
/// and tests comparing what was read with what was stored).
#[derive(Debug, Default)]
pub struct FileContents {
    pub trajectories: Vec<Trajectory>,
    pub rots: Vec<Rot>,
    pub rejects: Vec<Reject>,
}

/// Converts one file in memory. `batch` is the `ingest_batch` the rows get.
pub fn read_file(format: Format, path: &Path, answers: Option<PathBuf>, batch: &str) -> Result<FileContents> {
    let opts = IngestOptions { answers, ..Default::default() };
    let mut reader = reader_for(format, &opts);
    let mut out = FileContents::default();
    read_file_with(reader.as_mut(), format, path, batch, None, |row| {
        match row {
            Ok(c) => {
                out.trajectories.extend(c.trajectories);
                out.rots.extend(c.rots);
            }
            Err(r) => out.rejects.push(r),
        }
        true
    })?;
    Ok(out)
}

fn reject(
    format: Format,
    file: &str,
    offset: u64,
    line: Option<u64>,
    reason: &str,
    bytes: &[u8],
    batch: &str,
) -> Reject {
    let excerpt: String = String::from_utf8_lossy(&bytes[..bytes.len().min(160)]).into_owned();
    Reject {
        reject_id: content_id([format.as_str().as_bytes(), file.as_bytes(), &offset.to_le_bytes(), reason.as_bytes()]),
        format: format.as_str().to_string(),
        file: file.to_string(),
        line: line.map(|l| l as i64),
        byte_offset: offset as i64,
        reason: reason.to_string(),
        excerpt,
        ingest_batch: batch.to_string(),
    }
}
