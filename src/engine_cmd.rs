//! Commands of the data engine: `toolworld generate`, `engine run`.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use regrpo_datasets::Repository;
use regrpo_engine::reflect::TeacherConfig;
use regrpo_engine::tool::remote::{self, RemoteConfig};
use regrpo_engine::tool::wasm::{WasmLimits, WasmTool};
use regrpo_engine::{EngineConfig, EngineProgress, EngineReport, Mix, ToolSuite};
use regrpo_schemas::ErrorType;

fn bar(quiet: bool, len: u64, prefix: &str) -> ProgressBar {
    let target = if quiet { ProgressDrawTarget::hidden() } else { ProgressDrawTarget::stderr() };
    let b = ProgressBar::with_draw_target(Some(len), target);
    b.set_style(
        ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} {per_sec} · {msg} ({eta})")
            .expect("valid template")
            .progress_chars("=> "),
    );
    b.set_prefix(prefix.to_string());
    b.enable_steady_tick(Duration::from_millis(200));
    b
}

pub async fn toolworld_generate(dir: &Path, tasks: usize, seed: u64, concurrency: usize, quiet: bool) -> Result<()> {
    let repo = Repository::open(dir)?;
    let b = bar(quiet, tasks as u64, "toolworld");
    let (added, skipped) =
        regrpo_engine::toolworld::generate_into(&repo, tasks, seed, concurrency, || b.inc(1)).await?;
    b.finish_and_clear();
    println!(
        "toolworld seed {seed}: {tasks} tasks, {added} trajectories added, {skipped} already there; sandboxes under {}",
        repo.root().join("sandboxes").display()
    );
    Ok(())
}

/// Builds the tool suite from `--tools builtin,wasm:DIR,remote:URL`.
pub async fn suite_from(spec: &str, wasm_limits: WasmLimits) -> Result<ToolSuite> {
    let mut suite = ToolSuite::new();
    for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        if part == "builtin" {
            for t in regrpo_engine::tool::builtin::all() {
                suite.add(t);
            }
        } else if let Some(dir) = part.strip_prefix("wasm:") {
            for t in WasmTool::load_dir(Path::new(dir), wasm_limits)
                .with_context(|| format!("loading wasm tools from {dir}"))?
            {
                suite.add(t);
            }
        } else if let Some(url) = part.strip_prefix("remote:") {
            match remote::connect(RemoteConfig::new(url)).await {
                Ok(tools) => {
                    for t in tools {
                        suite.add(t);
                    }
                }
                Err(e) => {
                    eprintln!("warning: remote tool server {url} is unavailable ({e}); its tools will have no executor")
                }
            }
        } else {
            bail!("unknown tool source `{part}` (expected builtin, wasm:DIR or remote:URL)");
        }
    }
    Ok(suite)
}

struct Bar {
    bar: ProgressBar,
    counts: Mutex<BTreeMap<ErrorType, usize>>,
}

impl EngineProgress for Bar {
    fn start(&self, n: u64) {
        self.bar.set_length(n);
    }
    fn executed(&self, _calls: u64) {}
    fn trajectories_done(&self, n: u64) {
        self.bar.inc(n);
    }
    fn accepted(&self, t: ErrorType) {
        let mut c = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        *c.entry(t).or_insert(0) += 1;
        let total: usize = c.values().sum();
        if total.is_multiple_of(25) {
            let secs = self.bar.elapsed().as_secs_f64().max(1e-3);
            let parts: Vec<String> = c.iter().map(|(t, n)| format!("{}:{n}", &t.as_str()[..4])).collect();
            self.bar.set_message(format!("{total} RoT ({:.0}/s) {}", total as f64 / secs, parts.join(" ")));
        }
    }
}

#[allow(clippy::too_many_arguments)]
pub async fn engine_run(
    dir: &Path,
    tools: &str,
    mix: &str,
    extra: f64,
    per_trajectory: usize,
    seed: u64,
    concurrency: usize,
    teacher: Option<&str>,
    snapshot: Option<String>,
    sources: Option<Vec<String>>,
    wasm_limits: WasmLimits,
    quiet: bool,
) -> Result<EngineReport> {
    let repo = Repository::open(dir)?;
    let suite = suite_from(tools, wasm_limits).await?;
    let cfg = EngineConfig {
        mix: Mix::parse(mix, extra)?,
        per_trajectory,
        seed,
        concurrency,
        teacher: teacher.map(TeacherConfig::from_env),
        snapshot,
        sources,
        ..EngineConfig::default()
    };
    let progress = Arc::new(Bar { bar: bar(quiet, 0, "engine"), counts: Mutex::new(BTreeMap::new()) });
    let report =
        regrpo_engine::run::run(&repo, &suite, &cfg, Some(progress.clone() as Arc<dyn EngineProgress>)).await?;
    progress.bar.finish_and_clear();
    print_report(&report, &cfg.mix, repo.root());
    Ok(report)
}

pub fn print_report(r: &EngineReport, mix: &Mix, root: &Path) {
    let total = r.accepted_total();
    let main: usize = ErrorType::MAIN.iter().map(|t| r.accepted.get(t).copied().unwrap_or(0)).sum();
    let secs = r.elapsed.as_secs_f64().max(1e-9);
    println!(
        "engine run {}: {} trajectories, {} near-misses planned, {} executions in {:.1}s ({:.0} RoT rows/s)",
        r.run_id,
        r.trajectories,
        r.planned,
        r.executions,
        secs,
        total as f64 / secs
    );
    println!("{:<18} {:>7} {:>12} {:>12}", "ErrorType", "RoT", "share(main)", "target");
    let main_target: f64 = ErrorType::MAIN.iter().map(|t| mix.share(*t)).sum();
    for t in ErrorType::ALL {
        let n = r.accepted.get(&t).copied().unwrap_or(0);
        let (share, target) = if ErrorType::MAIN.contains(&t) {
            (format!("{:.3}", n as f64 / main.max(1) as f64), format!("{:.3}", mix.share(t) / main_target.max(1e-12)))
        } else {
            ("-".into(), format!("{:.3} (all)", mix.share(t)))
        };
        println!("{:<18} {n:>7} {share:>12} {target:>12}", t.as_str());
    }
    println!(
        "{total} RoT rows ({} verified by re-execution), {} new RoT rows and {} new near-miss rows committed to {}",
        r.verified,
        r.rot_added,
        r.near_misses_added,
        root.display()
    );
    if !r.rejected.is_empty() {
        println!("rejected near-misses, by reason:");
        let mut reasons: Vec<_> = r.rejected.iter().collect();
        reasons.sort_by(|a, b| b.1.cmp(a.1));
        for (reason, n) in reasons {
            println!("  {n:>7}  {reason}");
        }
    }
    for (tool, n) in &r.missing_executors {
        println!("no executor for `{tool}` ({n} calls): configure a wasm module or a remote tool server");
    }
}
