//! Training checkpoints: a run folder's `checkpoints/step-NNNNNN/`, each holding the model's and
//! the optimizer's Burn records (`model.mpk`, `optim.mpk`) and the loop's own state
//! (`state.json`: the step, the settings, and whatever else the loop needs to go on exactly).
//!
//! A checkpoint folder appears whole or not at all ([`regrpo_schemas::write_folder`]): a run
//! killed while writing one leaves the previous checkpoint as the latest.

use std::path::{Path, PathBuf};

use burn::module::Module;
use burn::optim::Optimizer;
use burn::record::{FullPrecisionSettings, NamedMpkFileRecorder, Recorder};
use burn::tensor::backend::AutodiffBackend;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{Error, IoContext, Result};
use crate::model::CausalLm;

type Recorder_ = NamedMpkFileRecorder<FullPrecisionSettings>;

/// The folder of checkpoint `step`.
pub fn checkpoint_dir(run: &Path, step: u64) -> PathBuf {
    run.join("checkpoints").join(format!("step-{step:06}"))
}

/// The latest checkpoint of a run (its step and folder), if any.
pub fn latest_checkpoint(run: &Path) -> Option<(u64, PathBuf)> {
    let dir = run.join("checkpoints");
    let mut best = None;
    for e in std::fs::read_dir(dir).ok()?.filter_map(|e| e.ok()) {
        let name = e.file_name().to_string_lossy().into_owned();
        if let Some(step) = name.strip_prefix("step-").and_then(|s| s.parse::<u64>().ok())
            && e.path().join("state.json").exists()
            && best.as_ref().is_none_or(|(b, _)| step > *b)
        {
            best = Some((step, e.path()));
        }
    }
    best
}

/// Reads a checkpoint's `state.json`.
pub fn read_state<S: DeserializeOwned>(dir: &Path) -> Result<S> {
    let path = dir.join("state.json");
    let text = std::fs::read_to_string(&path).at(&path)?;
    serde_json::from_str(&text).map_err(|e| Error::Checkpoint { path, reason: e.to_string() })
}

/// Writes checkpoint `step` of the run in `run`: model, optimizer state and `state`.
pub fn save<B, O, S>(run: &Path, step: u64, model: &CausalLm<B>, optim: &O, state: &S) -> Result<PathBuf>
where
    B: AutodiffBackend,
    O: Optimizer<CausalLm<B>, B>,
    S: Serialize,
{
    let dir = checkpoint_dir(run, step);
    let recorder = Recorder_::new();
    let failed =
        |path: &Path, e: &dyn std::fmt::Display| Error::Checkpoint { path: path.into(), reason: e.to_string() };
    regrpo_schemas::write_folder(&dir, |tmp| -> Result<()> {
        model.clone().save_file(tmp.join("model"), &recorder).map_err(|e| failed(tmp, &e))?;
        recorder.record(optim.to_record(), tmp.join("optim")).map_err(|e| failed(tmp, &e))?;
        let path = tmp.join("state.json");
        let text = serde_json::to_string_pretty(state).map_err(|e| failed(&path, &e))?;
        std::fs::write(&path, text).at(&path)?;
        Ok(())
    })?;
    Ok(dir)
}

/// Loads the model and optimizer records of the checkpoint in `dir` into `model` and `optim`.
pub fn load<B, O>(dir: &Path, model: CausalLm<B>, optim: O, device: &B::Device) -> Result<(CausalLm<B>, O)>
where
    B: AutodiffBackend,
    O: Optimizer<CausalLm<B>, B>,
{
    let recorder = Recorder_::new();
    let failed = |e: &dyn std::fmt::Display| Error::Checkpoint { path: dir.to_path_buf(), reason: e.to_string() };
    let model = model.load_file(dir.join("model"), &recorder, device).map_err(|e| failed(&e))?;
    let record = recorder.load(dir.join("optim"), device).map_err(|e| failed(&e))?;
    Ok((model, optim.load_record(record)))
}
