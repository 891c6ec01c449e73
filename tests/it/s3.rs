//! Repositories on S3: every command on an `s3://` repository served by a local S3-compatible
//! server (moto, started here on a free loopback port), compared with the same commands on a
//! local folder; and engine shards as concurrent processes against the bucket.
//!
//! Needs `moto_server` (`pip install 'moto[server]>=5.2.1'`); where it is missing the tests are
//! ignored, naming it (build.rs); `.ci/run` installs it and sets `REGRPO_REQUIRE_S3=1`, which
//! makes its absence a build failure.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use regrpo_datasets::Repository;

use crate::{Killed, bin, fixture, free_port, s};

/// A moto S3 server on a free loopback port, with one bucket; killed on drop.
struct S3Server {
    _child: Killed,
    endpoint: String,
}

impl S3Server {
    fn start(bucket: &str) -> S3Server {
        let port = free_port();
        let program = std::env::var("REGRPO_MOTO_SERVER").unwrap_or_else(|_| "moto_server".into());
        let child = Command::new(&program)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {program}: {e}"));
        let server = S3Server { _child: Killed(child), endpoint: format!("http://127.0.0.1:{port}") };
        let started = Instant::now();
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(started.elapsed() < Duration::from_secs(60), "moto_server did not listen on {port} in 60 s");
            std::thread::sleep(Duration::from_millis(100));
        }
        // CreateBucket: a bare PUT of the bucket's path (moto does not check signatures).
        let mut c = TcpStream::connect(("127.0.0.1", port)).unwrap();
        write!(c, "PUT /{bucket} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            .unwrap();
        let mut reply = String::new();
        c.read_to_string(&mut reply).unwrap();
        assert!(reply.starts_with("HTTP/1.1 200"), "CreateBucket {bucket}: {reply}");
        server
    }

    /// The storage options a repository on this server needs (credentials come from the
    /// environment in `command`, as a user's would).
    fn options(&self) -> HashMap<String, String> {
        HashMap::from([
            ("aws_endpoint".to_string(), self.endpoint.clone()),
            ("aws_allow_http".to_string(), "true".to_string()),
            ("aws_region".to_string(), "us-east-1".to_string()),
            ("aws_access_key_id".to_string(), "test".to_string()),
            ("aws_secret_access_key".to_string(), "test".to_string()),
        ])
    }

    /// `regrpo …` against this server: credentials and region in the standard AWS variables,
    /// the endpoint as `--storage-option`s.
    fn command(&self, args: &[&str]) -> Command {
        let mut c = bin();
        c.args([
            "--storage-option",
            &format!("aws_endpoint={}", self.endpoint),
            "--storage-option",
            "aws_allow_http=true",
        ])
        .args(args)
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("AWS_REGION", "us-east-1")
        .env("REGRPO_CACHE_DIR", std::env::temp_dir().join(format!("regrpo-s3-test-{}", std::process::id())));
        for k in
            ["JOB_COMPLETION_INDEX", "SLURM_ARRAY_TASK_ID", "SLURM_ARRAY_TASK_MIN", "AWS_ENDPOINT_URL", "AWS_PROFILE"]
        {
            c.env_remove(k);
        }
        c
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.command(args).output().unwrap();
        assert!(out.status.success(), "regrpo {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    }

    fn open(&self, url: &str) -> Repository {
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(Repository::open_with(url, self.options())).unwrap()
    }
}

/// Asserts that the repository at `url` holds row for row the RoT and near-miss rows of the
/// local one at `here` (compared as shards.rs compares them), and that there are some.
fn assert_same_rows(server: &S3Server, here: &Path, url: &str, what: &str) {
    let local = tokio::runtime::Runtime::new().unwrap().block_on(Repository::open(here)).unwrap();
    let (want_rot, want_near) = crate::shards::rows_of(local);
    let (rot, near) = crate::shards::rows_of(server.open(url));
    assert!(want_rot.len() > 20, "{} RoT rows", want_rot.len());
    assert_eq!(rot, want_rot, "{what}: the RoT rows differ");
    assert_eq!(near, want_near, "{what}: the near-miss rows differ");
}

#[test]
#[cfg_attr(not(has_s3_server), ignore = "needs moto_server (pip install 'moto[server]>=5.2.1'); .ci/run installs it")]
fn every_command_runs_on_an_s3_repository_and_gives_what_a_local_one_gives() {
    let server = S3Server::start("regrpo");
    let dir = tempfile::tempdir().unwrap();
    let here = dir.path().join("local");
    let url = "s3://regrpo/team/repo";
    for repo in [s(&here), url] {
        server.ok(&["init", repo]);
        server.ok(&["toolworld", "generate", repo, "--tasks", "40", "--seed", "8"]);
        server.ok(&["ingest", repo, "--format", "openai", &fixture("openai/chat.jsonl")]);
        server.ok(&["engine", "run", repo, "--seed", "4", "--batch", "10"]);
        server.ok(&["snapshot", "create", repo, "s1"]);
    }
    // Refused twice, as a folder would: the manifest is written put-if-absent.
    let again = server.command(&["init", url]).output().unwrap();
    assert!(String::from_utf8_lossy(&again.stderr).contains("already holds"), "{again:?}");

    assert_same_rows(&server, &here, url, "S3 vs the local repository");

    let verified = server.ok(&["snapshot", "verify", url, "s1"]);
    assert!(verified.contains("verified"), "{verified}");
    assert!(server.ok(&["snapshot", "list", url]).contains("s1"));
    let counts = "SELECT error_type, count(*) FROM rot GROUP BY 1 ORDER BY 1";
    let sql = |repo: &str| server.ok(&["sql", repo, counts, "--snapshot", "s1", "--format", "csv"]);
    assert_eq!(sql(url), sql(s(&here)));
    let named =
        |repo: &str| server.ok(&["query", repo, "failures_by_error_type", "--snapshot", "s1", "--format", "csv"]);
    assert_eq!(named(url), named(s(&here)));

    // optimize rewrites; gc (no minimum age) removes a file no version or snapshot names (what
    // a killed writer leaves) and nothing that s1 or the latest versions pin.
    server.ok(&["optimize", url]);
    server.ok(&["snapshot", "create", url, "s2"]);
    let orphan = "team/repo/tables/rot/part-00000-orphan.parquet";
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        use object_store::ObjectStoreExt;
        let bucket = regrpo_datasets::store::s3_store(&"s3://regrpo".parse().unwrap(), &server.options()).unwrap();
        bucket.put(&orphan.into(), b"PAR1 not really".to_vec().into()).await.unwrap();
    });
    let gc = server.ok(&["gc", url, "--min-age", "0"]);
    assert!(gc.contains(": 1 unreferenced file(s) removed"), "{gc}");
    assert!(server.ok(&["snapshot", "verify", url, "s1"]).contains("verified"));
    assert_eq!(
        server.ok(&["sql", url, counts, "--snapshot", "s2", "--format", "csv"]),
        sql(url),
        "optimize changed what the table holds"
    );

    // publish to a local folder: the same files as from the local repository.
    let (pub_s3, pub_local) = (dir.path().join("pub-s3"), dir.path().join("pub-local"));
    for (repo, out) in [(url, &pub_s3), (s(&here), &pub_local)] {
        server.ok(&[
            "publish",
            repo,
            "--snapshot",
            "s1",
            "--out",
            s(out),
            "--format",
            "regrpo-json",
            "--include-unverified",
        ]);
    }
    let listing = |d: &Path| {
        let mut names: Vec<String> =
            std::fs::read_dir(d).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        names.sort();
        names
    };
    assert_eq!(listing(&pub_s3), listing(&pub_local));

    // train and eval read the snapshot by URL (sandboxes come down to the cache folder).
    let run = dir.path().join("run");
    server.ok(&[
        "train",
        "sft",
        url,
        "--snapshot",
        "s1",
        "--model",
        "tiny",
        "--out",
        s(&run),
        "--steps",
        "2",
        "--batch-size",
        "2",
        "--warmup",
        "1",
    ]);
    let eval =
        server.ok(&["eval", url, "--snapshot", "s1", "--model", s(&run), "--max-states", "3", "--max-tasks", "1"]);
    assert!(eval.to_lowercase().contains("recovery"), "{eval}");
    let runs = server.ok(&["sql", url, "SELECT kind FROM runs ORDER BY started_at", "--format", "csv"]);
    assert!(runs.contains("sft") && runs.contains("eval"), "{runs}");

    let bad = server.command(&["sql", "s3://no-such-bucket/r", "SELECT 1"]).output().unwrap();
    assert!(!bad.status.success());
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(err.contains("s3://no-such-bucket/r"), "{err}");
}

#[test]
#[cfg_attr(not(has_s3_server), ignore = "needs moto_server (pip install 'moto[server]>=5.2.1'); .ci/run installs it")]
fn two_shard_processes_on_s3_equal_one_local_process() {
    let server = S3Server::start("shards");
    let dir = tempfile::tempdir().unwrap();
    let here = dir.path().join("single");
    let url = "s3://shards/repo";
    for repo in [s(&here), url] {
        server.ok(&["init", repo]);
        server.ok(&["toolworld", "generate", repo, "--tasks", "60", "--seed", "8"]);
    }
    server.ok(&["engine", "run", s(&here), "--seed", "4", "--batch", "5", "--shards", "2"]);
    let shards: Vec<Child> = (0..2)
        .map(|i| {
            server
                .command(&[
                    "engine",
                    "run",
                    url,
                    "--seed",
                    "4",
                    "--batch",
                    "5",
                    "--shards",
                    "2",
                    "--shard",
                    &i.to_string(),
                ])
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for child in shards {
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "a shard failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    assert_same_rows(&server, &here, url, "the S3 shards vs one local process");
    let again = server.ok(&["engine", "run", url, "--seed", "4", "--batch", "5", "--shards", "2", "--shard", "1"]);
    assert!(again.contains("nothing to do"), "{again}");
    server.ok(&["snapshot", "create", url, "after-shards"]);
    assert!(server.ok(&["snapshot", "verify", url, "after-shards"]).contains("verified"));
}
