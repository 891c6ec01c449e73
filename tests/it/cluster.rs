//! SQL on a Ballista cluster of real processes: `regrpo cluster scheduler` and `regrpo cluster
//! executor` as two children on free loopback ports; every named query and a plain statement
//! with `--cluster` give what they give in one process.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::{Killed, bin, free_port, ok, run, s};

fn spawn(args: &[&str]) -> Killed {
    Killed(bin().args(args).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap())
}

/// `regrpo query` of every library query at snapshot `s2`, as CSV, here or on `cluster`; but
/// the two with a UNION under ORDER BY, which a cluster refuses (Ballista 55 answers some with
/// no rows; see `regrpo_queries::cluster::check_plan`).
fn every_named_query(repo: &Path, cluster: Option<&str>) -> Vec<(String, String)> {
    regrpo_queries::library::library()
        .iter()
        .filter(|q| !["snapshot_diff", "unverified_and_rejected"].contains(&q.name.as_str()))
        .map(|q| {
            let mut args = vec!["query", s(repo), q.name.as_str(), "--snapshot", "s2", "--format", "csv"];
            if let Some(url) = cluster {
                args.extend(["--cluster", url]);
            }
            (q.name.clone(), ok(&args))
        })
        .collect()
}

#[test]
fn a_scheduler_and_an_executor_as_processes_answer_every_named_query_as_one_process_does() {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    ok(&["init", s(&repo)]);
    for (seed, name) in [("8", "s1"), ("9", "s2")] {
        ok(&["toolworld", "generate", s(&repo), "--tasks", "30", "--seed", seed]);
        ok(&["engine", "run", s(&repo), "--seed", "4"]);
        ok(&["snapshot", "create", s(&repo), name]);
    }

    let scheduler = format!("127.0.0.1:{}", free_port());
    let _scheduler = spawn(&["cluster", "scheduler", "--bind", &scheduler]);
    let (flight, grpc) = (free_port(), free_port());
    let _executor = spawn(&[
        "cluster",
        "executor",
        "--scheduler",
        &scheduler,
        "--bind",
        &format!("127.0.0.1:{flight}"),
        "--grpc-port",
        &grpc.to_string(),
        "--concurrent-tasks",
        "2",
    ]);
    let url = format!("df://{scheduler}");
    let count = "SELECT error_type, count(*) AS n FROM rot GROUP BY 1 ORDER BY 1";
    let started = Instant::now();
    let on_cluster = loop {
        let out = run(&["sql", s(&repo), count, "--format", "csv", "--cluster", &url]);
        if out.status.success() {
            break String::from_utf8(out.stdout).unwrap();
        }
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "the cluster did not answer in 90 s: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    assert_eq!(on_cluster, ok(&["sql", s(&repo), count, "--format", "csv"]));
    assert!(on_cluster.lines().count() > 3, "{on_cluster}");

    let here = every_named_query(&repo, None);
    let there = every_named_query(&repo, Some(&url));
    for ((name, want), (_, got)) in here.iter().zip(&there) {
        assert_eq!(got, want, "`{name}` on the cluster differs from one process");
    }

    // A join across tables, with our functions, is planned here and run there.
    let joined = "SELECT error_family(r.error_type) AS family, count(*) AS n, sum(token_count(r.evidence)) AS tokens \
                  FROM rot r JOIN near_misses m ON r.near_miss_id = m.near_miss_id \
                  WHERE icontains(m.execution['text'], 'not') GROUP BY 1 ORDER BY 1";
    assert_eq!(
        ok(&["sql", s(&repo), joined, "--format", "csv", "--cluster", &url]),
        ok(&["sql", s(&repo), joined, "--format", "csv"])
    );
    let diff = crate::fails(&[
        "query",
        s(&repo),
        "snapshot_diff",
        "--param",
        "base=s1",
        "--param",
        "head=s2",
        "--cluster",
        &url,
    ]);
    assert!(diff.contains("UNION under ORDER BY"), "{diff}");
    let unverified = crate::fails(&["query", s(&repo), "unverified_and_rejected", "--cluster", &url]);
    assert!(unverified.contains("UNION under ORDER BY"), "{unverified}");
    // Writes stay refused; a bad cluster URL is named.
    let write = run(&["sql", s(&repo), "DELETE FROM rot", "--cluster", &url]);
    assert!(!write.status.success());
    let bad = crate::fails(&["sql", s(&repo), "SELECT 1", "--cluster", "127.0.0.1:1"]);
    assert!(bad.contains("df://HOST:PORT"), "{bad}");
}
