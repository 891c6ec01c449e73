//! One split for every job: the test split `publish` writes is exactly the set `eval` holds out
//! (and the same for train and validation), because both ask the snapshot.

use std::collections::{BTreeMap, BTreeSet};

use arrow::array::{Array, StringArray};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use regrpo_datasets::{Repository, snapshot};
use regrpo_engine::{EngineConfig, ToolSuite};
use regrpo_formats::publish::{PublishOptions, publish};
use regrpo_schemas::{Split, SplitSpec};
use regrpo_trainer::data::snapshot_rows;
use regrpo_trainer::eval::{EvalConfig, held_out};

/// The source trajectories of every published Parquet file, by split.
fn published_trajectories(out: &std::path::Path) -> BTreeMap<Split, BTreeSet<String>> {
    let mut by_split: BTreeMap<Split, BTreeSet<String>> = BTreeMap::new();
    for entry in std::fs::read_dir(out.join("data")).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        let split: Split = name.split('-').next().unwrap().parse().unwrap();
        let reader =
            ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(&path).unwrap()).unwrap().build().unwrap();
        for batch in reader {
            let batch = batch.unwrap();
            let ids = batch.column_by_name("source_trajectory_id").unwrap();
            let ids = ids.as_any().downcast_ref::<StringArray>().unwrap();
            by_split.entry(split).or_default().extend((0..ids.len()).map(|i| ids.value(i).to_string()));
        }
    }
    by_split
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_published_test_split_is_the_set_eval_holds_out() {
    let dir = tempfile::tempdir().unwrap();
    let repo = Repository::init(dir.path().join("r")).await.unwrap();
    regrpo_engine::toolworld::generate_into(&repo, 60, 5, 4, || {}).await.unwrap();
    let cfg = EngineConfig { seed: 5, ..EngineConfig::default() };
    regrpo_engine::run::run(&repo, &ToolSuite::builtin(), &cfg, None).await.unwrap();
    let spec = SplitSpec::new([0.6, 0.2, 0.2], 3).unwrap();
    snapshot::create_with_split(&repo, "v1", None, spec).await.unwrap();
    let out = dir.path().join("published");
    let opts = PublishOptions { verified_only: false, ..PublishOptions::default() };
    publish(&repo, "v1", &out, &opts).await.unwrap();
    let published = published_trajectories(&out);

    let rows = snapshot_rows(&repo, Some("v1")).await.unwrap();
    for split in Split::ALL {
        let cfg =
            EvalConfig { split, max_failure_states: usize::MAX, max_clean_states: usize::MAX, ..EvalConfig::default() };
        let set = held_out(&rows, repo.workdir(), &cfg);
        let evaluated: BTreeSet<String> =
            set.states.failures.iter().chain(&set.states.cleans).map(|s| s.trajectory_id.clone()).collect();
        assert!(!evaluated.is_empty(), "{split}: no states");
        assert_eq!(evaluated, published[&split], "{split}: published and evaluated trajectories differ");
    }
}
