//! One window for training and use, the scorer's self-check, and grammar-constrained decoding,
//! on a real toolworld repository run through the data engine.

use std::collections::HashMap;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use regrpo_datasets::Repository;
use regrpo_engine::{EngineConfig, ToolSuite};
use regrpo_schemas::react::{parse_assistant, trajectory_messages};
use regrpo_schemas::{Action, Rot, Trajectory};
use regrpo_trainer::CausalLmConfig;
use regrpo_trainer::data::{RotTarget, Sample, SampleKind, encode_all};
use regrpo_trainer::decode::sampling::SampleConfig;
use regrpo_trainer::decode::turn::{Turn, TurnDecoder};
use regrpo_trainer::model::CausalLm;
use regrpo_trainer::regrpo::rollout::{self, States, clean_states, failure_states};
use regrpo_trainer::text::tokenizer::ChatTokenizer;
use regrpo_trainer::text::window::{ChatWindow, WindowConfig};

/// A toolworld repository with the engine's RoT rows.
async fn world(dir: &std::path::Path, tasks: usize) -> (Repository, Vec<Trajectory>, Vec<Rot>) {
    let repo = Repository::init(dir.join("r")).await.unwrap();
    regrpo_engine::toolworld::generate_into(&repo, tasks, 11, 4, || {}).await.unwrap();
    regrpo_engine::run::run(&repo, &ToolSuite::builtin(), &EngineConfig { seed: 11, ..EngineConfig::default() }, None)
        .await
        .unwrap();
    let ts = repo.read::<Trajectory>(None).await.unwrap();
    let rots = repo.read::<Rot>(None).await.unwrap();
    (repo, ts, rots)
}

fn tokenizer(ts: &[Trajectory], rots: &[Rot]) -> ChatTokenizer {
    let texts: Vec<String> = ts
        .iter()
        .flat_map(|t| trajectory_messages(t).into_iter().map(|m| m.content))
        .chain(rots.iter().flat_map(|r| r.conversation.iter().map(|m| m.content.clone())))
        .collect();
    ChatTokenizer::train(texts.into_iter(), 600).unwrap()
}

/// The turn to decode at a state: its history, tools and action surface.
fn turn(state: &rollout::State) -> Turn<'_> {
    Turn { messages: &state.messages, specs: &state.specs, surface: state.gt_action.surface, prefix: "" }
}

fn window() -> WindowConfig {
    WindowConfig {
        max_prompt_tokens: 900,
        // A 600-token vocabulary spells RoT turns out in up to ~300 tokens.
        max_target_tokens: 360,
        system_tokens: 200,
        task_tokens: 120,
        observation_tokens: 240,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_state_is_tokenised_the_same_for_sft_and_for_inference() {
    let dir = tempfile::tempdir().unwrap();
    let (repo, ts, rots) = world(dir.path(), 14).await;
    assert!(!rots.is_empty());
    let w = ChatWindow::new(tokenizer(&ts, &rots), window()).unwrap();
    let by_id: HashMap<String, Trajectory> = ts.iter().map(|t| (t.trajectory_id.clone(), t.clone())).collect();
    // Failure states: the RoT sample's tokens before its target are the inference prompt.
    for r in &rots {
        let states = failure_states(std::slice::from_ref(r), &by_id, repo.workdir());
        let [state] = states.as_slice() else { panic!("one failure state per RoT row") };
        let sample = Sample {
            id: r.rot_id.clone(),
            trajectory_id: r.trajectory_id.clone(),
            kind: SampleKind::Rot,
            messages: r.conversation.clone(),
        };
        let (enc, cuts) = encode_all(&[sample], &w, RotTarget::Reflection).unwrap();
        assert_eq!(cuts.total(), 0, "{cuts:?}");
        let [e] = enc.as_slice() else { panic!("one sequence") };
        let (prompt, pcuts) = w.prompt(&state.messages).unwrap();
        assert_eq!(pcuts.total(), 0);
        assert_eq!(&e.ids[..prompt.len()], &prompt[..], "row {}", r.rot_id);
        assert!(!e.mask[prompt.len() - 1] && e.mask[prompt.len()], "the target starts right after the prompt");
        let target: Vec<u32> = e.ids.iter().zip(&e.mask).filter(|(_, m)| **m).map(|(i, _)| *i).collect();
        let mut want = w.tk.encode(&state.gold).unwrap();
        want.push(w.tk.im_end);
        assert_eq!(target, want, "the target is the gold turn and its end");
    }
    // Clean states: every step's prompt is a prefix of the trajectory's one sequence.
    for t in ts.iter().take(7) {
        let sample = Sample {
            id: t.trajectory_id.clone(),
            trajectory_id: t.trajectory_id.clone(),
            kind: SampleKind::Clean,
            messages: trajectory_messages(t),
        };
        let (enc, cuts) = encode_all(&[sample], &w, RotTarget::Reflection).unwrap();
        assert_eq!((enc.len(), cuts.total()), (1, 0));
        for s in clean_states(std::slice::from_ref(t), repo.workdir()) {
            let (prompt, _) = w.prompt(&s.messages).unwrap();
            assert_eq!(&enc[0].ids[..prompt.len()], &prompt[..], "{}", s.state_id);
            assert!(enc[0].mask[prompt.len()]);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gold_completions_score_one_and_repeating_the_failure_scores_zero() {
    let dir = tempfile::tempdir().unwrap();
    let (repo, ts, rots) = world(dir.path(), 21).await;
    let suite = ToolSuite::builtin();
    let states = States::of(&rots, &ts, repo.workdir());
    let (n_f, n_c) = (states.failures.len(), states.cleans.len());
    assert!(n_f > 10 && n_c > 20);
    let (kept, check) = rollout::self_check(states, &suite).await;
    assert_eq!(check.states, n_f + n_c);
    assert_eq!(check.gold_success, check.states, "every gold completion succeeds: {check:?}");
    assert_eq!(check.repeat_success, 0, "repeating a failed action never succeeds: {check:?}");
    assert_eq!((kept.failures.len(), kept.cleans.len()), (n_f, n_c));
    // A state with no sandbox cannot succeed: it is dropped, not kept to be failed forever.
    let file_step = kept.cleans.iter().find(|s| s.gt_action.tool() == "inspect_file_as_text").unwrap().clone();
    let orphan_file = rollout::State { sandbox: None, ..file_step };
    let (left, c) = rollout::self_check(States { failures: vec![], cleans: vec![orphan_file] }, &suite).await;
    assert!(left.cleans.is_empty() && c.gold_success == 0, "{c:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_completion_of_a_random_model_under_the_grammar_parses() {
    let dir = tempfile::tempdir().unwrap();
    let (repo, ts, rots) = world(dir.path(), 14).await;
    let tk = tokenizer(&ts, &rots);
    let suite = ToolSuite::builtin();
    let model =
        CausalLm::<burn::backend::NdArray<f32>>::init(&CausalLmConfig::tiny(tk.vocab_size()), 5, &Default::default());
    let mut cfg = window();
    cfg.max_target_tokens = 96;
    let decoder = TurnDecoder::new(ChatWindow::new(tk, cfg).unwrap(), true);
    let states = States::of(&rots, &ts, repo.workdir());
    let sample = SampleConfig { temperature: 1.0, top_p: 1.0, max_new_tokens: 96 };
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let mut n = 0;
    for state in states.failures.iter().take(4).chain(states.cleans.iter().take(4)) {
        let generated = decoder.generate(&model, turn(state), 6, &sample, &mut rng).unwrap();
        assert!(generated.constrained);
        for c in &generated.completions {
            n += 1;
            assert!(c.stopped && c.tokens.len() <= 96, "every completion ends inside its budget");
            let text = decoder.text(c).unwrap();
            let turn = parse_assistant(&text);
            let (surface, code) = turn.action.unwrap_or_else(|| panic!("no action in {text:?}"));
            let action = Action::parse(surface, &code).unwrap_or_else(|e| panic!("{e}: {text:?}"));
            assert!(suite.get(action.tool()).is_some(), "{text:?}");
            if let Some(r) = &turn.reflection {
                assert!(r.error_type.parse::<regrpo_schemas::ErrorType>().is_ok(), "{text:?}");
            }
            // Names and types come from the schema: whatever the tool says, it is not that the
            // call named a parameter it does not have or gave a value of the wrong type.
            let exec = regrpo_engine::executor::execute_action(
                &suite,
                &action,
                &state.specs,
                &regrpo_engine::CallContext::new(state.sandbox.clone()),
                false,
            )
            .await;
            assert!(
                !exec.text.contains("Additional properties") && !exec.text.contains("is not of type"),
                "{text:?}: {}",
                exec.text
            );
        }
    }
    assert_eq!(n, 48);

    // The probability of opening with a reflection, read from the first step, is what
    // sampling shows, and batching the prompts (left padding) does not change it.
    let cleans: Vec<_> = states.cleans.iter().take(4).collect();
    let requests: Vec<_> =
        cleans.iter().map(|s| (s.messages.as_slice(), s.specs.as_slice(), s.gt_action.surface)).collect();
    let alone = decoder.reflection_probabilities(&model, &requests, 96, 1).unwrap();
    let batched = decoder.reflection_probabilities(&model, &requests, 96, 4).unwrap();
    for (a, b) in alone.iter().zip(&batched) {
        let (a, b) = (a.unwrap(), b.unwrap());
        assert!((0.0..=1.0).contains(&a) && (a - b).abs() < 1e-4, "{a} vs {b}");
    }
    let state = cleans[0];
    let p = alone[0].unwrap();
    let generated = decoder.generate(&model, turn(state), 64, &sample, &mut rng).unwrap();
    let reflected = generated.completions.iter().filter(|c| decoder.text(c).unwrap().starts_with("Reflection:")).count()
        as f64
        / 64.0;
    // Four standard errors of a 64-sample frequency at most.
    assert!((reflected - p).abs() <= 4.0 * (p * (1.0 - p) / 64.0).sqrt().max(0.02), "sampled {reflected}, read {p}");
}
