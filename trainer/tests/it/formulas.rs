//! The ReGRPO formulas against values computed from the reference's definitions
//! (`scripts/regrpo_formulas.py`), to 1e-6.

use std::path::Path;

use burn::backend::NdArray;
use burn::tensor::{Tensor, TensorData};
use regrpo_trainer::regrpo::objective::{
    self, AdvantageConfig, Kl, KlEstimator, KlMode, LossConfig, LossInputs, RewardConfig,
};
use serde_json::Value;

fn nums(v: &Value) -> Vec<f64> {
    v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect()
}

fn close(a: &[f64], b: &[f64], what: &str) {
    assert_eq!(a.len(), b.len(), "{what}");
    for (x, y) in a.iter().zip(b) {
        assert!((x - y).abs() <= 1e-6, "{what}: {x} vs {y}");
    }
}

#[test]
fn rewards_advantages_kl_and_loss_match_the_reference() {
    let text =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/regrpo_formulas.json"))
            .unwrap();
    let fixture: Value = serde_json::from_str(&text).unwrap();
    for case in fixture["cases"].as_array().unwrap() {
        let p = &case["params"];
        let rc = RewardConfig {
            lambda_exec: p["lambda_exec"].as_f64().unwrap(),
            eta: p["eta"].as_f64().unwrap(),
            lambda_val: p["lambda_val"].as_f64().unwrap(),
            ..Default::default()
        };
        let rollouts = case["rollouts"].as_array().unwrap();
        let rewards: Vec<f64> = rollouts
            .iter()
            .map(|r| {
                objective::reward(
                    r["success"].as_bool().unwrap(),
                    r["reflection_tokens"].as_u64().unwrap() as usize,
                    r["verifier"].as_f64().unwrap(),
                    &rc,
                )
            })
            .collect();
        close(&rewards, &nums(&case["rewards"]), "rewards");
        assert!((objective::variance(&rewards) - case["variance"].as_f64().unwrap()).abs() <= 1e-6);
        let plain = objective::advantages(&rewards, &AdvantageConfig::default());
        close(&plain, &nums(&case["advantage_plain"]), "plain");
        close(
            &objective::advantages(&rewards, &AdvantageConfig { normalize: true, ..Default::default() }),
            &nums(&case["advantage_normalized"]),
            "normalized",
        );
        let clip = p["clip"].as_f64().unwrap();
        close(
            &objective::advantages(
                &rewards,
                &AdvantageConfig { normalize: true, clip: Some(clip), ..Default::default() },
            ),
            &nums(&case["advantage_clipped"]),
            "clipped",
        );
        close(
            &objective::advantages(&rewards, &AdvantageConfig { leave_one_out: true, ..Default::default() }),
            &nums(&case["advantage_loo"]),
            "loo",
        );
        let lps: Vec<Vec<f64>> = rollouts.iter().map(|r| nums(&r["logprobs"])).collect();
        let refs: Vec<Vec<f64>> = rollouts.iter().map(|r| nums(&r["ref_logprobs"])).collect();
        let k1: Vec<f64> = lps.iter().zip(&refs).map(|(a, b)| objective::kl(a, b, KlEstimator::K1, false)).collect();
        // The fixture's k3 is the reference's formula, `e^(lp−ref) − (lp−ref) − 1`.
        let k3: Vec<f64> =
            lps.iter().zip(&refs).map(|(a, b)| objective::kl(a, b, KlEstimator::ReferenceK3, false)).collect();
        let k3n: Vec<f64> =
            lps.iter().zip(&refs).map(|(a, b)| objective::kl(a, b, KlEstimator::ReferenceK3, true)).collect();
        close(&k1, &nums(&case["kl_k1"]), "k1");
        close(&k3, &nums(&case["kl_k3"]), "k3");
        close(&k3n, &nums(&case["kl_k3_norm"]), "k3 normalised");
        let beta = p["beta"].as_f64().unwrap();
        let want = case["loss"].as_f64().unwrap();
        assert!((objective::loss_scalar(&lps, &refs, &plain, beta, false) - want).abs() <= 1e-6);
        assert!(
            (objective::loss_scalar(&lps, &refs, &plain, beta, true)
                - case["loss_length_normalized"].as_f64().unwrap())
            .abs()
                <= 1e-6
        );

        // The tensor loss used for training gives the same number (f32 tensors: 1e-4 relative).
        type B = NdArray<f32>;
        let device = Default::default();
        let len = lps.iter().map(Vec::len).max().unwrap();
        let pad = |v: &Vec<f64>| -> Vec<f32> { (0..len).map(|i| v.get(i).copied().unwrap_or(0.0) as f32).collect() };
        let flat = |vs: &[Vec<f64>]| -> Vec<f32> { vs.iter().flat_map(pad).collect() };
        let mask: Vec<f32> =
            lps.iter().flat_map(|v| (0..len).map(move |i| if i < v.len() { 1.0 } else { 0.0 })).collect();
        let t = |d: Vec<f32>| Tensor::<B, 2>::from_data(TensorData::new(d, [lps.len(), len]), &device);
        // The reference's loss puts k1 in the loss: `--kl reference-k1`.
        let kl = Kl::new(KlMode::ReferenceK1, t(flat(&refs)), None).unwrap();
        let inputs = LossInputs { lp: t(flat(&lps)), kl, old_lp: t(flat(&lps)), mask: t(mask) };
        let got = objective::loss(inputs, &plain, &LossConfig { beta, kl: KlMode::ReferenceK1, ..Default::default() })
            .into_scalar() as f64;
        assert!((got - want).abs() <= 1e-4 * want.abs().max(1.0), "tensor loss {got} vs {want}");
    }
}
