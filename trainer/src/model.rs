//! A Qwen2 / Llama / Qwen3 decoder in Burn, generic over the backend.
//!
//! ```text
//! ids ─embed─▶ [RMSNorm → GQA attention (q/k/v, biased in Qwen2; q/k RMSNorm in Qwen3; RoPE,
//!               causal) → + RMSNorm → SwiGLU MLP → +] × L ─RMSNorm─▶ lm_head (or tied embedding) ─▶ logits
//! ```
//!
//! Parameter layout and arithmetic follow Hugging Face's `Qwen2ForCausalLM`,
//! `LlamaForCausalLM` and `Qwen3ForCausalLM`, which differ here only in the q/k/v bias and
//! Qwen3's per-head q/k norm (rotate-half RoPE with `rope_theta` and the config's scaling, each
//! key/value head shared by its group of query heads, softmax in
//! f32), so its checkpoints load unchanged (see `hf`). [`KvCache`] holds past keys and values
//! for generation. Each projection of a layer is a [`Proj`]: the linear map, and a LoRA
//! adapter beside it when one is attached (`lora`).

use burn::module::{Module, Param};
use burn::nn::{Embedding, Linear, RmsNorm};
use burn::tensor::activation::{silu, softmax};
use burn::tensor::backend::Backend;
use burn::tensor::{Bool, Int, Tensor, TensorData};

use crate::config::Qwen2Config;
pub use crate::proj::Proj;
use crate::proj::matmul_rows;

/// Grouped-query self-attention.
#[derive(Module, Debug)]
pub struct Attention<B: Backend> {
    pub q_proj: Proj<B>,
    pub k_proj: Proj<B>,
    pub v_proj: Proj<B>,
    pub o_proj: Proj<B>,
    /// Qwen3's per-head RMSNorm of queries and keys, before RoPE.
    pub q_norm: Option<RmsNorm<B>>,
    pub k_norm: Option<RmsNorm<B>>,
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub head_dim: usize,
}

/// The SwiGLU feed-forward block.
#[derive(Module, Debug)]
pub struct Mlp<B: Backend> {
    pub gate_proj: Proj<B>,
    pub up_proj: Proj<B>,
    pub down_proj: Proj<B>,
}

/// One decoder layer.
#[derive(Module, Debug)]
pub struct DecoderLayer<B: Backend> {
    pub input_layernorm: RmsNorm<B>,
    pub self_attn: Attention<B>,
    pub post_attention_layernorm: RmsNorm<B>,
    pub mlp: Mlp<B>,
}

/// The causal language model.
#[derive(Module, Debug)]
pub struct Qwen2<B: Backend> {
    pub embed_tokens: Embedding<B>,
    pub layers: Vec<DecoderLayer<B>>,
    pub norm: RmsNorm<B>,
    /// `None` when the output projection is tied to the embedding.
    pub lm_head: Option<Linear<B>>,
    /// Rotary inverse frequencies ([`Qwen2Config::rope_inv_freq`]): derived from the config, not
    /// weights, so they are not part of the record.
    #[module(skip)]
    pub inv_freq: Vec<f64>,
}

/// Past keys and values of every layer: `[batch, kv_heads, seq, head_dim]` each.
#[derive(Debug, Clone)]
pub struct KvCache<B: Backend> {
    pub layers: Vec<Option<(Tensor<B, 4>, Tensor<B, 4>)>>,
}

impl<B: Backend> KvCache<B> {
    pub fn new(layers: usize) -> Self {
        KvCache { layers: vec![None; layers] }
    }

    /// Tokens already in the cache.
    pub fn len(&self) -> usize {
        self.layers.first().and_then(|l| l.as_ref()).map_or(0, |(k, _)| k.dims()[2])
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Keeps only the given batch rows (e.g. to expand one prompt into G samples).
    pub fn select_rows(&self, rows: Tensor<B, 1, Int>) -> Self {
        KvCache {
            layers: self
                .layers
                .iter()
                .map(|l| {
                    l.as_ref().map(|(k, v)| (k.clone().select(0, rows.clone()), v.clone().select(0, rows.clone())))
                })
                .collect(),
        }
    }
}

/// Draws initial weights from a generator of its own, so initialisation depends on the seed
/// alone (not on a backend-global RNG other threads also draw from). Without a generator it
/// allocates zeros: the skeleton a checkpoint's weights are loaded into.
struct Init<'a, B: Backend> {
    rng: Option<rand_chacha::ChaCha8Rng>,
    device: &'a B::Device,
}

impl<B: Backend> Init<'_, B> {
    /// Normal(0, std) values (Box–Muller).
    fn normal(rng: &mut rand_chacha::ChaCha8Rng, n: usize, std: f32) -> Vec<f32> {
        use rand::Rng;
        (0..n)
            .map(|_| {
                let u1: f32 = rng.random::<f32>().max(1e-12);
                let u2: f32 = rng.random::<f32>();
                std * (-2.0 * u1.ln()).sqrt() * (2.0 * std::f32::consts::PI * u2).cos()
            })
            .collect()
    }

    fn matrix(&mut self, rows: usize, cols: usize, std: f32) -> Param<Tensor<B, 2>> {
        let t = match &mut self.rng {
            Some(rng) => {
                Tensor::from_data(TensorData::new(Self::normal(rng, rows * cols, std), [rows, cols]), self.device)
            }
            None => Tensor::zeros([rows, cols], self.device),
        };
        Param::from_tensor(t)
    }

    fn vector(&mut self, n: usize, value: f32) -> Param<Tensor<B, 1>> {
        Param::from_tensor(Tensor::full([n], value, self.device))
    }

    /// A linear layer `[d_in, d_out]` with N(0, 0.02) weights and zero bias, as Hugging Face
    /// initialises Qwen2.
    fn linear(&mut self, d_in: usize, d_out: usize, bias: bool) -> Linear<B> {
        Linear { weight: self.matrix(d_in, d_out, 0.02), bias: bias.then(|| self.vector(d_out, 0.0)) }
    }

    fn norm(&mut self, d: usize, eps: f64) -> RmsNorm<B> {
        RmsNorm { gamma: self.vector(d, 1.0), epsilon: eps }
    }
}

impl<B: Backend> Qwen2<B> {
    /// A model of this shape initialised from `seed` alone.
    pub fn init(c: &Qwen2Config, seed: u64, device: &B::Device) -> Self {
        use rand::SeedableRng;
        Self::build(c, Init::<B> { rng: Some(rand_chacha::ChaCha8Rng::seed_from_u64(seed)), device })
    }

    /// A model of this shape with zero weights (and unit norms), to load a checkpoint into
    /// without drawing random weights first.
    pub fn zeros(c: &Qwen2Config, device: &B::Device) -> Self {
        Self::build(c, Init::<B> { rng: None, device })
    }

    fn build(c: &Qwen2Config, mut init: Init<'_, B>) -> Self {
        let (h, hd) = (c.hidden_size, c.head_dim());
        let embed_tokens = Embedding { weight: init.matrix(c.vocab_size, h, 0.02) };
        let layers = (0..c.num_hidden_layers)
            .map(|_| DecoderLayer {
                input_layernorm: init.norm(h, c.rms_norm_eps),
                self_attn: Attention {
                    q_proj: init.linear(h, c.num_attention_heads * hd, c.qkv_bias()).into(),
                    k_proj: init.linear(h, c.num_key_value_heads * hd, c.qkv_bias()).into(),
                    v_proj: init.linear(h, c.num_key_value_heads * hd, c.qkv_bias()).into(),
                    o_proj: init.linear(c.num_attention_heads * hd, h, false).into(),
                    q_norm: c.qk_norm().then(|| init.norm(hd, c.rms_norm_eps)),
                    k_norm: c.qk_norm().then(|| init.norm(hd, c.rms_norm_eps)),
                    n_heads: c.num_attention_heads,
                    n_kv_heads: c.num_key_value_heads,
                    head_dim: hd,
                },
                post_attention_layernorm: init.norm(h, c.rms_norm_eps),
                mlp: Mlp {
                    gate_proj: init.linear(h, c.intermediate_size, false).into(),
                    up_proj: init.linear(h, c.intermediate_size, false).into(),
                    down_proj: init.linear(c.intermediate_size, h, false).into(),
                },
            })
            .collect();
        let norm = init.norm(h, c.rms_norm_eps);
        let lm_head = (!c.tie_word_embeddings).then(|| init.linear(h, c.vocab_size, false));
        Qwen2 { embed_tokens, layers, norm, lm_head, inv_freq: c.rope_inv_freq() }
    }

    pub fn vocab_size(&self) -> usize {
        self.embed_tokens.weight.dims()[0]
    }

    /// Logits `[batch, seq, vocab]` of a batch of token ids `[batch, seq]`, without cache.
    pub fn forward(&self, ids: Tensor<B, 2, Int>) -> Tensor<B, 3> {
        self.forward_cached(ids, &mut KvCache::new(self.layers.len()))
    }

    /// Logits of `ids` following the tokens already in `cache`, which is extended.
    pub fn forward_cached(&self, ids: Tensor<B, 2, Int>, cache: &mut KvCache<B>) -> Tensor<B, 3> {
        let [_, seq] = ids.dims();
        let past = cache.len();
        // Query i (absolute position past + i) may see keys 0..=past + i.
        let mask = Tensor::<B, 2, Bool>::tril_mask([seq, past + seq], past as i64, &ids.device()).unsqueeze::<4>();
        self.forward_masked(ids, cache, mask)
    }

    /// Like [`Qwen2::forward_cached`] for rows left-padded with `pads[r]` padding tokens: no
    /// real token attends to a row's padding (a padding position attends to itself only, so
    /// it stays finite). Rotary embeddings make attention depend on relative positions only,
    /// so a padded row computes what it would alone.
    pub fn forward_padded(&self, ids: Tensor<B, 2, Int>, cache: &mut KvCache<B>, pads: &[usize]) -> Tensor<B, 3> {
        let [rows, seq] = ids.dims();
        let past = cache.len();
        let total = past + seq;
        let mut masked = Vec::with_capacity(rows * seq * total);
        for r in 0..rows {
            let pad = pads.get(r).copied().unwrap_or(0);
            for i in 0..seq {
                let q = past + i;
                masked.extend((0..total).map(|k| k > q || (k < pad && k != q)));
            }
        }
        let mask = Tensor::<B, 4, Bool>::from_data(TensorData::new(masked, [rows, 1, seq, total]), &ids.device());
        self.forward_masked(ids, cache, mask)
    }

    /// The forward pass with an attention mask `[1 | rows, 1, seq, past + seq]` (true: hidden).
    fn forward_masked(&self, ids: Tensor<B, 2, Int>, cache: &mut KvCache<B>, mask: Tensor<B, 4, Bool>) -> Tensor<B, 3> {
        let device = ids.device();
        let [_, seq] = ids.dims();
        let past = cache.len();
        let head_dim = self.layers.first().map_or(0, |l| l.self_attn.head_dim);
        let rope = Rope::new(past, seq, head_dim, &self.inv_freq, &device);
        let mut x = self.embed_tokens.forward(ids);
        for (layer, slot) in self.layers.iter().zip(cache.layers.iter_mut()) {
            let h = layer.input_layernorm.forward(x.clone());
            let h = layer.self_attn.forward(h, &rope, &mask, slot);
            x = x + h;
            let h = layer.post_attention_layernorm.forward(x.clone());
            let h = layer
                .mlp
                .down_proj
                .forward(silu(layer.mlp.gate_proj.forward(h.clone())) * layer.mlp.up_proj.forward(h));
            x = x + h;
        }
        let x = self.norm.forward(x);
        match &self.lm_head {
            Some(head) => matmul_rows(x, head.weight.val()),
            None => matmul_rows(x, self.embed_tokens.weight.val().transpose()),
        }
    }
}

/// Rotary tables of positions `past..past+seq`, `[1, seq, 1, head_dim]` to broadcast over
/// `[batch, seq, heads, head_dim]`, laid out as Hugging Face does (`cat(freqs, freqs)`).
/// The first half of `sin` is negated, so `rotate_half(x) · sin` is `swap_halves(x) · sin`
/// without a negation per call; the query tables also carry the softmax scale `1/√d`, which
/// saves a pass over the queries and one over the scores.
struct Rope<B: Backend> {
    cos: Tensor<B, 4>,
    sin: Tensor<B, 4>,
    cos_q: Tensor<B, 4>,
    sin_q: Tensor<B, 4>,
}

impl<B: Backend> Rope<B> {
    fn new(past: usize, seq: usize, head_dim: usize, inv: &[f64], device: &B::Device) -> Self {
        let half = head_dim / 2;
        let mut cos = Vec::with_capacity(seq * head_dim);
        let mut sin = Vec::with_capacity(seq * head_dim);
        for p in past..past + seq {
            for j in 0..head_dim {
                let a = p as f32 * inv[j % half] as f32;
                cos.push(a.cos());
                sin.push(if j < half { -a.sin() } else { a.sin() });
            }
        }
        let scale = 1.0 / (head_dim.max(1) as f32).sqrt();
        let table = |v: Vec<f32>| Tensor::<B, 4>::from_data(TensorData::new(v, [1, seq, 1, head_dim]), device);
        Rope {
            cos_q: table(cos.iter().map(|c| c * scale).collect()),
            sin_q: table(sin.iter().map(|c| c * scale).collect()),
            cos: table(cos),
            sin: table(sin),
        }
    }
}

/// `x · cos + rotate_half(x) · sin` for `x: [batch, seq, heads, head_dim]`, contiguous as the
/// projection left it (`sin` signed, see [`Rope`]).
fn apply_rope<B: Backend>(x: Tensor<B, 4>, cos: &Tensor<B, 4>, sin: &Tensor<B, 4>) -> Tensor<B, 4> {
    let d = x.dims()[3];
    let x1 = x.clone().narrow(3, 0, d / 2);
    let x2 = x.clone().narrow(3, d / 2, d / 2);
    let swapped = Tensor::cat(vec![x2, x1], 3);
    x * cos.clone() + swapped * sin.clone()
}

impl<B: Backend> Attention<B> {
    /// Grouped-query attention without repeating keys and values: the `n_rep` query heads
    /// that share a key head are stacked along the sequence axis (`[b, kv, n_rep·s, d]`;
    /// Hugging Face orders query heads by their key head), so each key head is read by one
    /// matmul instead of being copied `n_rep` times forward and summed backward. RoPE runs on
    /// the projections' contiguous `[b, s, heads, d]` layout, before any transpose.
    fn forward(
        &self,
        x: Tensor<B, 3>,
        rope: &Rope<B>,
        mask: &Tensor<B, 4, Bool>,
        cache: &mut Option<(Tensor<B, 4>, Tensor<B, 4>)>,
    ) -> Tensor<B, 3> {
        let [b, s, _] = x.dims();
        let (nh, nkv, hd) = (self.n_heads, self.n_kv_heads, self.head_dim);
        let rep = nh / nkv;
        let norm = |t: Tensor<B, 4>, n: &Option<RmsNorm<B>>| match n {
            Some(n) => n.forward(t),
            None => t,
        };
        let q = norm(self.q_proj.forward(x.clone()).reshape([b, s, nh, hd]), &self.q_norm);
        let k = norm(self.k_proj.forward(x.clone()).reshape([b, s, nkv, hd]), &self.k_norm);
        let q = apply_rope(q, &rope.cos_q, &rope.sin_q);
        let k = apply_rope(k, &rope.cos, &rope.sin);
        let k = k.swap_dims(1, 2);
        let v = self.v_proj.forward(x).reshape([b, s, nkv, hd]).swap_dims(1, 2);
        let (k, v) = match cache.take() {
            Some((pk, pv)) => (Tensor::cat(vec![pk, k], 2), Tensor::cat(vec![pv, v], 2)),
            None => (k, v),
        };
        *cache = Some((k.clone(), v.clone()));
        let total = k.dims()[2];
        // [b, s, kv, rep, d] → [b, kv, rep, s, d] → [b, kv, rep·s, d]
        let q = q.reshape([b, s, nkv, rep, hd]).permute([0, 2, 3, 1, 4]).reshape([b, nkv, rep * s, hd]);
        let scores = q.matmul(k.swap_dims(2, 3)).reshape([b, nkv, rep, s, total]);
        let scores = scores.mask_fill(mask.clone().unsqueeze_dim::<5>(2), f32::NEG_INFINITY);
        let attn = softmax(scores, 4).reshape([b, nkv, rep * s, total]);
        let out = attn.matmul(v).reshape([b, nh, s, hd]).swap_dims(1, 2).reshape([b, s, nh * hd]);
        self.o_proj.forward(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::NdArray;

    type B = NdArray<f32>;

    #[test]
    fn cached_decoding_matches_the_full_forward() {
        let device = Default::default();
        let model = Qwen2::<B>::init(&Qwen2Config::tiny(50), 1, &device);
        let ids: Vec<i64> = vec![3, 7, 11, 2, 9, 4, 1];
        let full = model.forward(Tensor::<B, 2, Int>::from_data(TensorData::new(ids.clone(), [1, 7]), &device));
        let mut cache = KvCache::new(2);
        let head =
            model.forward_cached(Tensor::from_data(TensorData::new(ids[..4].to_vec(), [1, 4]), &device), &mut cache);
        let mut last = head.narrow(1, 3, 1);
        for (i, id) in ids[4..].iter().enumerate() {
            last = model.forward_cached(Tensor::from_data(TensorData::new(vec![*id], [1, 1]), &device), &mut cache);
            let want = full.clone().narrow(1, 4 + i, 1);
            let diff = (last.clone() - want).abs().max().into_scalar();
            assert!(diff < 1e-5, "position {}: {diff}", 4 + i);
        }
        assert_eq!(cache.len(), 7);
        assert_eq!(last.dims(), [1, 1, 50]);
    }

    #[test]
    fn a_left_padded_row_computes_what_it_would_alone() {
        let device = Default::default();
        let model = Qwen2::<B>::init(&Qwen2Config::tiny(50), 2, &device);
        let (a, b): (Vec<i64>, Vec<i64>) = (vec![3, 7, 11, 2, 9], vec![4, 8]);
        let alone = |ids: &[i64]| {
            let mut cache = KvCache::new(2);
            let t = Tensor::<B, 2, Int>::from_data(TensorData::new(ids.to_vec(), [1, ids.len()]), &device);
            let prefill = model.forward_cached(t, &mut cache);
            let next = Tensor::<B, 2, Int>::from_data(TensorData::new(vec![5i64], [1, 1]), &device);
            (prefill.narrow(1, ids.len() - 1, 1), model.forward_cached(next, &mut cache))
        };
        let mut cache = KvCache::new(2);
        let ids: Vec<i64> = a.iter().copied().chain([0, 0, 0]).chain(b.iter().copied()).collect();
        let pads = [0, 3];
        let t = Tensor::<B, 2, Int>::from_data(TensorData::new(ids, [2, 5]), &device);
        let prefill = model.forward_padded(t, &mut cache, &pads);
        let next = Tensor::<B, 2, Int>::from_data(TensorData::new(vec![5i64, 5], [2, 1]), &device);
        let step = model.forward_padded(next, &mut cache, &pads);
        for (row, ids) in [(0, &a), (1, &b)] {
            let (p, s) = alone(ids);
            let diff = |x: Tensor<B, 3>, y: Tensor<B, 3>| (x - y).abs().max().into_scalar();
            assert!(diff(prefill.clone().narrow(0, row, 1).narrow(1, 4, 1), p) < 1e-5, "row {row} prefill");
            assert!(diff(step.clone().narrow(0, row, 1), s) < 1e-5, "row {row} next token");
        }
    }
}
