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
//! f32), so its checkpoints load unchanged (see [`crate::checkpoint::hf`]). [`KvCache`] holds past keys and values
//! for generation. Each projection of a layer is a [`Proj`]: the linear map, and a LoRA
//! adapter beside it when one is attached ([`lora`]).
//!
//! This room holds the arithmetic only: no file is read or written here but `config.json`
//! ([`CausalLmConfig`]); checkpoints are [`crate::checkpoint`]'s.

use burn::module::{Module, Param};
use burn::nn::{Embedding, Linear, RmsNorm};
use burn::tensor::activation::{silu, softmax};
use burn::tensor::backend::Backend;
use burn::tensor::{Bool, Int, Tensor, TensorData};

pub mod backend;
pub mod config;
pub mod lora;
pub mod proj;

pub use config::{CausalLmConfig, RopeScaling};
pub use proj::Proj;
use proj::matmul_rows;

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
pub struct CausalLm<B: Backend> {
    pub embed_tokens: Embedding<B>,
    pub layers: Vec<DecoderLayer<B>>,
    pub norm: RmsNorm<B>,
    /// `None` when the output projection is tied to the embedding.
    pub lm_head: Option<Linear<B>>,
    /// Rotary inverse frequencies ([`CausalLmConfig::rope_inv_freq`]): derived from the config, not
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
}

impl<B: Backend> Mlp<B> {
    /// SwiGLU: `down(silu(gate(x)) · up(x))`.
    fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        self.down_proj.forward(silu(self.gate_proj.forward(x.clone())) * self.up_proj.forward(x))
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

impl<B: Backend> CausalLm<B> {
    /// A model of this shape initialised from `seed` alone.
    pub fn init(c: &CausalLmConfig, seed: u64, device: &B::Device) -> Self {
        use rand::SeedableRng;
        Self::build(c, Init::<B> { rng: Some(rand_chacha::ChaCha8Rng::seed_from_u64(seed)), device })
    }

    /// A model of this shape with zero weights (and unit norms), to load a checkpoint into
    /// without drawing random weights first.
    pub fn zeros(c: &CausalLmConfig, device: &B::Device) -> Self {
        Self::build(c, Init::<B> { rng: None, device })
    }

    fn build(c: &CausalLmConfig, mut init: Init<'_, B>) -> Self {
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
        CausalLm { embed_tokens, layers, norm, lm_head, inv_freq: c.rope_inv_freq() }
    }

    /// Key/value heads, and query heads per key/value head.
    fn kv_groups(&self) -> (usize, usize) {
        self.layers.first().map_or((1, 1), |l| (l.self_attn.n_kv_heads, l.self_attn.n_heads / l.self_attn.n_kv_heads))
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

    /// The forward pass with an attention mask `[1 | rows, 1, seq, past + seq]` (true: hidden).
    fn forward_masked(&self, ids: Tensor<B, 2, Int>, cache: &mut KvCache<B>, mask: Tensor<B, 4, Bool>) -> Tensor<B, 3> {
        self.head(self.hidden_masked(ids, cache, mask))
    }

    /// The output projection: logits `[batch, seq, vocab]` of final hidden states `[batch, seq, hidden]`.
    pub fn head(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        match &self.lm_head {
            Some(head) => matmul_rows(x, head.weight.val()),
            None => matmul_rows(x, self.embed_tokens.weight.val().transpose()),
        }
    }

    /// The final hidden states (after the last norm) of [`CausalLm::forward_masked`].
    fn hidden_masked(&self, ids: Tensor<B, 2, Int>, cache: &mut KvCache<B>, mask: Tensor<B, 4, Bool>) -> Tensor<B, 3> {
        let device = ids.device();
        let [_, seq] = ids.dims();
        let past = cache.len();
        let head_dim = self.layers.first().map_or(0, |l| l.self_attn.head_dim);
        let rope = Rope::new(past, seq, head_dim, &self.inv_freq, &device);
        let (nkv, rep) = self.kv_groups();
        // The mask at the scores' full shape [b, kv, rep, seq, keys], once for every layer: filling
        // through a broadcast mask would materialise it element by element in each layer.
        let [batch, _] = ids.dims();
        let mut mask = mask.unsqueeze_dim::<5>(2);
        if mask.dims()[0] != batch {
            mask = mask.repeat_dim(0, batch);
        }
        let mask = mask.repeat_dim(1, nkv).repeat_dim(2, rep);
        let mut x = self.embed_tokens.forward(ids);
        for (layer, slot) in self.layers.iter().zip(cache.layers.iter_mut()) {
            let h = layer.input_layernorm.forward(x.clone());
            let h = layer.self_attn.forward(h, &rope, &mask, slot);
            x = x + h;
            x = x.clone() + layer.mlp.forward(layer.post_attention_layernorm.forward(x));
        }
        self.norm.forward(x)
    }

    /// Runs `s` prompts, left-padded to one length (`ids: [s, p]`, `pads[i]` padding tokens
    /// before prompt `i`), and keeps their keys and values as a [`Prefix`] that the rows of each
    /// prompt's group attend to without copying it. Returns the final hidden state of each
    /// prompt's last position `[s, hidden]` (what predicts every row's first token) and the prefix.
    pub fn prefix(&self, ids: Tensor<B, 2, Int>, pads: &[usize]) -> (Tensor<B, 2>, Prefix<B>) {
        let [s, p] = ids.dims();
        let device = ids.device();
        let mut cache = KvCache::new(self.layers.len());
        let mut hidden = Vec::with_capacity(s * p * p);
        for r in 0..s {
            let pad = pads.get(r).copied().unwrap_or(0);
            for q in 0..p {
                hidden.extend((0..p).map(|k| k > q || (k < pad && k != q)));
            }
        }
        let mask = Tensor::<B, 4, Bool>::from_data(TensorData::new(hidden, [s, 1, p, p]), &device);
        let h = self.hidden_masked(ids, &mut cache, mask);
        let width = h.dims()[2];
        let last = h.narrow(1, p - 1, 1).reshape([s, width]);
        let padding: Vec<bool> =
            (0..s).flat_map(|r| (0..p).map(move |k| k < pads.get(r).copied().unwrap_or(0))).collect();
        let layers = cache.layers.into_iter().map(|l| l.expect("every layer ran")).collect();
        let padding = padding
            .iter()
            .any(|x| *x)
            .then(|| Tensor::<B, 4, Bool>::from_data(TensorData::new(padding, [s, 1, 1, p]), &device));
        (last, Prefix { layers, len: p, padding, pads: pads.to_vec() })
    }

    /// Final hidden states `[rows, t, hidden]` of `t` new tokens of each row (`ids: [rows, t]`,
    /// rows grouped by prompt: rows `i·group .. (i+1)·group` continue prompt `i` of `prefix`).
    ///
    /// Without a cache the `t` tokens are the rows' first tokens after their prompt (the update
    /// of a whole completion); with one, they follow the `cache.len()` tokens already in it and
    /// are written into it in place (decoding).
    pub fn rows(
        &self,
        ids: Tensor<B, 2, Int>,
        prefix: &Prefix<B>,
        group: usize,
        mut cache: Option<&mut RowCache<B>>,
    ) -> Tensor<B, 3> {
        let device = ids.device();
        let [_, t] = ids.dims();
        let past = cache.as_ref().map_or(0, |c| c.len);
        assert!(cache.is_none() || t == 1, "a row cache takes one token per row at a time");
        let (nkv, rep) = self.kv_groups();
        let rows = ids.dims()[0];
        // A whole completion attends causally to itself; a decoded token sees all the row's keys.
        let mask = (cache.is_none() && t > 1).then(|| causal_mask::<B>(rows, (nkv, rep), t, &device));
        // One token per row: every prompt in one product, the padding masked at the scores' full
        // shape. Whole completions: prompt by prompt, each over its own keys (see `forward_rows`).
        let padding = match &prefix.padding {
            Some(p) if t == 1 => Some(p.clone().repeat_dim(1, nkv).repeat_dim(2, group * rep)),
            _ => None,
        };
        let head_dim = self.layers.first().map_or(0, |l| l.self_attn.head_dim);
        let rope = Rope::new(prefix.len + past, t, head_dim, &self.inv_freq, &device);
        let mut x = self.embed_tokens.forward(ids);
        for (i, layer) in self.layers.iter().enumerate() {
            let h = layer.input_layernorm.forward(x.clone());
            let (pk, pv) = &prefix.layers[i];
            let slot = cache.as_mut().map(|c| &mut c.layers[i]);
            let prompt = PromptKeys { keys: pk, values: pv, padding: padding.as_ref(), pads: &prefix.pads };
            let h = layer.self_attn.forward_rows(h, &rope, prompt, mask.as_ref(), slot, group);
            x = x + h;
            x = x.clone() + layer.mlp.forward(layer.post_attention_layernorm.forward(x));
        }
        if let Some(c) = cache {
            c.len += t;
        }
        self.norm.forward(x)
    }
}

/// The keys and values of `s` prompts left-padded to one length, `[s, kv_heads, len, head_dim]`
/// per layer, shared by the rows that continue each prompt (see [`CausalLm::prefix`]).
#[derive(Debug, Clone)]
pub struct Prefix<B: Backend> {
    pub layers: Vec<(Tensor<B, 4>, Tensor<B, 4>)>,
    /// Padded prompt length.
    pub len: usize,
    /// Left padding of each prompt.
    pub pads: Vec<usize>,
    /// `[s, 1, 1, len]`: true at a prompt's padding (`None`: no prompt is padded).
    padding: Option<Tensor<B, 4, Bool>>,
}

/// The keys and values of the tokens each row generated after its prompt, in blocks of at most
/// [`RowCache::BLOCK`] tokens (`[rows, kv_heads, n, head_dim]` per block and layer). A token is
/// appended to the last block only, so a step copies at most a block — growing one tensor by
/// concatenation copies all of it at every token, and burn's CPU backend copies a tensor on
/// every `slice_assign` — and attention reads the blocks where they lie.
#[derive(Debug, Clone)]
pub struct RowCache<B: Backend> {
    layers: Vec<Vec<(Tensor<B, 4>, Tensor<B, 4>)>>,
    len: usize,
}

impl<B: Backend> RowCache<B> {
    /// Tokens per block.
    pub const BLOCK: usize = 64;

    /// An empty cache for `model`'s rows.
    pub fn new(model: &CausalLm<B>) -> Self {
        RowCache { layers: vec![Vec::new(); model.layers.len()], len: 0 }
    }

    /// Tokens already in the cache.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
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
        mask: &Tensor<B, 5, Bool>,
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
        let scores = scores.mask_fill(mask.clone(), f32::NEG_INFINITY);
        let attn = softmax(scores, 4).reshape([b, nkv, rep * s, total]);
        let out = attn.matmul(v).reshape([b, nh, s, hd]).swap_dims(1, 2).reshape([b, s, nh * hd]);
        self.o_proj.forward(out)
    }
}

/// The keys and values of the prompts a layer's rows continue (see [`Prefix`]).
struct PromptKeys<'a, B: Backend> {
    keys: &'a Tensor<B, 4>,
    values: &'a Tensor<B, 4>,
    padding: Option<&'a Tensor<B, 4, Bool>>,
    pads: &'a [usize],
}

/// The causal mask of whole completions' scores against themselves, `[rows, kv, rep·t, t]`
/// (true: hidden), at full shape so that filling it is one pass with no broadcasting (which
/// would materialise it element by element in each layer).
fn causal_mask<B: Backend>(
    rows: usize,
    (nkv, rep): (usize, usize),
    t: usize,
    device: &B::Device,
) -> Tensor<B, 4, Bool> {
    let one: Vec<bool> = (0..t).flat_map(|i| (0..t).map(move |k| k > i)).collect();
    Tensor::<B, 4, Bool>::from_data(TensorData::new(one, [1, 1, t, t]), device)
        .repeat_dim(2, rep)
        .repeat_dim(1, nkv)
        .repeat_dim(0, rows)
}

impl<B: Backend> Attention<B> {
    /// Attention of `t` new tokens of grouped rows (`x: [rows, t, hidden]`, `group` rows per
    /// prompt) over their prompt's keys in `prefix` — read in place by one matmul per prompt
    /// and key head, never copied per row — and over the rows' own keys: the new tokens' when
    /// `slot` is `None`, else the cache's, to whose last block the new keys are first appended.
    /// `mask` `[rows, kv, rep·t, t]` (see [`causal_mask`]) hides a whole completion's future keys.
    fn forward_rows(
        &self,
        x: Tensor<B, 3>,
        rope: &Rope<B>,
        prompt: PromptKeys<'_, B>,
        mask: Option<&Tensor<B, 4, Bool>>,
        slot: Option<&mut Vec<(Tensor<B, 4>, Tensor<B, 4>)>>,
        group: usize,
    ) -> Tensor<B, 3> {
        let [r, t, _] = x.dims();
        let (nh, nkv, hd) = (self.n_heads, self.n_kv_heads, self.head_dim);
        let rep = nh / nkv;
        let s = r / group;
        let p = prompt.keys.dims()[2];
        let norm = |t: Tensor<B, 4>, n: &Option<RmsNorm<B>>| match n {
            Some(n) => n.forward(t),
            None => t,
        };
        let q = norm(self.q_proj.forward(x.clone()).reshape([r, t, nh, hd]), &self.q_norm);
        let k = norm(self.k_proj.forward(x.clone()).reshape([r, t, nkv, hd]), &self.k_norm);
        let q = apply_rope(q, &rope.cos_q, &rope.sin_q);
        let k = apply_rope(k, &rope.cos, &rope.sin).swap_dims(1, 2);
        let v = self.v_proj.forward(x).reshape([r, t, nkv, hd]).swap_dims(1, 2);
        // The rows' own keys and values, in blocks: the new tokens', or the cache's after the new
        // token is appended to its last block.
        let blocks: Vec<(Tensor<B, 4>, Tensor<B, 4>)> = match slot {
            Some(cache) => {
                match cache.pop() {
                    Some((bk, bv)) if bk.dims()[2] < RowCache::<B>::BLOCK => {
                        cache.push((Tensor::cat(vec![bk, k], 2), Tensor::cat(vec![bv, v], 2)))
                    }
                    Some(full) => cache.extend([full, (k, v)]),
                    None => cache.push((k, v)),
                }
                cache.clone()
            }
            None => vec![(k, v)],
        };
        // The prompt part: the queries of a prompt's rows, stacked, against its keys:
        // [r, t, kv, rep, d] → [s, kv, group·rep·t, d]. All prompts in one product, their
        // padding masked by `prompt.padding` (one token per row); or, without that mask, prompt by
        // prompt over its own keys — for whole completions a mask would cost passes over every
        // score, forward and backward.
        let qp = q.clone().reshape([s, group, t, nkv, rep, hd]).permute([0, 3, 1, 4, 2, 5]).reshape([
            s,
            nkv,
            group * rep * t,
            hd,
        ]);
        let padded = prompt.pads.iter().any(|p| *p > 0);
        let parts: Vec<(Tensor<B, 4>, Tensor<B, 4>)> = match prompt.padding {
            _ if !padded => vec![(qp.matmul(prompt.keys.clone().swap_dims(2, 3)), prompt.values.clone())],
            Some(padding) => vec![(
                qp.matmul(prompt.keys.clone().swap_dims(2, 3)).mask_fill(padding.clone(), f32::NEG_INFINITY),
                prompt.values.clone(),
            )],
            None => (0..s)
                .map(|i| {
                    let pad = prompt.pads[i];
                    let keys = prompt.keys.clone().narrow(0, i, 1).narrow(2, pad, p - pad);
                    let values = prompt.values.clone().narrow(0, i, 1).narrow(2, pad, p - pad);
                    (qp.clone().narrow(0, i, 1).matmul(keys.swap_dims(2, 3)), values)
                })
                .collect(),
        };
        // The rows' own part: [r, t, kv, rep, d] → [r, kv, rep·t, d], `mask` hiding future keys.
        let qr = q.reshape([r, t, nkv, rep, hd]).permute([0, 2, 3, 1, 4]).reshape([r, nkv, rep * t, hd]);
        let row_parts: Vec<(Tensor<B, 4>, Tensor<B, 4>)> = blocks
            .into_iter()
            .map(|(k, v)| {
                let sr = qr.clone().matmul(k.swap_dims(2, 3));
                let sr = match mask {
                    Some(m) => sr.mask_fill(m.clone(), f32::NEG_INFINITY),
                    None => sr,
                };
                (sr, v)
            })
            .collect();
        // One softmax over both parts without moving either: each part keeps its layout, and
        // only per-query statistics ([.., 1]) and outputs ([.., d]) change layout — the score
        // tensors are the large ones. The shift (a maximum) carries no gradient: the softmax
        // does not depend on it.
        let to_rows = |x: Tensor<B, 4>, w: usize| {
            x.reshape([s, nkv, group, rep * t, w]).swap_dims(1, 2).reshape([r, nkv, rep * t, w])
        };
        let to_prompts = |x: Tensor<B, 4>, w: usize| {
            x.reshape([s, group, nkv, rep * t, w]).swap_dims(1, 2).reshape([s, nkv, group * rep * t, w])
        };
        let along_prompts = |xs: Vec<Tensor<B, 4>>| {
            if xs.len() == 1 { xs.into_iter().next().expect("one") } else { Tensor::cat(xs, 0) }
        };
        let mp = along_prompts(parts.iter().map(|(sp, _)| sp.clone().max_dim(3)).collect());
        let shift = row_parts.iter().fold(to_rows(mp, 1), |m, (sr, _)| m.max_pair(sr.clone().max_dim(3))).detach();
        let shift_p = to_prompts(shift.clone(), 1);
        let (mut zp, mut op) = (Vec::with_capacity(parts.len()), Vec::with_capacity(parts.len()));
        let mut at = 0;
        for (sp, values) in parts {
            let n = sp.dims()[0];
            let e = (sp - shift_p.clone().narrow(0, at, n)).exp();
            zp.push(e.clone().sum_dim(3));
            op.push(e.matmul(values));
            at += n;
        }
        let mut z = to_rows(along_prompts(zp), 1);
        let mut out = to_rows(along_prompts(op), hd);
        for (sr, v) in row_parts {
            let e = (sr - shift.clone()).exp();
            z = z + e.clone().sum_dim(3);
            out = out + e.matmul(v);
        }
        let out = (out / z).reshape([r, nkv, rep, t, hd]).permute([0, 3, 1, 2, 4]).reshape([r, t, nh * hd]);
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
        let model = CausalLm::<B>::init(&CausalLmConfig::tiny(50), 1, &device);
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

    /// Two prompts of different lengths (left-padded), each continued by a group of three
    /// rows: the rows' hidden states over the shared prefix — whole completions at once, or
    /// token by token through the row cache — equal a full forward of each prompt + row alone.
    #[test]
    fn rows_over_a_shared_prefix_compute_what_each_sequence_computes_alone() {
        let device = Default::default();
        let model = CausalLm::<B>::init(&CausalLmConfig::tiny(50), 3, &device);
        let prompts: [Vec<i64>; 2] = [vec![3, 7, 11, 2, 9], vec![4, 8, 1]];
        // Long enough to fill more than one block of the row cache.
        let t = RowCache::<B>::BLOCK + 6;
        let rows: Vec<Vec<i64>> = (0..6).map(|r| (0..t).map(|j| ((r * 7 + j * 3) % 49) as i64).collect()).collect();
        let group = 3;
        let ids: Vec<i64> = vec![3, 7, 11, 2, 9, 0, 0, 4, 8, 1];
        let (last, prefix) =
            model.prefix(Tensor::<B, 2, Int>::from_data(TensorData::new(ids, [2, 5]), &device), &[0, 2]);
        let flat: Vec<i64> = rows.iter().flatten().copied().collect();
        let whole = model.rows(Tensor::from_data(TensorData::new(flat.clone(), [6, t]), &device), &prefix, group, None);
        let mut cache = RowCache::new(&model);
        let mut stepped = Vec::new();
        for j in 0..t {
            let col: Vec<i64> = rows.iter().map(|r| r[j]).collect();
            stepped.push(model.rows(
                Tensor::from_data(TensorData::new(col, [6, 1]), &device),
                &prefix,
                group,
                Some(&mut cache),
            ));
        }
        assert_eq!(cache.len(), t);
        let stepped = Tensor::cat(stepped, 1);
        let diff = |x: Tensor<B, 3>, y: Tensor<B, 3>| (x - y).abs().max().into_scalar();
        for (i, row) in rows.iter().enumerate() {
            let prompt = &prompts[i / group];
            let seq: Vec<i64> = prompt.iter().chain(row).copied().collect();
            let n = seq.len();
            let mut cache = KvCache::new(2);
            let full = model.forward_cached(Tensor::from_data(TensorData::new(seq, [1, n]), &device), &mut cache);
            let want = full.narrow(1, prompt.len(), t);
            let got = model.head(whole.clone().narrow(0, i, 1));
            assert!(diff(got, want.clone()) < 1e-5, "row {i}, whole");
            let got = model.head(stepped.clone().narrow(0, i, 1));
            assert!(diff(got, want) < 1e-5, "row {i}, token by token");
        }
        // The prompt's last position predicts each row's first token.
        let mut cache = KvCache::new(2);
        let alone =
            model.forward_cached(Tensor::from_data(TensorData::new(prompts[1].clone(), [1, 3]), &device), &mut cache);
        let got = model.head(last.narrow(0, 1, 1).unsqueeze_dim::<3>(1));
        assert!(diff(got, alone.narrow(1, 2, 1)) < 1e-5);
    }
}
