//! LoRA: training moves the adapters only (the base stays bit for bit, and the optimizer holds
//! state for the adapters alone), on a tiny model always and on the real SmolLM2 checkpoint
//! when `scripts/fetch_smollm2.sh` has fetched it.

use std::collections::HashMap;
use std::path::Path;

use burn::backend::{Autodiff, NdArray};
use burn::module::{Module, ModuleVisitor, Param, ParamId};
use burn::optim::{AdamWConfig, GradientsParams, Optimizer};
use burn::tensor::{Int, Tensor, TensorData};
use regrpo_datasets::{Repository, snapshot};
use regrpo_formats::ingest::{self, Format, IngestOptions};

use crate::every_row_trains;
use regrpo_trainer::checkpoint::hf::{self, StoredDtype};
use regrpo_trainer::data::stream;
use regrpo_trainer::data::{self, DataConfig, RotTarget, SampleKind};
use regrpo_trainer::jobs::{self, DeviceKind, ModelSource, SftJob};
use regrpo_trainer::model::lora::{self, LoraConfig, TARGETS};
use regrpo_trainer::sft::{self, SftConfig};
use regrpo_trainer::text::tokenizer::ChatTokenizer;
use regrpo_trainer::text::window::{ChatWindow, WindowConfig};
use regrpo_trainer::{CausalLm, CausalLmConfig};

type B = NdArray<f32>;
type AB = Autodiff<B>;

/// Every float parameter of a module by id.
struct Collect(HashMap<ParamId, Vec<f32>>);

impl<Be: burn::tensor::backend::Backend> ModuleVisitor<Be> for Collect {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<Be, D>>) {
        self.0.insert(param.id, param.val().into_data().convert::<f32>().to_vec().unwrap());
    }
}

fn params<Be: burn::tensor::backend::Backend, M: Module<Be>>(m: &M) -> HashMap<ParamId, Vec<f32>> {
    let mut c = Collect(HashMap::new());
    m.visit(&mut c);
    c.0
}

#[test]
fn lora_moves_only_the_adapters_and_the_optimizer_holds_only_them() {
    let device = Default::default();
    let config = CausalLmConfig::tiny(50);
    let base = CausalLm::<AB>::init(&config, 1, &device);
    let before = params(&base);
    let cfg = LoraConfig { targets: TARGETS.map(String::from).to_vec(), ..LoraConfig::new(4) };
    let mut model = lora::attach(base, &cfg, 3).unwrap();
    let adapters = 2 * TARGETS.len() * config.num_hidden_layers;

    let ids: Vec<i64> = (0..2 * 12).map(|i| (i * 7 % 50) as i64).collect();
    let targets: Vec<i64> = ids.iter().map(|i| (i + 1) % 50).collect();
    let batch = |v: &[i64]| Tensor::<AB, 2, Int>::from_data(TensorData::new(v.to_vec(), [2, 12]), &device);
    let weights = Tensor::<AB, 2>::ones([2, 12], &device);
    let mut optim = AdamWConfig::new().init::<AB, CausalLm<AB>>();
    let mut losses = Vec::new();
    for _ in 0..40 {
        let loss = sft::masked_loss(model.forward(batch(&ids)), batch(&targets), weights.clone());
        losses.push(loss.clone().into_scalar());
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        assert_eq!(grads.len(), adapters, "gradients exist for the adapters only");
        model = optim.step(1e-2, model, grads);
    }
    assert!(losses[39] < 0.7 * losses[0], "LoRA lowers the loss: {} → {}", losses[0], losses[39]);
    assert_eq!(optim.to_record().len(), adapters, "optimizer state for the adapters only");

    let after = params(&model);
    assert_eq!(after.len(), before.len() + adapters);
    for (id, values) in &before {
        assert_eq!(after.get(id), Some(values), "a base weight changed");
    }
    assert_eq!(
        lora::adapter_params(&model),
        config.num_hidden_layers * 4 * (2 * (64 + 64) + 2 * (64 + 32) + 3 * (64 + 160))
    );
}

/// Loss of a model folder on encoded samples (NdArray, f32).
fn loss_of(dir: &Path, samples: &[regrpo_trainer::text::window::Encoded], pad: u32) -> f64 {
    let (_, model) = hf::load::<B>(dir, &Default::default()).unwrap();
    sft::evaluate(&model, samples, 2, samples.len(), pad, &Default::default()).unwrap()
}

fn tensors(dir: &Path) -> HashMap<String, Vec<u8>> {
    let bytes = std::fs::read(dir.join("model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    st.tensors().into_iter().map(|(n, v)| (n, v.data().to_vec())).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lora_sft_of_smollm2_lowers_the_loss_and_changes_only_adapted_weights() {
    let Some(file) = crate::gguf::smollm2() else { return };
    let dir = tempfile::tempdir().unwrap();
    let imported = dir.path().join("smollm2");
    let t0 = std::time::Instant::now();
    regrpo_trainer::checkpoint::gguf::import(&file, &imported, StoredDtype::F32).unwrap();
    eprintln!("import: {:.0} s", t0.elapsed().as_secs_f64());
    let repo = Repository::init(dir.path().join("r")).await.unwrap();
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/regrpo/rot_sample.json");
    ingest::ingest(&repo, Format::Regrpo, &[fixture], &IngestOptions::default()).await.unwrap();
    snapshot::create_with_split(&repo, "s1", None, every_row_trains()).await.unwrap();

    let window = WindowConfig {
        max_prompt_tokens: 384,
        max_target_tokens: 96,
        system_tokens: 96,
        task_tokens: 64,
        observation_tokens: 96,
    };
    let data_cfg = DataConfig { rot_fraction: 1.0, ..Default::default() };
    let lora_cfg = LoraConfig::new(8);
    let job = SftJob {
        snapshot: Some("s1".into()),
        model: ModelSource::Dir(imported.clone()),
        tokenizer: None,
        vocab: 0,
        out: dir.path().join("run"),
        sft: SftConfig {
            steps: 6,
            batch_size: 2,
            lr: 2e-3,
            warmup_steps: 1,
            eval_every: 0,
            checkpoint_every: 0,
            seed: 1,
            ..Default::default()
        },
        data: data_cfg.clone(),
        window,
        resume: false,
        device: DeviceKind::Cpu,
        lora: Some(lora_cfg.clone()),
    };
    let o = jobs::run_sft(&repo, &job, |_| {}).await.unwrap();
    eprintln!("LoRA SFT: {:.0} s, {:.0} tokens/s, losses {:?}", t0.elapsed().as_secs_f64(), o.tokens_per_s, o.losses);
    let trained = o.model_dir.clone();
    let adapter = o.adapter_dir.clone().expect("a LoRA run writes its adapter");
    // q_proj [576 → 576] and v_proj [576 → 192] in each of 30 layers, rank 8.
    assert_eq!(o.trainable_params, 30 * 8 * (576 + 576 + 576 + 192));

    // The loss on the training rows falls.
    let tk = ChatTokenizer::load(&imported.join("tokenizer.json")).unwrap();
    let rows = stream::training_samples(&repo, Some("s1"), &data_cfg, SampleKind::Rot).await.unwrap();
    let (encoded, _) =
        data::encode_all(&rows, &ChatWindow::new(tk.clone(), window).unwrap(), RotTarget::Reflection).unwrap();
    let (base_loss, lora_loss) = (loss_of(&imported, &encoded, tk.pad), loss_of(&trained, &encoded, tk.pad));
    eprintln!(
        "loss on the RoT rows: base {base_loss:.4}, LoRA {lora_loss:.4} ({:.0} s in)",
        t0.elapsed().as_secs_f64()
    );
    assert!(lora_loss < 0.9 * base_loss, "loss on the RoT rows {base_loss:.4} → {lora_loss:.4}");

    // Only the adapted projections differ from the base, and the base + the PEFT adapter merged
    // is the exported model.
    let (base_t, trained_t) = (tensors(&imported), tensors(&trained));
    assert_eq!(base_t.len(), trained_t.len());
    for (name, bytes) in &base_t {
        let adapted = name.ends_with("q_proj.weight") || name.ends_with("v_proj.weight");
        assert_eq!(&trained_t[name] != bytes, adapted, "{name}: changed only if adapted");
    }
    eprintln!("compared tensors ({:.0} s in)", t0.elapsed().as_secs_f64());
    let merged = dir.path().join("merged");
    let read = jobs::merge_adapter(&imported, &adapter, &merged).unwrap();
    assert_eq!(read, lora_cfg);
    eprintln!("merged ({:.0} s in)", t0.elapsed().as_secs_f64());
    let floats = |b: &[u8]| b.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect::<Vec<_>>();
    for (name, bytes) in tensors(&merged) {
        let (x, y) = (floats(&bytes), floats(&trained_t[&name]));
        let diff = x.iter().zip(&y).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
        assert!(diff < 1e-6, "{name}: merge(base, adapter) vs the exported model differ by {diff}");
    }
}
