//! The update's scoring: the log-probabilities of groups' completions over their shared prompts,
//! as the sampler's grammar-renormalised distribution gave them.

use burn::tensor::activation::log_softmax;
use burn::tensor::backend::Backend;
use burn::tensor::{Bool, Int, Tensor, TensorData};

use crate::decode::sampling::Completion;
use crate::model::CausalLm;
use crate::regrpo::objective::gather_tokens;

/// Added to the logit of a token the grammar forbade: large enough that its probability is 0
/// in f32, finite so that no gradient becomes NaN.
const FORBIDDEN: f32 = -1e9;

/// Log-probabilities of groups' completions, all rows of all groups in one forward pass.
pub(super) struct TokenLogp<B: Backend> {
    /// Per token `[rows, len]`.
    pub(super) lp: Tensor<B, 2>,
    /// Full log-probabilities `[rows, len, vocab]` (for [`objective::KlMode::Exact`]).
    pub(super) full: Option<Tensor<B, 3>>,
    /// 1 on generated tokens the grammar did not force, 0 on forced tokens and padding.
    pub(super) mask: Tensor<B, 2>,
}

/// The log-probabilities of each group's completions given its prompt: `groups[k]` is a prompt
/// and its `g` completions (every group the same size). The prompts are run once each
/// ([`CausalLm::prefix`]) and the completions attend to them in place ([`CausalLm::rows`]); logits
/// are computed at completion positions only.
///
/// Where the grammar constrained a position, the distribution is the one that sampled there:
/// the model's, renormalised over the allowed tokens (the others get a large negative logit).
/// Scoring the unconstrained π instead would add `∇ log Σ_allowed π` to each token's gradient —
/// pushing mass between allowed and forbidden tokens, which changes nothing the grammar lets
/// through — and would make the k1 estimate of KL biased (log π ≠ log q).
pub(super) fn completion_logp<B: Backend>(
    model: &CausalLm<B>,
    groups: &[(&[u32], Vec<&Completion>)],
    pad: u32,
    keep_full: bool,
) -> TokenLogp<B> {
    let device = model.embed_tokens.weight.device();
    let s = groups.len();
    let g = groups.first().map_or(0, |(_, c)| c.len());
    let rows = s * g;
    let p = groups.iter().map(|(prompt, _)| prompt.len()).max().unwrap_or(1).max(1);
    let len = groups.iter().flat_map(|(_, cs)| cs.iter().map(|c| c.tokens.len())).max().unwrap_or(1).max(1);
    let pads: Vec<usize> = groups.iter().map(|(prompt, _)| p - prompt.len()).collect();
    let prompt_ids: Vec<i64> = groups
        .iter()
        .flat_map(|(prompt, _)| {
            std::iter::repeat_n(i64::from(pad), p - prompt.len()).chain(prompt.iter().map(|t| i64::from(*t)))
        })
        .collect();
    let mut ids = Vec::with_capacity(rows * len);
    let mut mask = Vec::with_capacity(rows * len);
    for c in groups.iter().flat_map(|(_, cs)| cs) {
        for j in 0..len {
            let tok = c.tokens.get(j).copied();
            ids.push(i64::from(tok.unwrap_or(pad)));
            let scored = tok.is_some() && !c.forced.get(j).copied().unwrap_or(false);
            mask.push(if scored { 1.0f32 } else { 0.0 });
        }
    }
    let (last, prefix) = model.prefix(Tensor::from_data(TensorData::new(prompt_ids, [s, p]), &device), &pads);
    let completions = Tensor::<B, 2, Int>::from_data(TensorData::new(ids.clone(), [rows, len]), &device);
    // Token j is predicted at position j − 1: the prompt's last position for the first token.
    let width = last.dims()[1];
    let owner: Vec<i64> = (0..rows).map(|r| (r / g) as i64).collect();
    let first = last.select(0, Tensor::from_data(TensorData::new(owner, [rows]), &device)).reshape([rows, 1, width]);
    let hidden = if len > 1 {
        let h = model.rows(completions.clone().narrow(1, 0, len - 1), &prefix, g, None);
        Tensor::cat(vec![first, h], 1)
    } else {
        first
    };
    let mut logits = model.head(hidden);
    let constrained = groups.iter().flat_map(|(_, cs)| cs).any(|c| c.allowed.iter().any(Option::is_some));
    if constrained {
        let vocab = logits.dims()[2];
        let mut hide = vec![false; rows * len * vocab];
        for (i, c) in groups.iter().flat_map(|(_, cs)| cs).enumerate() {
            for (j, allowed) in c.allowed.iter().enumerate() {
                if let Some(allowed) = allowed {
                    let row = &mut hide[(i * len + j) * vocab..(i * len + j + 1) * vocab];
                    row.fill(true);
                    for t in allowed.iter() {
                        row[t as usize] = false;
                    }
                }
            }
        }
        let hide = Tensor::<B, 3, Bool>::from_data(TensorData::new(hide, [rows, len, vocab]), &device);
        logits = logits.mask_fill(hide, FORBIDDEN);
    }
    let full = log_softmax(logits, 2);
    let lp = gather_tokens(full.clone(), completions);
    TokenLogp {
        lp,
        full: keep_full.then_some(full),
        mask: Tensor::from_data(TensorData::new(mask, [rows, len]), &device),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::{Autodiff, NdArray};
    use burn::module::AutodiffModule;
    use burn::tensor::backend::AutodiffBackend;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;
    use regrpo_schemas::action::Surface;

    use crate::decode::grammar::{Grammar, Masks, TokenTrie};
    use crate::decode::sampling::{Constraint, Request, SampleConfig, sample};
    use crate::model::config::CausalLmConfig;
    use crate::regrpo::objective::{self, LossConfig};

    type B = Autodiff<NdArray<f32>>;

    /// Today's scoring of one group: a full forward pass of every row's prompt + completion,
    /// logits at every position, the grammar's mask added over the vocabulary.
    fn reference_logp(
        model: &CausalLm<B>,
        prompt: &[u32],
        cs: &[&Completion],
        pad: u32,
    ) -> (Tensor<B, 2>, Tensor<B, 2>) {
        let device = Default::default();
        let (g, len) = (cs.len(), cs.iter().map(|c| c.tokens.len()).max().unwrap());
        let total = prompt.len() + len;
        let (mut ids, mut targets, mut mask) = (vec![], vec![], vec![]);
        for c in cs {
            ids.extend(prompt.iter().map(|t| i64::from(*t)));
            for j in 0..len {
                let tok = c.tokens.get(j).copied();
                ids.push(i64::from(tok.unwrap_or(pad)));
                targets.push(i64::from(tok.unwrap_or(pad)));
                mask.push(if tok.is_some() && !c.forced[j] { 1.0f32 } else { 0.0 });
            }
        }
        let ids = Tensor::<B, 2, Int>::from_data(TensorData::new(ids, [g, total]), &device);
        let mut logits = model.forward(ids).narrow(1, prompt.len() - 1, len);
        let vocab = logits.dims()[2];
        let mut add = vec![0.0f32; g * len * vocab];
        for (i, c) in cs.iter().enumerate() {
            for (j, allowed) in c.allowed.iter().enumerate() {
                if let Some(allowed) = allowed {
                    let row = &mut add[(i * len + j) * vocab..(i * len + j + 1) * vocab];
                    row.fill(FORBIDDEN);
                    for t in allowed.iter() {
                        row[t as usize] = 0.0;
                    }
                }
            }
        }
        logits = logits + Tensor::<B, 3>::from_data(TensorData::new(add, [g, len, vocab]), &device);
        let targets = Tensor::<B, 2, Int>::from_data(TensorData::new(targets, [g, len]), &device);
        (gather_tokens(log_softmax(logits, 2), targets), Tensor::from_data(TensorData::new(mask, [g, len]), &device))
    }

    /// Two groups of constrained completions of prompts of different lengths: the batched
    /// scoring over shared prompts gives today's log-probabilities, loss and gradients.
    #[test]
    fn the_batched_update_computes_todays_loss_and_gradients() {
        let device = Default::default();
        let mut vocab: Vec<Option<Vec<u8>>> = (0..=255u8).map(|b| Some(vec![b])).collect();
        vocab.push(Some(b"Code:\n```py\n".to_vec()));
        vocab.extend([None, None]);
        let (stop, pad) = (vocab.len() as u32 - 2, vocab.len() as u32 - 1);
        let model = CausalLm::<B>::init(&CausalLmConfig::tiny(vocab.len()), 5, &device);
        let grammar = Grammar::new(Surface::Python, &regrpo_engine::ToolSuite::builtin().specs());
        let (trie, masks) = (TokenTrie::new(&vocab), Masks::default());
        let constraint = Some(Constraint { grammar: &grammar, masks: &masks, trie: &trie, start: grammar.start() });
        let cfg = SampleConfig { temperature: 1.0, top_p: 1.0, max_new_tokens: 40 };
        let prompts: [Vec<u32>; 2] = [vec![3, 4, 5, 6, 7, 8], vec![9, 10]];
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let sampled: Vec<Vec<Completion>> = prompts
            .iter()
            .map(|p| sample(&model.valid(), Request { prompt: p, constraint }, 3, &cfg, stop, pad, &mut rng))
            .collect();
        let adv = [vec![0.5, -0.25, -0.25], vec![1.0, 0.0, -1.0]];
        for token_level in [false, true] {
            let lc = LossConfig { beta: 0.0, token_level, ..Default::default() };
            let groups: Vec<(&[u32], Vec<&Completion>)> =
                prompts.iter().zip(&sampled).map(|(p, cs)| (p.as_slice(), cs.iter().collect())).collect();
            let x = completion_logp(&model, &groups, pad, false);
            let mut new_loss = None;
            let mut old_loss = None;
            for (k, (prompt, cs)) in groups.iter().enumerate() {
                let lp = x.lp.clone().narrow(0, 3 * k, 3);
                let (want_lp, want_mask) = reference_logp(&model, prompt, cs, pad);
                let len = want_lp.dims()[1];
                let got: Vec<f32> = lp.clone().narrow(1, 0, len).inner().into_data().to_vec().unwrap();
                let want: Vec<f32> = want_lp.clone().inner().into_data().to_vec().unwrap();
                let mask: Vec<f32> = want_mask.clone().inner().into_data().to_vec().unwrap();
                for ((a, b), m) in got.iter().zip(&want).zip(&mask) {
                    assert!(*m == 0.0 || (a - b).abs() < 1e-4, "group {k}: {a} vs {b}");
                }
                let loss = |lp: Tensor<B, 2>, mask: Tensor<B, 2>| {
                    let inputs = objective::LossInputs {
                        kl: objective::Kl::new(lc.kl, lp.clone().detach(), None).unwrap(),
                        old_lp: lp.clone().detach(),
                        mask,
                        lp,
                    };
                    objective::loss(inputs, &adv[k], &lc).div_scalar(2.0)
                };
                let n = loss(lp, x.mask.clone().narrow(0, 3 * k, 3));
                let o = loss(want_lp, want_mask);
                new_loss = Some(match new_loss {
                    Some(s) => s + n,
                    None => n,
                });
                old_loss = Some(match old_loss {
                    Some(s) => s + o,
                    None => o,
                });
            }
            let (new_loss, old_loss) = (new_loss.unwrap(), old_loss.unwrap());
            let (a, b) = (new_loss.clone().into_scalar(), old_loss.clone().into_scalar());
            assert!((a - b).abs() < 1e-4 * b.abs().max(1.0), "loss {a} vs {b}");
            let (gn, go) = (new_loss.backward(), old_loss.backward());
            let grads = |g: &<B as AutodiffBackend>::Gradients| {
                let flat = |w: Tensor<B, 2>| w.grad(g).unwrap().into_data().to_vec::<f32>().unwrap();
                let mut v = flat(model.embed_tokens.weight.val());
                v.extend(flat(model.layers[0].self_attn.q_proj.base.weight.val()));
                v.extend(flat(model.layers[1].mlp.down_proj.base.weight.val()));
                v
            };
            let (gn, go) = (grads(&gn), grads(&go));
            let scale = go.iter().fold(0.0f32, |m, x| m.max(x.abs()));
            assert!(scale > 0.0);
            for (x, y) in gn.iter().zip(&go) {
                assert!((x - y).abs() < 1e-4 * scale, "gradient {x} vs {y} (scale {scale})");
            }
        }
    }
}
