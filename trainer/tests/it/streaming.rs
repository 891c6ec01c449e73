//! The streamed reader of training rows: exactly the snapshot's rows, pinned, in bounded
//! batches; a streamed epoch deals every training window once; the streamed mixture keeps the
//! rows `mixture::keep` keeps.

use std::collections::BTreeMap;

use futures::StreamExt;
use regrpo_datasets::{Repository, snapshot};
use regrpo_engine::{EngineConfig, ToolSuite};
use regrpo_queries::{At, Session};
use regrpo_schemas::{Record, Rot, Split, SplitSpec, Trajectory, from_batch, mixture};
use regrpo_trainer::data::stream;
use regrpo_trainer::data::{DataConfig, SampleKind, encode_all};
use regrpo_trainer::text::tokenizer::ChatTokenizer;
use regrpo_trainer::text::window::{ChatWindow, WindowConfig};

/// A repository with toolworld trajectories and the engine's RoT rows, snapshot `s1` at a
/// 70/30 split; then more rows appended after the snapshot.
async fn repo_with_rows(dir: &std::path::Path) -> Repository {
    let repo = Repository::init(dir.join("r")).await.unwrap();
    regrpo_engine::toolworld::generate_into(&repo, 24, 5, 3, || {}).await.unwrap();
    regrpo_engine::run::run(&repo, &ToolSuite::builtin(), &EngineConfig { seed: 5, ..EngineConfig::default() }, None)
        .await
        .unwrap();
    snapshot::create_with_split(&repo, "s1", None, SplitSpec::new([0.7, 0.3, 0.0], 11).unwrap()).await.unwrap();
    regrpo_engine::toolworld::generate_into(&repo, 6, 9, 3, || {}).await.unwrap();
    repo
}

async fn streamed<R: Record>(repo: &Repository, sql: &str) -> (Vec<R>, usize) {
    let session = stream::scan_session(repo, Some("s1")).await.unwrap();
    let mut rows = session.stream(sql).await.unwrap();
    let (mut out, mut largest) = (Vec::new(), 0);
    while let Some(batch) = rows.next().await {
        let batch = batch.unwrap();
        largest = largest.max(batch.num_rows());
        out.extend(from_batch::<R>(&batch).unwrap());
    }
    (out, largest)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stream_returns_exactly_the_rows_of_select_star_at_the_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let repo = repo_with_rows(dir.path()).await;
    let pinned = Session::open(&repo, At::Snapshot("s1".into())).await.unwrap();
    let latest = Session::open(&repo, At::Latest).await.unwrap();

    let (rots, largest) = streamed::<Rot>(&repo, "SELECT * FROM rot").await;
    let want: Vec<Rot> = from_batches(&pinned.query("SELECT * FROM rot ORDER BY rot_id").await.unwrap());
    assert!(!want.is_empty() && largest <= 1024, "rows come in batches of at most 1,024");
    let mut got = rots.clone();
    got.sort_by(|a, b| a.rot_id.cmp(&b.rot_id));
    assert_eq!(got, want, "every RoT row of the snapshot, once, unchanged");

    let (ts, _) = streamed::<Trajectory>(&repo, "SELECT * FROM trajectories").await;
    let mut got: Vec<String> = ts.iter().map(|t| t.trajectory_id.clone()).collect();
    got.sort();
    let want: Vec<Trajectory> =
        from_batches(&pinned.query("SELECT * FROM trajectories ORDER BY trajectory_id").await.unwrap());
    assert_eq!(got, want.iter().map(|t| t.trajectory_id.clone()).collect::<Vec<_>>());
    let later: Vec<Trajectory> = from_batches(&latest.query("SELECT * FROM trajectories").await.unwrap());
    assert!(later.len() > want.len(), "rows appended after the snapshot are not streamed");

    // The same order every time: a resumed run reads the epoch it left.
    let (again, _) = streamed::<Rot>(&repo, "SELECT * FROM rot").await;
    assert_eq!(again, rots);
}

fn from_batches<R: Record>(batches: &[arrow::array::RecordBatch]) -> Vec<R> {
    batches.iter().flat_map(|b| from_batch::<R>(b).unwrap()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streamed_epoch_deals_every_training_window_once_and_the_mixture_keeps_what_keep_keeps() {
    let dir = tempfile::tempdir().unwrap();
    let repo = repo_with_rows(dir.path()).await;
    let cfg = DataConfig { rot_fraction: 0.25, ..Default::default() };
    let prepared = stream::prepare(&repo, Some("s1"), &cfg, (3, 1), 1_000).await.unwrap();

    // Counts and validation rows, against the whole tables read at the snapshot.
    let pinned = Session::open(&repo, At::Snapshot("s1".into())).await.unwrap();
    let split = pinned.split();
    let rots: Vec<Rot> = from_batches(&pinned.query("SELECT * FROM rot").await.unwrap());
    let ts: Vec<Trajectory> = from_batches(&pinned.query("SELECT * FROM trajectories").await.unwrap());
    let train_rot: Vec<&Rot> = rots.iter().filter(|r| split.of(&r.trajectory_id) == Split::Train).collect();
    let train_clean: Vec<&Trajectory> = ts.iter().filter(|t| split.of(&t.trajectory_id) == Split::Train).collect();
    assert_eq!(prepared.train_rows, [train_clean.len(), train_rot.len()]);
    let held_out = ts.len() - train_clean.len() + rots.len() - train_rot.len();
    assert_eq!(prepared.validation.len(), held_out, "every validation row under the cap");
    assert!(prepared.validation.iter().all(|s| split.of(&s.trajectory_id) == Split::Validation));

    // The mixture: the streamed threshold keeps exactly the rows the in-memory rule keeps.
    let (keep_rot, keep_clean) = mixture::share_quotas(train_rot.len(), train_clean.len(), 0.25);
    assert_eq!(prepared.kept_rows, [keep_clean, keep_rot]);
    assert!(keep_clean < train_clean.len() || keep_rot < train_rot.len(), "the fixture exercises the mixture");

    // One streamed epoch of each kind = the windows of the kept rows, each once.
    let texts = ts.iter().flat_map(|t| regrpo_schemas::react::trajectory_messages(t).into_iter().map(|m| m.content));
    let texts: Vec<String> =
        texts.chain(rots.iter().flat_map(|r| r.conversation.iter().map(|m| m.content.clone()))).collect();
    let window = ChatWindow::new(
        ChatTokenizer::train(texts.into_iter(), 500).unwrap(),
        WindowConfig {
            max_prompt_tokens: 384,
            max_target_tokens: 128,
            system_tokens: 96,
            task_tokens: 64,
            observation_tokens: 128,
        },
    )
    .unwrap();
    let (mut sources, _) = prepared.sources(&window, 4);
    let mut per_kind = BTreeMap::new();
    for (k, source) in sources.iter_mut().enumerate() {
        let epoch = tokio::task::block_in_place(|| {
            source.start(0).unwrap();
            std::iter::from_fn(|| source.next().unwrap()).collect::<Vec<_>>()
        });
        let mut positions: Vec<usize> = epoch.iter().map(|(i, _)| *i).collect();
        positions.sort();
        assert_eq!(positions, (0..epoch.len()).collect::<Vec<_>>(), "each position once");
        per_kind.insert(k, epoch.into_iter().map(|(_, e)| e).collect::<Vec<_>>());
    }
    let sorted = |v: Vec<regrpo_trainer::text::window::Encoded>| {
        let mut v: Vec<(Vec<u32>, Vec<bool>)> = v.into_iter().map(|e| (e.ids, e.mask)).collect();
        v.sort();
        v
    };
    for (k, (kind, n)) in [(SampleKind::Clean, keep_clean), (SampleKind::Rot, keep_rot)].into_iter().enumerate() {
        let samples = stream::training_samples(&repo, Some("s1"), &cfg, kind).await.unwrap();
        let kept = mixture::keep(samples, n, split.seed, |s| &s.id);
        assert_eq!(kept.len(), n);
        let (want, _) = encode_all(&kept, &window, cfg.rot_target).unwrap();
        assert_eq!(sorted(per_kind.remove(&k).unwrap()), sorted(want), "{kind:?}: an epoch is the kept rows' windows");
    }
}
