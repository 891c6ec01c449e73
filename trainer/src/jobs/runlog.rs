//! What a run leaves behind: `run.json`, `metrics.csv` and PNG curves in its folder, and a row in
//! `runs` plus one row per logged scalar in `metrics` of the repository it read.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use regrpo_datasets::{AppTransaction, Repository};
use regrpo_formats::plot::{Series, line_chart};
use regrpo_schemas::{Metric, Record, Run};
use serde_json::{Value, json};

use crate::error::{IoContext, Result};

/// Microseconds since the Unix epoch.
pub fn now_us() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_micros() as i64).unwrap_or(0)
}

/// The commit of the working copy, when run inside a git checkout.
pub fn git_commit() -> Option<String> {
    let out = std::process::Command::new("git").args(["rev-parse", "HEAD"]).output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_string()).filter(|s| !s.is_empty())
}

/// Collects a run's scalars and writes them out at the end.
pub struct RunLog {
    pub run_id: String,
    pub kind: String,
    pub dir: PathBuf,
    pub snapshot: Option<String>,
    pub versions: BTreeMap<String, i64>,
    pub config: Value,
    pub started_at: i64,
    pub metrics: Vec<Metric>,
}

impl RunLog {
    pub fn new(
        kind: &str,
        dir: &Path,
        snapshot: Option<String>,
        versions: BTreeMap<String, i64>,
        config: Value,
    ) -> Result<Self> {
        std::fs::create_dir_all(dir).at(dir)?;
        let started_at = now_us();
        let run_id = regrpo_schemas::id::content_id([
            kind.as_bytes(),
            config.to_string().as_bytes(),
            dir.display().to_string().as_bytes(),
            &started_at.to_le_bytes(),
        ]);
        Ok(RunLog {
            run_id,
            kind: kind.into(),
            dir: dir.to_path_buf(),
            snapshot,
            versions,
            config,
            started_at,
            metrics: Vec::new(),
        })
    }

    pub fn log(&mut self, step: i64, name: &str, value: f64, split: Option<&str>) {
        if value.is_finite() {
            self.metrics.push(Metric {
                run_id: self.run_id.clone(),
                step,
                name: name.into(),
                value,
                split: split.map(str::to_string),
            });
        }
    }

    /// The values of one metric, in step order.
    pub fn series(&self, name: &str) -> Vec<(f64, f64)> {
        self.metrics.iter().filter(|m| m.name == name).map(|m| (m.step as f64, m.value)).collect()
    }

    /// Writes `metrics.csv`, a PNG per group of curves, `run.json`, and the repository rows.
    pub async fn finish(
        &self,
        repo: &Repository,
        status: &str,
        summary: Value,
        charts: &[(&str, &str, &[&str])],
    ) -> Result<Vec<PathBuf>> {
        let mut written = Vec::new();
        let csv_path = self.dir.join("metrics.csv");
        let mut csv = String::from("step,name,value,split\n");
        for m in &self.metrics {
            csv.push_str(&format!("{},{},{},{}\n", m.step, m.name, m.value, m.split.as_deref().unwrap_or("")));
        }
        std::fs::write(&csv_path, csv).at(&csv_path)?;
        written.push(csv_path);
        for (file, title, names) in charts {
            let series: Vec<Series<'_>> = names
                .iter()
                .map(|n| Series { name: n, points: self.series(n) })
                .filter(|s| !s.points.is_empty())
                .collect();
            if series.is_empty() {
                continue;
            }
            let path = self.dir.join(file);
            line_chart(&path, title, "step", "", &series)?;
            written.push(path);
        }
        let finished_at = now_us();
        let run = Run {
            run_id: self.run_id.clone(),
            kind: self.kind.clone(),
            snapshot: self.snapshot.clone(),
            table_versions: serde_json::to_string(&self.versions).unwrap_or_default(),
            config: self.config.to_string(),
            git_commit: git_commit(),
            started_at: self.started_at,
            finished_at: Some(finished_at),
            status: status.into(),
            summary: Some(summary.to_string()),
        };
        let run_json = self.dir.join("run.json");
        let doc = json!({
            "run_id": run.run_id, "kind": run.kind, "snapshot": run.snapshot, "table_versions": self.versions,
            "config": self.config, "git_commit": run.git_commit, "status": status, "summary": summary,
        });
        std::fs::write(&run_json, serde_json::to_string_pretty(&doc).unwrap_or_default() + "\n").at(&run_json)?;
        written.push(run_json);
        // The metrics land once per run, marked by an application transaction (a run resumed
        // after it finished, or killed between these two commits, finishes again without doubling
        // them); the run's row comes last and says the run finished.
        let mark = AppTransaction { app_id: format!("run {}", self.run_id), version: 1 };
        if repo.transaction_version(Metric::TABLE, &mark.app_id).await?.is_none() {
            repo.commit_as(&self.metrics, &format!("{} metrics", self.kind), Some(&mark)).await?;
        }
        repo.appender::<Run>().await?.append(vec![run], &format!("{} run", self.kind)).await?;
        Ok(written)
    }
}
