//! The Burn Qwen2 against logits computed by Hugging Face transformers
//! (fixture made by `scripts/hf_parity.py make`).

use std::path::{Path, PathBuf};

use burn::backend::NdArray;
use burn::module::Module;
use burn::tensor::{Int, Tensor, TensorData};
use regrpo_trainer::hf;
use safetensors::SafeTensors;

type B = NdArray<f32>;

pub fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny-qwen2")
}

fn expected() -> (Vec<i64>, Vec<f32>, Vec<usize>) {
    let bytes = std::fs::read(fixture().join("expected.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let ids = st.tensor("input_ids").unwrap();
    let logits = st.tensor("logits").unwrap();
    let ids: Vec<i64> = ids.data().chunks_exact(8).map(|c| i64::from_le_bytes(c.try_into().unwrap())).collect();
    let shape = logits.shape().to_vec();
    let logits: Vec<f32> = logits.data().chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect();
    (ids, logits, shape)
}

#[test]
fn logits_match_transformers_within_1e_4() {
    let device = Default::default();
    let (config, model) = hf::load::<B>(&fixture(), &device).unwrap();
    assert!(!config.tie_word_embeddings);
    let (ids, want, shape) = expected();
    let ids = Tensor::<B, 2, Int>::from_data(TensorData::new(ids, [shape[0], shape[1]]), &device);
    let got: Vec<f32> = model.forward(ids).into_data().to_vec().unwrap();
    assert_eq!(got.len(), want.len());
    let max = got.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
    assert!(max <= 1e-4, "max |ours - transformers| = {max}");
}

fn params(m: &regrpo_trainer::Qwen2<B>) -> Vec<Vec<f32>> {
    struct Collect(Vec<Vec<f32>>);
    impl burn::module::ModuleVisitor<B> for Collect {
        fn visit_float<const D: usize>(&mut self, p: &burn::module::Param<Tensor<B, D>>) {
            self.0.push(p.val().into_data().to_vec().unwrap());
        }
    }
    let mut c = Collect(Vec::new());
    m.visit(&mut c);
    c.0
}

#[test]
fn save_then_load_is_bit_identical() {
    let device = Default::default();
    let (config, model) = hf::load::<B>(&fixture(), &device).unwrap();
    let dir = tempfile::tempdir().unwrap();
    hf::save(&config, &model, dir.path()).unwrap();
    let (config2, model2) = hf::load::<B>(dir.path(), &device).unwrap();
    assert_eq!(config.hidden_size, config2.hidden_size);
    let (a, b) = (params(&model), params(&model2));
    assert_eq!(a.len(), b.len());
    for (x, y) in a.iter().zip(&b) {
        assert!(x.iter().zip(y).all(|(p, q)| p.to_bits() == q.to_bits()));
    }
    // And what we wrote is the same bytes, tensor for tensor, as the original.
    let orig = std::fs::read(fixture().join("model.safetensors")).unwrap();
    let ours = std::fs::read(dir.path().join("model.safetensors")).unwrap();
    let (o, w) = (SafeTensors::deserialize(&orig).unwrap(), SafeTensors::deserialize(&ours).unwrap());
    let mut names: Vec<String> = o.names().into_iter().map(str::to_string).collect();
    names.sort();
    let mut ours_names: Vec<String> = w.names().into_iter().map(str::to_string).collect();
    ours_names.sort();
    assert_eq!(names, ours_names);
    for n in names {
        assert_eq!(o.tensor(&n).unwrap().data(), w.tensor(&n).unwrap().data(), "{n}");
    }
}
