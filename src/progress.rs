//! Progress bars for long commands and the demo's jobs, on stderr (hidden with `--quiet`).

use std::sync::Arc;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

fn draw_target(quiet: bool) -> ProgressDrawTarget {
    if quiet { ProgressDrawTarget::hidden() } else { ProgressDrawTarget::stderr() }
}

/// A bar of `len` steps (training steps, tasks, states) with the rate, a message and the ETA.
pub fn steps(quiet: bool, len: u64, prefix: &str) -> ProgressBar {
    let b = ProgressBar::with_draw_target(Some(len), draw_target(quiet));
    b.set_style(
        ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} {per_sec} · {msg} ({eta})")
            .expect("valid template")
            .progress_chars("=> "),
    );
    b.set_prefix(prefix.to_string());
    b.enable_steady_tick(Duration::from_millis(250));
    b
}

/// A byte-counting bar that also shows records per second.
pub struct BytesBar {
    bar: ProgressBar,
    records: std::sync::atomic::AtomicU64,
}

impl BytesBar {
    /// A bar named `what`, its length set when the reader knows the input's size.
    pub fn new(quiet: bool, what: &str) -> Arc<Self> {
        let bar = ProgressBar::with_draw_target(Some(0), draw_target(quiet));
        bar.set_style(
            ProgressStyle::with_template("{prefix} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} · {msg} ({eta})")
                .expect("valid template")
                .progress_chars("=> "),
        );
        bar.set_prefix(what.to_string());
        bar.enable_steady_tick(Duration::from_millis(200));
        Arc::new(BytesBar { bar, records: 0.into() })
    }

    /// Clears the bar.
    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

impl regrpo_formats::ingest::Progress for BytesBar {
    fn start(&self, total_bytes: u64) {
        self.bar.set_length(total_bytes);
    }

    fn advance(&self, bytes: u64, records: u64) {
        use std::sync::atomic::Ordering;
        let n = self.records.fetch_add(records, Ordering::Relaxed) + records;
        self.bar.inc(bytes);
        if records > 0 && n.is_multiple_of(64) {
            let secs = self.bar.elapsed().as_secs_f64().max(1e-3);
            self.bar.set_message(format!("{n} records, {:.0} records/s", n as f64 / secs));
        }
    }
}
