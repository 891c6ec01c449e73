//! `regrpo model {export,import,merge,logits}`: model folders in and out.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::Subcommand;
use regrpo_trainer::checkpoint::hf::StoredDtype;
use regrpo_trainer::jobs::{self, DeviceKind};

use crate::args::DeviceArgs;

/// Work with trained models.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Write a run's model as Hugging Face files (config.json, model.safetensors, tokenizer).
    Export { run: PathBuf, out: PathBuf },
    /// Turn a GGUF checkpoint (llama or qwen2; F32, F16, BF16, Q8_0, Q4_0, Q4_1 tensors) into a
    /// Hugging Face model folder that training, eval and transformers load.
    Import {
        file: PathBuf,
        #[arg(long)]
        out: PathBuf,
        /// How the dequantized weights are stored.
        #[arg(long, value_enum, default_value_t = StoredDtype::F32)]
        dtype: StoredDtype,
    },
    /// Merge a PEFT LoRA adapter folder (ours or one peft wrote) into its base model and write
    /// the full model folder.
    Merge {
        /// The base model folder (or a run folder holding `model/`).
        base: PathBuf,
        /// The adapter folder (`adapter_config.json`, `adapter_model.safetensors`).
        #[arg(long)]
        adapter: PathBuf,
        #[arg(long)]
        out: PathBuf,
    },
    /// Logits of a model on the input_ids of a safetensors file (for parity checks).
    Logits {
        model: PathBuf,
        #[arg(long)]
        input: PathBuf,
        #[arg(long)]
        out: PathBuf,
        #[command(flatten)]
        device: DeviceArgs,
    },
}

pub fn run(c: Command) -> Result<()> {
    match c {
        Command::Export { run, out } => export(&run, &out),
        Command::Import { file, out, dtype } => import(&file, &out, dtype),
        Command::Merge { base, adapter, out } => merge(&base, &adapter, &out),
        Command::Logits { model, input, out, device } => logits(&model, &input, &out, device.device),
    }
}

fn export(run: &Path, out: &Path) -> Result<()> {
    for f in jobs::export_model(run, out)? {
        println!("wrote {}", f.display());
    }
    Ok(())
}

/// `regrpo model import`: a GGUF file → a Hugging Face folder.
fn import(file: &Path, out: &Path, dtype: StoredDtype) -> Result<()> {
    let started = std::time::Instant::now();
    let imported = regrpo_trainer::checkpoint::gguf::import(file, out, dtype)?;
    let c = &imported.config;
    let types: Vec<String> = imported.types.iter().map(|(t, n)| format!("{n} {t}")).collect();
    println!(
        "{}: {} ({} layers, hidden {}, {} heads / {} kv, vocab {}{}), {} tensors ({}), {:.1}M parameters, {dtype:?}, in {:.1}s",
        file.display(),
        c.model_type,
        c.num_hidden_layers,
        c.hidden_size,
        c.num_attention_heads,
        c.num_key_value_heads,
        c.vocab_size,
        if c.tie_word_embeddings { ", tied embeddings" } else { "" },
        imported.tensors,
        types.join(", "),
        imported.parameters as f64 / 1e6,
        started.elapsed().as_secs_f64()
    );
    println!("wrote {}", out.display());
    Ok(())
}

/// `regrpo model merge`: a base model + a PEFT adapter → a full model folder.
fn merge(base: &Path, adapter: &Path, out: &Path) -> Result<()> {
    let lora = jobs::merge_adapter(base, adapter, out)?;
    println!(
        "merged {} (rank {}, alpha {}, {}) into {}",
        adapter.display(),
        lora.rank,
        lora.alpha,
        lora.targets.join(","),
        base.display()
    );
    println!("wrote {}", out.display());
    Ok(())
}

/// Logits of a model on the `input_ids` of a safetensors file, written as `logits` beside them.
fn logits(model_dir: &Path, input: &Path, out: &Path, device: DeviceKind) -> Result<()> {
    let bytes = std::fs::read(input).with_context(|| format!("reading {}", input.display()))?;
    let st = safetensors::SafeTensors::deserialize(&bytes)
        .with_context(|| format!("{} is not safetensors", input.display()))?;
    let ids = st.tensor("input_ids").with_context(|| format!("{} has no input_ids", input.display()))?;
    let shape = ids.shape().to_vec();
    let id_data: Vec<i64> =
        ids.data().chunks_exact(8).map(|c| i64::from_le_bytes(c.try_into().expect("8 bytes"))).collect();
    let (values, dims) = jobs::model_logits(model_dir, id_data.clone(), [shape[0], shape[1]], device)?;
    let id_bytes: Vec<u8> = id_data.iter().flat_map(|v| v.to_le_bytes()).collect();
    let logit_bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    let views = vec![
        ("input_ids".to_string(), safetensors::tensor::TensorView::new(safetensors::Dtype::I64, shape, &id_bytes)?),
        ("logits".to_string(), safetensors::tensor::TensorView::new(safetensors::Dtype::F32, dims, &logit_bytes)?),
    ];
    safetensors::serialize_to_file(views, None, out)?;
    println!("wrote {}", out.display());
    Ok(())
}
