//! A sharded engine run: shards as concurrent processes on one repository, one of them killed
//! and rerun, give row for row what the same shards give run in one process.

use std::path::Path;
use std::process::{Child, Stdio};
use std::time::Duration;

use regrpo_datasets::Repository;
use regrpo_schemas::{NearMiss, Rot};

use crate::{bin, kill_when, ok, s};

/// Every RoT and near-miss row, in id order; execution times zeroed (they are measured).
fn rows(repo: &Path) -> (Vec<Rot>, Vec<NearMiss>) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rows_of(rt.block_on(Repository::open(repo)).unwrap())
}

/// [`rows`] of an open repository (local or on S3).
pub(crate) fn rows_of(repo: Repository) -> (Vec<Rot>, Vec<NearMiss>) {
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let mut rot = repo.read::<Rot>(None).await.unwrap();
        let mut near = repo.read::<NearMiss>(None).await.unwrap();
        rot.sort_by(|a, b| a.rot_id.cmp(&b.rot_id));
        near.sort_by(|a, b| a.near_miss_id.cmp(&b.near_miss_id));
        for n in &mut near {
            n.execution.duration_us = 0;
        }
        (rot, near)
    })
}

/// Whether a commit of `table` carries a mark whose app id contains `app`.
fn marked(repo: &Path, table: &str, app: &str) -> bool {
    let Ok(dir) = std::fs::read_dir(repo.join("tables").join(table).join("_delta_log")) else { return false };
    dir.filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().ends_with(".json"))
        .any(|e| std::fs::read_to_string(e.path()).is_ok_and(|t| t.contains("\"txn\"") && t.contains(app)))
}

fn shard(repo: &Path, args: &[&str], env: &[(&str, &str)]) -> Child {
    let mut c = bin();
    c.args(["engine", "run", s(repo), "--seed", "4", "--batch", "5", "--shards", "3"]).args(args);
    for k in ["JOB_COMPLETION_INDEX", "SLURM_ARRAY_TASK_ID", "SLURM_ARRAY_TASK_MIN"] {
        c.env_remove(k);
    }
    for (k, v) in env {
        c.env(k, v);
    }
    c.stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap()
}

fn succeeds(child: Child) {
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "a shard failed: {}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn three_shard_processes_one_killed_and_rerun_equal_the_shards_run_in_one_process() {
    let dir = tempfile::tempdir().unwrap();
    let (single, sharded) = (dir.path().join("single"), dir.path().join("sharded"));
    for repo in [&single, &sharded] {
        ok(&["init", s(repo)]);
        ok(&["toolworld", "generate", s(repo), "--tasks", "300", "--seed", "8"]);
    }
    ok(&["engine", "run", s(&single), "--seed", "4", "--batch", "5", "--shards", "3"]);

    // Shard 0 from a Slurm array numbered from 1, shard 2 from a Kubernetes Indexed Job, shard 1
    // by flag: all three at once on one repository.
    let first = shard(&sharded, &[], &[("SLURM_ARRAY_TASK_ID", "1"), ("SLURM_ARRAY_TASK_MIN", "1")]);
    let mut killed = shard(&sharded, &["--shard", "1"], &[]);
    let last = shard(&sharded, &[], &[("JOB_COMPLETION_INDEX", "2")]);
    let committed = || marked(&sharded, "rot", "shard-1-of-3");
    kill_when(&mut killed, "shard 1", Duration::from_secs(300), committed, Duration::ZERO);
    succeeds(first);
    succeeds(last);
    let (partial, _) = rows(&sharded);
    let (want_rot, want_near) = rows(&single);
    assert!(partial.len() < want_rot.len(), "{} of {} rows after the kill", partial.len(), want_rot.len());

    let rerun = ok(&["engine", "run", s(&sharded), "--seed", "4", "--batch", "5", "--shards", "3", "--shard", "1"]);
    assert!(rerun.contains("resuming"), "{rerun}");
    let again = ok(&["engine", "run", s(&sharded), "--seed", "4", "--batch", "5", "--shards", "3", "--shard", "0"]);
    assert!(again.contains("nothing to do"), "{again}");

    let (rot, near) = rows(&sharded);
    assert!(want_rot.len() > 100, "{} RoT rows", want_rot.len());
    assert_eq!(rot.len(), want_rot.len());
    assert_eq!(rot, want_rot, "the shards' RoT rows differ from one process's");
    assert_eq!(near, want_near, "the shards' near-miss rows differ from one process's");
    let run_ids: std::collections::BTreeSet<&str> = rot.iter().map(|r| r.engine_run_id.as_str()).collect();
    assert_eq!(run_ids.len(), 1, "one run, one id: {run_ids:?}");
    ok(&["snapshot", "create", s(&sharded), "after-shards"]);
    assert!(ok(&["snapshot", "verify", s(&sharded), "after-shards"]).contains("verified"));
}

#[test]
fn a_shard_index_out_of_range_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("r");
    ok(&["init", s(&repo)]);
    let err = crate::fails(&["engine", "run", s(&repo), "--shards", "2", "--shard", "2"]);
    assert!(err.contains("shard 2 of 2"), "{err}");
    let out =
        bin().args(["engine", "run", s(&repo), "--shards", "2"]).env("JOB_COMPLETION_INDEX", "x").output().unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("JOB_COMPLETION_INDEX=x"));
}
