//! Supervised fine-tuning, written once for any backend.
//!
//! - AdamW with PyTorch's defaults stated explicitly (β 0.9/0.999, ε 1e-8, weight decay 0.01;
//!   Burn's own defaults are ε 1e-5 and weight decay 1e-4),
//! - linear warm-up then cosine decay to `min_lr_ratio · lr`,
//! - **global-norm** gradient clipping (Burn clips per tensor, so it is done here),
//! - gradient accumulation over micro-batches,
//! - the loss masked to target tokens (see `data`),
//! - evaluation on the held-out split, checkpoints (Burn records + optimizer state) and an exact
//!   resume: the next step after a resume has the loss the uninterrupted run had.

use std::path::Path;
use std::time::Instant;

use burn::module::{AutodiffModule, ModuleVisitor, Param};
use burn::optim::{AdamWConfig, GradientsAccumulator, GradientsParams, Optimizer};
use burn::tensor::activation::{log_softmax, softmax};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{ElementConversion, IndexingUpdateOp, Int, Tensor, TensorData};
use serde::{Deserialize, Serialize};

use crate::checkpoint::training::{self, latest_checkpoint};
use crate::data::batch::{Batcher, ROT_SEED};
use crate::data::stream::{InMemory, Source};
use crate::data::{Batch, collate};
use crate::error::{Error, Result};
use crate::model::CausalLm;
use crate::text::window::Encoded;

/// Hyper-parameters of an SFT run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SftConfig {
    pub steps: u64,
    pub batch_size: usize,
    pub grad_accum: usize,
    pub lr: f64,
    pub warmup_steps: u64,
    pub min_lr_ratio: f64,
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    pub weight_decay: f32,
    pub max_grad_norm: f64,
    pub eval_every: u64,
    pub eval_batches: usize,
    pub checkpoint_every: u64,
    pub seed: u64,
}

impl Default for SftConfig {
    fn default() -> Self {
        SftConfig {
            steps: 200,
            batch_size: 4,
            grad_accum: 1,
            lr: 3e-3,
            warmup_steps: 10,
            min_lr_ratio: 0.1,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.01,
            max_grad_norm: 1.0,
            eval_every: 50,
            eval_batches: 4,
            checkpoint_every: 100,
            seed: 0,
        }
    }
}

impl SftConfig {
    /// Learning rate at `step` (0-based): warm-up, then cosine to `min_lr_ratio · lr`.
    pub fn lr_at(&self, step: u64) -> f64 {
        if step < self.warmup_steps {
            return self.lr * (step + 1) as f64 / self.warmup_steps as f64;
        }
        let span = self.steps.saturating_sub(self.warmup_steps).max(1) as f64;
        let progress = ((step - self.warmup_steps) as f64 / span).min(1.0);
        let floor = self.lr * self.min_lr_ratio;
        floor + (self.lr - floor) * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos())
    }
}

/// Masked next-token cross-entropy: mean over target tokens of `-log p(target)`.
pub fn masked_loss<B: Backend>(
    logits: Tensor<B, 3>,
    targets: Tensor<B, 2, Int>,
    weights: Tensor<B, 2>,
) -> Tensor<B, 1> {
    let total = weights.clone().sum().clamp_min(1.0);
    masked_nll_sum(logits, targets, weights) / total
}

/// Sum over target tokens of `-log p(target)` (for a mean over several padded parts).
pub fn masked_nll_sum<B: Backend>(
    logits: Tensor<B, 3>,
    targets: Tensor<B, 2, Int>,
    weights: Tensor<B, 2>,
) -> Tensor<B, 1> {
    let logp = log_softmax(logits, 2);
    let picked = logp.gather(2, targets.unsqueeze_dim::<3>(2)).squeeze_dim::<2>(2);
    (picked * weights).sum().neg()
}

/// [`masked_nll_sum`] for training: the same value, and the same gradient
/// `w · (softmax(logits) − onehot(target))`, computed outside the autodiff graph.
///
/// Written with tensor ops, `log_softmax` + `gather` records eleven autodiff nodes over the
/// `[batch, seq, vocab]` logits — the largest tensor of a step — and walks them back one by
/// one. Here the softmax is one (fused, on Flex) pass on the inner backend, the gradient is
/// formed from it once, and the graph holds a single product `Σ logits · g` whose gradient is
/// `g`; the value added to it is the exact negative log-likelihood. `p(target)` is clamped to
/// the smallest normal f32, so a token's loss reads at most 87.3 (its gradient is exact).
pub fn masked_nll_sum_fused<B: AutodiffBackend>(
    logits: Tensor<B, 3>,
    targets: Tensor<B, 2, Int>,
    weights: Tensor<B, 2>,
) -> Tensor<B, 1> {
    let t = targets.inner().unsqueeze_dim::<3>(2);
    let w = weights.inner().unsqueeze_dim::<3>(2);
    let probs = softmax(logits.clone().inner(), 2);
    let picked = probs.clone().gather(2, t.clone());
    let nll = (picked.clamp_min(f32::MIN_POSITIVE).log() * w.clone()).sum().neg();
    let grad = (probs * w.clone()).scatter(2, t, w.neg(), IndexingUpdateOp::Add);
    let surrogate = (logits * Tensor::from_inner(grad)).sum();
    surrogate.clone() - surrogate.detach() + Tensor::from_inner(nll)
}

/// The tensors of a batch on a device.
pub fn batch_tensors<B: Backend>(
    b: &Batch,
    device: &B::Device,
) -> (Tensor<B, 2, Int>, Tensor<B, 2, Int>, Tensor<B, 2>) {
    let shape = [b.batch, b.len];
    (
        Tensor::from_data(TensorData::new(b.ids.clone(), shape), device),
        Tensor::from_data(TensorData::new(b.targets.clone(), shape), device),
        Tensor::from_data(TensorData::new(b.weights.clone(), shape), device),
    )
}

/// Sum of squares of every gradient.
struct GradNorm<'a> {
    grads: &'a GradientsParams,
    sq: f64,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for GradNorm<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        if let Some(g) = self.grads.get::<B::InnerBackend, D>(param.id) {
            self.sq += g.powf_scalar(2.0).sum().into_scalar().elem::<f64>();
        }
    }
}

/// Multiplies every gradient by `scale`.
struct GradScale<'a> {
    grads: &'a mut GradientsParams,
    scale: f64,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for GradScale<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        if let Some(g) = self.grads.remove::<B::InnerBackend, D>(param.id) {
            self.grads.register::<B::InnerBackend, D>(param.id, g.mul_scalar(self.scale));
        }
    }
}

/// Clips gradients to a global L2 norm; returns the norm before clipping.
pub fn clip_global_norm<B: AutodiffBackend, M: AutodiffModule<B>>(
    module: &M,
    grads: &mut GradientsParams,
    max_norm: f64,
) -> f64 {
    let mut n = GradNorm { grads, sq: 0.0 };
    module.visit(&mut n);
    let norm = n.sq.sqrt();
    if max_norm > 0.0 && norm > max_norm {
        module.visit(&mut GradScale { grads, scale: max_norm / (norm + 1e-6) });
    }
    norm
}

/// One step's figures.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepLog {
    pub step: u64,
    pub loss: f64,
    pub lr: f64,
    pub grad_norm: f64,
    pub tokens_per_s: f64,
    pub eval_loss: Option<f64>,
}

/// What is saved beside a checkpoint's records.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct CheckpointState {
    step: u64,
    config: SftConfig,
}

/// Mean masked loss over the first `batches` batches of `eval`.
pub fn evaluate<B: Backend>(
    model: &CausalLm<B>,
    eval: &[Encoded],
    batch_size: usize,
    batches: usize,
    pad: u32,
    device: &B::Device,
) -> Option<f64> {
    if eval.is_empty() {
        return None;
    }
    let mut total = 0.0;
    let mut n = 0;
    for chunk in eval.chunks(batch_size).take(batches) {
        let items: Vec<&Encoded> = chunk.iter().collect();
        let b = collate(&items, pad);
        if b.target_tokens == 0 {
            continue;
        }
        let (ids, targets, weights) = batch_tensors::<B>(&b, device);
        total += masked_loss(model.forward(ids), targets, weights).into_scalar().elem::<f64>();
        n += 1;
    }
    (n > 0).then(|| total / n as f64)
}

/// Where a run's training sequences come from (streamed from a snapshot, or in memory) and
/// how many of each kind make a batch.
pub struct TrainSet {
    pub clean: Box<dyn Source>,
    /// Seeded apart from the clean stream (`Batcher::spawn` shows how).
    pub rot: Box<dyn Source>,
    /// Clean and RoT sequences per micro-batch.
    pub quotas: (usize, usize),
}

impl TrainSet {
    /// Sequences held in memory, seeded as a run with `seed` seeds them.
    pub fn in_memory(clean: Vec<Encoded>, rot: Vec<Encoded>, quotas: (usize, usize), seed: u64) -> Result<TrainSet> {
        let has_target = |v: &[Encoded], quota: usize| quota > 0 && v.iter().any(|e| e.mask.iter().any(|m| *m));
        if !has_target(&clean, quotas.0) && !has_target(&rot, quotas.1) {
            return Err(Error::NoData(
                "no sample has a target token (check the window budgets and the RoT target policy)".into(),
            ));
        }
        Ok(TrainSet {
            clean: Box::new(InMemory::new(clean, seed)),
            rot: Box::new(InMemory::new(rot, seed ^ ROT_SEED)),
            quotas,
        })
    }
}

/// The run folder a training loop keeps its checkpoints in (`dir/checkpoints/`), and whether it
/// continues from the latest of them.
#[derive(Debug, Clone, Copy)]
pub struct RunFolder<'a> {
    pub dir: &'a Path,
    pub resume: bool,
}

/// Trains `model` for `cfg.steps` optimizer steps (from the latest checkpoint when `run.resume`),
/// calling `on_step` after each. Checkpoints go to `run.dir/checkpoints/`.
pub fn train<B: AutodiffBackend>(
    mut model: CausalLm<B>,
    train: TrainSet,
    eval: &[Encoded],
    pad: u32,
    cfg: &SftConfig,
    run: RunFolder<'_>,
    mut on_step: impl FnMut(&StepLog),
) -> Result<(CausalLm<B>, Vec<StepLog>)> {
    let RunFolder { dir: run, resume } = run;
    let device = model.embed_tokens.weight.device();
    let adamw = AdamWConfig::new()
        .with_beta_1(cfg.beta1)
        .with_beta_2(cfg.beta2)
        .with_epsilon(cfg.eps)
        .with_weight_decay(cfg.weight_decay);
    let mut optim = adamw.init::<B, CausalLm<B>>();
    let mut start = 0;
    if resume && let Some((step, dir)) = latest_checkpoint(run) {
        (model, optim) = training::load(&dir, model, optim, &device)?;
        start = step;
    }
    let batcher =
        Batcher::spawn_sources(train.clean, train.rot, train.quotas, cfg.seed, start * cfg.grad_accum as u64, pad);
    let mut logs = Vec::new();
    for step in start..cfg.steps {
        let t0 = Instant::now();
        let mut acc = GradientsAccumulator::<CausalLm<B>>::new();
        let mut loss_sum = 0.0;
        let mut tokens = 0;
        for _ in 0..cfg.grad_accum {
            // One mean over the batch's target tokens, whichever part they are in.
            let parts = batcher.next()?;
            let targets_n = parts.iter().map(|b| b.target_tokens).sum::<usize>().max(1) as f64;
            for b in parts {
                tokens += b.tokens;
                let (ids, targets, weights) = batch_tensors::<B>(&b, &device);
                let loss = masked_nll_sum_fused(model.forward(ids), targets, weights)
                    .div_scalar(targets_n * cfg.grad_accum as f64);
                loss_sum += loss.clone().into_scalar().elem::<f64>();
                let grads = GradientsParams::from_grads(loss.backward(), &model);
                acc.accumulate(&model, grads);
            }
        }
        let mut grads = acc.grads();
        let grad_norm = clip_global_norm(&model, &mut grads, cfg.max_grad_norm);
        let lr = cfg.lr_at(step);
        model = optim.step(lr, model, grads);
        let done = step + 1;
        let eval_loss = if cfg.eval_every > 0 && (done % cfg.eval_every == 0 || done == cfg.steps) {
            evaluate(&model.valid(), eval, cfg.batch_size, cfg.eval_batches, pad, &device)
        } else {
            None
        };
        let log = StepLog {
            step: done,
            loss: loss_sum,
            lr,
            grad_norm,
            tokens_per_s: tokens as f64 / t0.elapsed().as_secs_f64().max(1e-9),
            eval_loss,
        };
        on_step(&log);
        logs.push(log);
        if cfg.checkpoint_every > 0 && (done % cfg.checkpoint_every == 0 || done == cfg.steps) {
            training::save(run, done, &model, &optim, &CheckpointState { step: done, config: cfg.clone() })?;
        }
    }
    Ok((model, logs))
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::{Autodiff, NdArray};

    type B = Autodiff<NdArray<f32>>;

    #[test]
    fn schedule_warms_up_then_decays_to_the_floor() {
        let c = SftConfig { steps: 100, warmup_steps: 10, lr: 1.0, min_lr_ratio: 0.1, ..Default::default() };
        assert!((c.lr_at(0) - 0.1).abs() < 1e-12);
        assert!((c.lr_at(9) - 1.0).abs() < 1e-12);
        assert!((c.lr_at(10) - 1.0).abs() < 1e-12);
        assert!((c.lr_at(55) - 0.55).abs() < 1e-12);
        assert!((c.lr_at(100) - 0.1).abs() < 1e-12);
    }

    #[test]
    fn masked_positions_get_zero_loss_and_zero_gradient() {
        let device = Default::default();
        let logits = Tensor::<B, 3>::from_data(
            TensorData::new((0..2 * 3 * 5).map(|i| ((i * 7) % 11) as f32 / 5.0).collect::<Vec<_>>(), [2, 3, 5]),
            &device,
        )
        .require_grad();
        let targets = Tensor::<B, 2, Int>::from_data(TensorData::new(vec![1i64, 2, 3, 4, 0, 1], [2, 3]), &device);
        let w = vec![0.0f32, 1.0, 0.0, 1.0, 0.0, 0.0];
        let weights = Tensor::<B, 2>::from_data(TensorData::new(w.clone(), [2, 3]), &device);
        let loss = masked_loss(logits.clone(), targets.clone(), weights);
        // Changing the logits of masked positions changes nothing.
        let other = logits.clone().inner().mul_scalar(1.0);
        let bumped: Vec<f32> = other
            .into_data()
            .to_vec::<f32>()
            .unwrap()
            .iter()
            .enumerate()
            .map(|(i, v)| if w[i / 5] == 0.0 { v + 9.0 } else { *v })
            .collect();
        let bumped = Tensor::<NdArray<f32>, 3>::from_data(TensorData::new(bumped, [2, 3, 5]), &device);
        let l2 = masked_loss(bumped, targets.inner(), Tensor::from_data(TensorData::new(w.clone(), [2, 3]), &device));
        assert!((loss.clone().into_scalar() - l2.into_scalar()).abs() < 1e-6);
        let grads = loss.backward();
        let g: Vec<f32> = logits.grad(&grads).unwrap().into_data().to_vec().unwrap();
        for (i, v) in g.iter().enumerate() {
            if w[i / 5] == 0.0 {
                assert_eq!(*v, 0.0, "gradient at masked position {}", i / 5);
            }
        }
        assert!(g.iter().any(|v| *v != 0.0));
    }

    #[test]
    fn the_fused_loss_has_the_value_and_gradient_of_the_plain_one() {
        let device = Default::default();
        let (b, s, v) = (2, 4, 7);
        let data: Vec<f32> = (0..b * s * v).map(|i| ((i * 13) % 17) as f32 / 3.0 - 2.5).collect();
        let targets = Tensor::<B, 2, Int>::from_data(TensorData::new(vec![1i64, 6, 3, 0, 2, 2, 5, 4], [b, s]), &device);
        let w = vec![1.0f32, 0.0, 1.0, 1.0, 0.5, 1.0, 0.0, 1.0];
        let run = |fused: bool| {
            let logits = Tensor::<B, 3>::from_data(TensorData::new(data.clone(), [b, s, v]), &device).require_grad();
            let weights = Tensor::<B, 2>::from_data(TensorData::new(w.clone(), [b, s]), &device);
            let loss = if fused {
                masked_nll_sum_fused(logits.clone(), targets.clone(), weights)
            } else {
                masked_nll_sum(logits.clone(), targets.clone(), weights)
            };
            let value = loss.clone().into_scalar();
            let g: Vec<f32> = logits.grad(&loss.backward()).unwrap().into_data().to_vec().unwrap();
            (value, g)
        };
        let (plain, g_plain) = run(false);
        let (fused, g_fused) = run(true);
        assert!((plain - fused).abs() < 1e-5, "loss {plain} vs {fused}");
        for (i, (a, b)) in g_plain.iter().zip(&g_fused).enumerate() {
            assert!((a - b).abs() < 1e-6, "gradient {i}: {a} vs {b}");
        }
        assert!(g_fused.iter().any(|g| *g != 0.0));
    }
}
