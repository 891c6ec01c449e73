//! The agent loop with the inference-time reflection trigger.
//!
//! ReAct: the policy writes a turn, its action runs with the tool suite, the observation is
//! appended, until `final_answer` or the step budget. After each observation the deterministic
//! trigger `ToolError ∨ EmptyObservation ∨ (step > 1 ∧ u_i < κ_i)` — `u_i` the geometric-mean
//! probability of the action tokens, `κ_i` the mean of earlier `u` — opens at most one
//! reflection for the step: the turn is regenerated with the assistant turn prefilled with
//! `Reflection:` and its action replaces the failed one.

use burn::tensor::backend::Backend;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use regrpo_engine::executor::{declared_specs, execute_action};
use regrpo_engine::{CallContext, ToolSuite, toolworld};
use regrpo_schemas::action::Surface;
use regrpo_schemas::react::{
    REFLECTION_START, format_observation, parse_assistant, reflection_block, trajectory_messages,
};
use regrpo_schemas::{Action, ExecStatus, Message, Trajectory};

use crate::decode::sampling::SampleConfig;
use crate::decode::turn::TurnDecoder;
use crate::error::Result;
use crate::model::CausalLm;
use crate::text::window::Truncations;

/// Settings of an episode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AgentConfig {
    /// Turns an episode may take before it ends without an answer.
    pub max_steps: usize,
    /// Whether the reflection trigger is on.
    pub trigger: bool,
}

impl Default for AgentConfig {
    fn default() -> Self {
        AgentConfig { max_steps: 8, trigger: true }
    }
}

/// One step of an episode.
#[derive(Debug, Clone)]
pub struct AgentStep {
    pub text: String,
    pub observation: String,
    pub status: ExecStatus,
    /// `exp(mean log π(action tokens))`.
    pub confidence: f64,
    pub reflected: bool,
}

/// A finished episode.
#[derive(Debug, Clone)]
pub struct Episode {
    pub steps: Vec<AgentStep>,
    pub final_answer: Option<String>,
    /// What the context window cut on the way.
    pub truncations: Truncations,
}

/// The trigger: a tool error, an empty observation, or low confidence after step 1.
pub fn trigger(status: ExecStatus, observation: &str, step: usize, u: f64, earlier: &[f64]) -> bool {
    let error = status.is_error();
    let empty = status == ExecStatus::Empty || observation.trim().is_empty();
    let kappa = if earlier.is_empty() { f64::NAN } else { earlier.iter().sum::<f64>() / earlier.len() as f64 };
    error || empty || (step > 1 && u < kappa)
}

struct Turn {
    text: String,
    confidence: f64,
}

fn generate<B: Backend>(
    model: &CausalLm<B>,
    decoder: &TurnDecoder,
    task: &Trajectory,
    messages: &[Message],
    prefix: &str,
    cuts: &mut Truncations,
) -> Result<Turn> {
    let tk = decoder.tokenizer();
    let greedy = SampleConfig { temperature: 0.0, top_p: 1.0, max_new_tokens: decoder.window.cfg.max_target_tokens };
    let specs = declared_specs(task);
    let surface = task
        .steps
        .iter()
        .find_map(|s| s.action.as_ref().and_then(|a| a.surface.parse::<Surface>().ok()))
        .unwrap_or(Surface::Python);
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let generated = decoder.generate(
        model,
        crate::decode::Turn { messages, specs: &specs, surface, prefix },
        1,
        &greedy,
        &mut rng,
    )?;
    cuts.add(&generated.truncations);
    let c = &generated.completions[0];
    let text = format!("{prefix}{}", decoder.text(c)?);
    // The action's tokens are those after the reflection block, if any.
    let skip = match reflection_block(&text) {
        Some(r) => tk.encode(r)?.len().saturating_sub(tk.encode(prefix)?.len()),
        None => 0,
    };
    let lps: Vec<f64> = c.logprobs.iter().skip(skip).map(|l| f64::from(*l)).collect();
    let confidence = if lps.is_empty() { 0.0 } else { (lps.iter().sum::<f64>() / lps.len() as f64).exp() };
    Ok(Turn { text, confidence })
}

async fn act(
    text: &str,
    suite: &ToolSuite,
    ctx: &CallContext,
    t: &Trajectory,
    is_last: bool,
) -> (Option<Action>, ExecStatus, String) {
    let turn = parse_assistant(text);
    let action = turn.action.as_ref().and_then(|(s, code)| Action::parse(*s, code).ok());
    let exec = match &action {
        Some(a) => execute_action(suite, a, &declared_specs(t), ctx, is_last).await,
        None => regrpo_engine::executor::no_action_observation(is_last),
    };
    (action, exec.status, exec.text)
}

/// Runs the policy on a task until it answers or the budget runs out.
pub async fn run_episode<B: Backend>(
    model: &CausalLm<B>,
    decoder: &TurnDecoder,
    suite: &ToolSuite,
    task: &Trajectory,
    root: &std::path::Path,
    cfg: &AgentConfig,
) -> Result<Episode> {
    let ctx = CallContext::new(toolworld::sandbox_of(root, task));
    // The episode opens as the trajectory's own chat does: its system prompt and task.
    let mut messages: Vec<Message> = trajectory_messages(task).into_iter().take(2).collect();
    let mut steps = Vec::new();
    let mut confidences: Vec<f64> = Vec::new();
    let mut final_answer = None;
    let mut cuts = Truncations::default();
    for i in 0..cfg.max_steps {
        let is_last = i + 1 == cfg.max_steps;
        let turn = generate(model, decoder, task, &messages, "", &mut cuts)?;
        let (mut action, mut status, mut obs) = act(&turn.text, suite, &ctx, task, is_last).await;
        let mut text = turn.text.clone();
        let mut reflected = false;
        if cfg.trigger && trigger(status, &obs, i + 1, turn.confidence, &confidences) {
            let mut with_failure = messages.clone();
            with_failure.push(Message { role: "assistant".into(), content: turn.text.clone() });
            with_failure.push(Message { role: "user".into(), content: format_observation(i, &obs) });
            let retry = generate(model, decoder, task, &with_failure, REFLECTION_START, &mut cuts)?;
            let (a2, s2, o2) = act(&retry.text, suite, &ctx, task, is_last).await;
            messages = with_failure;
            (action, status, obs, text, reflected) = (a2, s2, o2, retry.text, true);
        }
        confidences.push(turn.confidence);
        messages.push(Message { role: "assistant".into(), content: text.clone() });
        messages.push(Message { role: "user".into(), content: format_observation(i, &obs) });
        steps.push(AgentStep { text, observation: obs.clone(), status, confidence: turn.confidence, reflected });
        if let Some(a) = &action
            && a.tool() == "final_answer"
            && status.is_ok()
        {
            final_answer = Some(obs.strip_prefix("Final answer: ").unwrap_or(&obs).to_string());
            break;
        }
    }
    Ok(Episode { steps, final_answer, truncations: cuts })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trigger_fires_on_errors_emptiness_and_low_confidence() {
        assert!(trigger(ExecStatus::ToolError, "Error: x", 1, 0.9, &[]));
        assert!(trigger(ExecStatus::Empty, "", 1, 0.9, &[]));
        assert!(!trigger(ExecStatus::Ok, "fine", 1, 0.1, &[]), "no confidence test at the first step");
        assert!(trigger(ExecStatus::Ok, "fine", 2, 0.4, &[0.8]));
        assert!(!trigger(ExecStatus::Ok, "fine", 2, 0.9, &[0.8]));
    }
}
