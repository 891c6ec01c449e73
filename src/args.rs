//! Arguments several commands share: the context window's budgets, LoRA, the device.

use clap::Args;
use regrpo_trainer::jobs::DeviceKind;
use regrpo_trainer::model::lora::{DEFAULT_TARGETS, LoraConfig};
use regrpo_trainer::text::window::WindowConfig;

/// Token budgets of the context window (see `regrpo_trainer::text::window`).
#[derive(Debug, Args)]
pub struct WindowArgs {
    /// Tokens of a whole prompt.
    #[arg(long, default_value_t = WindowConfig::default().max_prompt_tokens)]
    max_prompt_tokens: usize,
    /// Tokens of a target turn (and the sampling budget).
    #[arg(long, default_value_t = WindowConfig::default().max_target_tokens)]
    max_target_tokens: usize,
    #[arg(long, default_value_t = WindowConfig::default().system_tokens)]
    system_tokens: usize,
    #[arg(long, default_value_t = WindowConfig::default().task_tokens)]
    task_tokens: usize,
    /// Tokens of each observation.
    #[arg(long, default_value_t = WindowConfig::default().observation_tokens)]
    observation_tokens: usize,
}

impl WindowArgs {
    pub fn config(&self) -> WindowConfig {
        WindowConfig {
            max_prompt_tokens: self.max_prompt_tokens,
            max_target_tokens: self.max_target_tokens,
            system_tokens: self.system_tokens,
            task_tokens: self.task_tokens,
            observation_tokens: self.observation_tokens,
        }
    }
}

/// LoRA: train low-rank adapters beside the chosen projections, the base frozen.
#[derive(Debug, Args)]
pub struct LoraArgs {
    /// Rank of the adapters (LoRA is off without it); the run also writes `adapter/` (PEFT).
    #[arg(long)]
    lora_rank: Option<usize>,
    /// Scale numerator: the update is multiplied by alpha / rank [default: 2 × rank].
    #[arg(long, requires = "lora_rank")]
    lora_alpha: Option<f64>,
    /// Dropout on the adapters' input while training.
    #[arg(long, default_value_t = LoraConfig::new(1).dropout, requires = "lora_rank")]
    lora_dropout: f64,
    /// Projections to adapt (q_proj k_proj v_proj o_proj gate_proj up_proj down_proj).
    #[arg(long, value_delimiter = ',', default_values_t = DEFAULT_TARGETS.map(String::from), requires = "lora_rank")]
    lora_targets: Vec<String>,
}

impl LoraArgs {
    pub fn config(&self) -> Option<LoraConfig> {
        let rank = self.lora_rank?;
        let base = LoraConfig::new(rank);
        Some(LoraConfig {
            alpha: self.lora_alpha.unwrap_or(base.alpha),
            dropout: self.lora_dropout,
            targets: self.lora_targets.clone(),
            ..base
        })
    }
}

/// Where a job runs; every training and evaluation command takes it.
#[derive(Debug, Args)]
pub struct DeviceArgs {
    /// cpu, or cuda (needs a build with `--features cuda`).
    #[arg(long, value_enum, default_value_t = DeviceKind::default())]
    pub device: DeviceKind,
}

/// Parses `KEY=VALUE` (the value may itself hold `=`).
pub fn key_value(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_string(), v.to_string())),
        _ => Err(format!("expected KEY=VALUE, got `{text}`")),
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    /// The shared arguments, alone on a command line.
    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        window: WindowArgs,
        #[command(flatten)]
        lora: LoraArgs,
        #[command(flatten)]
        device: DeviceArgs,
    }

    #[test]
    fn no_flags_give_the_configs_defaults() {
        let cli = Cli::try_parse_from(["regrpo"]).unwrap();
        assert_eq!(cli.window.config(), WindowConfig::default());
        assert_eq!(cli.lora.config(), None);
        assert_eq!(cli.device.device, DeviceKind::default());
    }

    #[test]
    fn a_lora_rank_alone_gives_the_adapters_defaults() {
        let cli = Cli::try_parse_from(["regrpo", "--lora-rank", "8"]).unwrap();
        assert_eq!(cli.lora.config(), Some(LoraConfig::new(8)));
    }
}
