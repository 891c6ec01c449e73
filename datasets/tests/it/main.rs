//! Integration tests of the store: snapshots, verify, gc and optimize over real Delta tables.
//! (The readers and writers of external formats are tested in `regrpo-formats`.)

use std::time::Duration;

use regrpo_datasets::{Error, Repository, snapshot};
use regrpo_schemas::{ExecStatus, Observation, Step, Trajectory};

/// `n` small trajectories of a batch, with distinct ids.
fn trajectories(batch: &str, n: usize) -> Vec<Trajectory> {
    (0..n)
        .map(|i| {
            regrpo_schemas::id::seal(Trajectory {
                trajectory_id: String::new(),
                source: "test".into(),
                source_id: format!("{batch}-{i}"),
                source_file: format!("{batch}.json"),
                source_offset: i as i64,
                source_line: None,
                task: format!("task {i} of {batch}"),
                system_prompt: None,
                files: vec![],
                tool_specs: "[]".into(),
                steps: vec![Step {
                    index: 0,
                    thought: Some("look".into()),
                    action: None,
                    observation: Some(Observation { status: ExecStatus::Ok, text: format!("seen {i}") }),
                }],
                final_answer: Some(i.to_string()),
                gt_answer: None,
                meta: None,
                ingest_batch: batch.into(),
            })
        })
        .collect()
}

fn sorted(mut v: Vec<Trajectory>) -> Vec<Trajectory> {
    v.sort_by(|a, b| a.trajectory_id.cmp(&b.trajectory_id));
    v
}

#[tokio::test]
async fn snapshots_pin_rows_while_the_tables_move_on_and_gc_keeps_them() {
    let dir = tempfile::tempdir().unwrap();
    let repo = Repository::init(dir.path().join("repo")).await.unwrap();
    let mut app = repo.appender::<Trajectory>().await.unwrap();
    app.append(trajectories("a", 4), "a").await.unwrap();
    let s1 = snapshot::create(&repo, "s1", Some("first")).await.unwrap();
    assert_eq!(s1.tables["trajectories"].rows, 4);
    assert!(matches!(snapshot::create(&repo, "s1", None).await, Err(Error::SnapshotExists { .. })));
    assert!(matches!(snapshot::create(&repo, "../x", None).await, Err(Error::BadSnapshotName { .. })));
    let at_s1 = repo.read::<Trajectory>(Some(s1.tables["trajectories"].version)).await.unwrap();

    app.append(trajectories("b", 3), "b").await.unwrap();
    app.append(trajectories("c", 2), "c").await.unwrap();
    let s2 = snapshot::create(&repo, "s2", None).await.unwrap();
    assert_eq!(s2.parent.as_deref(), Some("s1"));
    assert_eq!(repo.read::<Trajectory>(Some(s1.tables["trajectories"].version)).await.unwrap(), at_s1);
    let d = snapshot::diff(&repo, "s1", "s2").await.unwrap();
    let t = d.iter().find(|d| d.table == "trajectories").unwrap();
    assert_eq!((t.rows_a, t.rows_b, t.files_added, t.files_removed), (4, 9, 2, 0));

    // An orphan (what a killed writer leaves) is collected; pinned files are not.
    let table_dir = repo.table_path("trajectories").unwrap();
    let pinned = &s1.tables["trajectories"].files[0].path;
    let orphan = table_dir.join("part-00000-orphan.parquet");
    std::fs::copy(table_dir.join(pinned), &orphan).unwrap();
    let young = snapshot::gc(&repo, Duration::from_secs(3600), false).await.unwrap();
    assert_eq!((young.files_removed, young.files_too_young), (0, 1));
    let r = snapshot::gc(&repo, Duration::ZERO, false).await.unwrap();
    assert_eq!(r.files_removed, 1);
    assert!(!orphan.exists());
    for name in ["s1", "s2"] {
        let v = snapshot::verify(&repo, name).await.unwrap();
        assert!(v.is_ok(), "{name}: {:?}", v.problems);
    }
    assert_eq!(repo.read::<Trajectory>(Some(s1.tables["trajectories"].version)).await.unwrap(), at_s1);

    // Optimize rewrites the three small files as one new version; the rows are the same, the
    // snapshots still verify (their files stay until nothing references them), a second
    // optimize finds nothing to do.
    let latest = sorted(repo.read::<Trajectory>(None).await.unwrap());
    let o = repo.optimize("trajectories").await.unwrap();
    assert_eq!((o.files_before, o.files_removed, o.files_added), (3, 3, 1), "{o:?}");
    assert_eq!(o.version_after, o.version_before + 1);
    assert_eq!(sorted(repo.read::<Trajectory>(None).await.unwrap()), latest);
    assert_eq!(repo.optimize("trajectories").await.unwrap().version_after, o.version_after);
    let rot = repo.optimize("rot").await.unwrap();
    assert_eq!(rot.clustered_by, ["error_type", "tool"]);
    snapshot::gc(&repo, Duration::ZERO, false).await.unwrap();
    for name in ["s1", "s2"] {
        let v = snapshot::verify(&repo, name).await.unwrap();
        assert!(v.is_ok(), "{name} after optimize: {:?}", v.problems);
    }
    assert_eq!(repo.read::<Trajectory>(Some(s1.tables["trajectories"].version)).await.unwrap(), at_s1);

    // Tampering with a pinned file is caught.
    let path = table_dir.join(pinned);
    let mut bytes = std::fs::read(&path).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&path, bytes).unwrap();
    let v = snapshot::verify(&repo, "s1").await.unwrap();
    assert!(v.problems.iter().any(|p| p.contains("sha256")), "{:?}", v.problems);
}

#[tokio::test]
async fn a_snapshot_records_its_split_and_older_manifests_read_as_the_default() {
    let dir = tempfile::tempdir().unwrap();
    let repo = Repository::init(dir.path().join("repo")).await.unwrap();
    repo.appender::<Trajectory>().await.unwrap().append(trajectories("a", 40), "a").await.unwrap();
    let spec = regrpo_schemas::SplitSpec::new([0.5, 0.25, 0.25], 9).unwrap();
    let s = snapshot::create_with_split(&repo, "s", None, spec).await.unwrap();
    assert_eq!(snapshot::get(&repo, "s").await.unwrap().split, spec);
    assert_eq!(snapshot::split_spec(&repo, Some("s")).await.unwrap(), spec);
    let ids: Vec<String> = repo.read::<Trajectory>(None).await.unwrap().into_iter().map(|t| t.trajectory_id).collect();
    assert!(ids.iter().all(|id| s.split_of(id) == spec.of(id)));
    // A manifest from before splits were recorded: the default split.
    let path = repo.local_root().unwrap().join("snapshots/s.json");
    let mut v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    v.as_object_mut().unwrap().remove("split");
    std::fs::write(
        repo.local_root().unwrap().join("snapshots/old.json"),
        v.to_string().replace("\"name\":\"s\"", "\"name\":\"old\""),
    )
    .unwrap();
    assert_eq!(snapshot::get(&repo, "old").await.unwrap().split, regrpo_schemas::SplitSpec::default());
}
