//! A layer's linear projection, and the low-rank adapter that may sit beside it.
//!
//! ```text
//! y = x·W (+ b)  +  dropout(x)·A·B · α/r      (the adapter only when LoRA is attached)
//! ```
//!
//! The decoder ([`crate::model`]) is made of these; [`crate::model::lora`] attaches, saves and loads
//! the adapters, and `hf::save` writes [`Proj::merged_weight`].

use burn::module::{Module, Param};
use burn::nn::{Dropout, Linear};
use burn::tensor::Tensor;
use burn::tensor::backend::Backend;

/// A linear projection of a layer, with a low-rank adapter beside it when LoRA is on
/// (`x·W + b + (x·A)·B·α/r`; see `lora`).
#[derive(Module, Debug)]
pub struct Proj<B: Backend> {
    pub base: Linear<B>,
    pub lora: Option<Lora<B>>,
}

/// `x · w` for `x: [batch, seq, in]`, `w: [in, out]`, as one 2-D matmul over `batch · seq` rows.
/// Burn's 3-D (broadcast) matmul copies the weight per batch on the CPU backends — 11× slower
/// for the tied output projection of SmolLM2 when decoding 8 rows (`examples/sample_bench.rs`).
pub(crate) fn matmul_rows<B: Backend>(x: Tensor<B, 3>, w: Tensor<B, 2>) -> Tensor<B, 3> {
    let [b, s, d] = x.dims();
    let out = w.dims()[1];
    x.reshape([b * s, d]).matmul(w).reshape([b, s, out])
}

impl<B: Backend> Proj<B> {
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let y = matmul_rows(x.clone(), self.base.weight.val());
        let y = match &self.base.bias {
            Some(bias) => y + bias.val().unsqueeze::<3>(),
            None => y,
        };
        match &self.lora {
            Some(lora) => y + lora.forward(x),
            None => y,
        }
    }

    /// The weight `[in, out]` the projection applies: the base plus the adapter's update.
    pub fn merged_weight(&self) -> Tensor<B, 2> {
        match &self.lora {
            Some(lora) => self.base.weight.val() + lora.delta(),
            None => self.base.weight.val(),
        }
    }
}

impl<B: Backend> From<Linear<B>> for Proj<B> {
    fn from(base: Linear<B>) -> Self {
        Proj { base, lora: None }
    }
}

/// One adapter: `dropout(x)·A·B · scale`.
#[derive(Module, Debug)]
pub struct Lora<B: Backend> {
    /// `[in, rank]`.
    pub a: Param<Tensor<B, 2>>,
    /// `[rank, out]`.
    pub b: Param<Tensor<B, 2>>,
    pub scale: f64,
    pub dropout: Dropout,
}

impl<B: Backend> Lora<B> {
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let x = self.dropout.forward(x);
        let down = matmul_rows(x, self.a.val());
        matmul_rows(down, self.b.val()).mul_scalar(self.scale)
    }

    /// The update `A·B·scale` `[in, out]` merging adds to the base weight.
    pub fn delta(&self) -> Tensor<B, 2> {
        self.a.val().matmul(self.b.val()).mul_scalar(self.scale)
    }
}
