//! Integration tests of the external formats: ingest of every format (our fixtures, and the
//! real samples in `../shared/data` when present), rejects, and publishing.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use regrpo_datasets::{Repository, snapshot};
use regrpo_formats::ingest::{self, Format, IngestOptions};
use regrpo_formats::publish::{PublishFormat, PublishOptions, publish};
use regrpo_schemas::{Reject, Rot, Trajectory};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

fn fixture(rel: &str) -> PathBuf {
    workspace().join("fixtures").join(rel)
}

/// `../shared/data` beside the workspace (or `REGRPO_SHARED_DATA`), when it exists.
fn shared_data() -> Option<PathBuf> {
    let dir = std::env::var_os("REGRPO_SHARED_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join("..").join("shared").join("data"));
    if dir.join("mat").is_dir() {
        Some(dir)
    } else {
        eprintln!("skipped: no shared data at {} (set REGRPO_SHARED_DATA)", dir.display());
        None
    }
}

async fn fresh_repo(dir: &tempfile::TempDir) -> Repository {
    Repository::init(dir.path().join("repo")).await.unwrap()
}

async fn ingest(repo: &Repository, format: Format, paths: &[PathBuf]) -> ingest::IngestSummary {
    ingest::ingest(repo, format, paths, &IngestOptions::default()).await.unwrap()
}

fn sorted<T, K: Ord>(mut v: Vec<T>, key: impl Fn(&T) -> K) -> Vec<T> {
    v.sort_by_key(key);
    v
}

/// Every stored action parses and prints back to exactly the stored text.
fn assert_actions_round_trip(trajectories: &[Trajectory], rots: &[Rot]) -> usize {
    let mut n = 0;
    let actions = trajectories
        .iter()
        .flat_map(|t| t.steps.iter().filter_map(|s| s.action.as_ref()))
        .chain(rots.iter().flat_map(|r| [&r.failed_action, &r.corrected_action]));
    for a in actions {
        let parsed = a.parse().unwrap_or_else(|e| panic!("{} does not parse: {e}", a.raw));
        assert_eq!(parsed.to_text(), a.raw, "action does not print back identically");
        assert_eq!(parsed.tool(), a.tool);
        n += 1;
    }
    n
}

/// What the repository holds equals what the readers produce in memory, field by field.
async fn assert_read_back_equals(repo: &Repository, inputs: &[(Format, PathBuf)]) {
    let mut want_t = Vec::new();
    let mut want_r = Vec::new();
    for (format, path) in inputs {
        let c = ingest::read_file(*format, path, None, "batch").unwrap();
        want_t.extend(c.trajectories);
        want_r.extend(c.rots);
    }
    let mut got_t = repo.read::<Trajectory>(None).await.unwrap();
    for t in &mut got_t {
        t.ingest_batch = "batch".into();
    }
    let got_r = repo.read::<Rot>(None).await.unwrap();
    let key = |t: &Trajectory| t.trajectory_id.clone();
    assert_eq!(sorted(got_t, key), sorted(want_t, key));
    let key = |r: &Rot| r.rot_id.clone();
    assert_eq!(sorted(got_r, key), sorted(want_r, key));
}

fn count_by_source(ts: &[Trajectory], source: &str) -> usize {
    ts.iter().filter(|t| t.source == source).count()
}

#[tokio::test]
async fn fixtures_of_every_format_ingest_round_trip_and_dedupe() {
    let dir = tempfile::tempdir().unwrap();
    let repo = fresh_repo(&dir).await;
    let inputs = vec![
        (Format::Regrpo, fixture("regrpo/rot_sample.json")),
        (Format::Regrpo, fixture("regrpo/clean_sample.json")),
        (Format::Mat, fixture("mat/trajectories.json")),
        (Format::Bfcl, fixture("bfcl/questions.json")),
        (Format::Gta, fixture("gta/dataset.json")),
        (Format::Openai, fixture("openai/chat.jsonl")),
    ];
    for (f, p) in &inputs {
        let s = ingest(&repo, *f, std::slice::from_ref(p)).await;
        assert_eq!(s.rejected, 0, "{}", p.display());
    }
    let ts = repo.read::<Trajectory>(None).await.unwrap();
    let rots = repo.read::<Rot>(None).await.unwrap();
    assert_eq!(ts.len(), 18);
    assert_eq!(rots.len(), 4);
    assert!(assert_actions_round_trip(&ts, &rots) > 20);
    assert_read_back_equals(&repo, &inputs).await;

    // The same inputs again: nothing added, one version per table unchanged.
    let before = repo.versions().await.unwrap();
    for (f, p) in &inputs {
        let s = ingest(&repo, *f, std::slice::from_ref(p)).await;
        assert_eq!((s.trajectories_added, s.rot_added, s.commits), (0, 0, 0));
    }
    assert_eq!(repo.versions().await.unwrap(), before);

    // Shapes that matter downstream.
    let gta = ts.iter().find(|t| t.source == "gta" && t.source_id == "0").unwrap();
    assert_eq!(gta.steps.len(), 2);
    assert_eq!(
        gta.steps[0].observation.as_ref().unwrap().text,
        "(10, 20, 80, 40) Coffee 3.50\n(10, 50, 80, 70) Bagel 2.25"
    );
    assert!(gta.tool_specs.contains("\"required\":[\"image\"]"));
    let bfcl = ts.iter().find(|t| t.source_id == "fx_simple_2").unwrap();
    let args: serde_json::Value = serde_json::from_str(&bfcl.steps[0].action.as_ref().unwrap().arguments).unwrap();
    assert_eq!(args, serde_json::json!({"route": ["Paris", "Rome"], "passengers": {"adults": 2}, "cabin": "economy"}));
    let mat = ts.iter().find(|t| t.source_id == "fxm2").unwrap();
    assert!(mat.steps[1].action.is_none(), "a message without code has no action");
    assert_eq!(mat.steps[1].observation.as_ref().unwrap().status, regrpo_schemas::ExecStatus::ToolError);
    let rot = rots.iter().find(|r| r.error_type == "GroundingDrift").unwrap();
    let (a, b) = (rot.evidence_start.unwrap() as usize, rot.evidence_end.unwrap() as usize);
    assert_eq!(&rot.failed_observation[a..b], "12.50");
}

#[tokio::test]
async fn shared_data_gives_exact_counts_and_round_trips() {
    let Some(data) = shared_data() else { return };
    let dir = tempfile::tempdir().unwrap();
    let repo = fresh_repo(&dir).await;
    let inputs = vec![
        (Format::Mat, data.join("mat/mm_traj_subset.json")),
        (Format::Bfcl, data.join("bfcl/simple_python.json")),
        (Format::Regrpo, data.join("regrpo/rot_train.sample.json")),
        (Format::Regrpo, data.join("regrpo/mat_train.sample.json")),
    ];
    for (f, p) in &inputs {
        let s = ingest(&repo, *f, std::slice::from_ref(p)).await;
        assert_eq!(s.rejected, 0, "{}", p.display());
    }
    let ts = repo.read::<Trajectory>(None).await.unwrap();
    let rots = repo.read::<Rot>(None).await.unwrap();
    assert_eq!(count_by_source(&ts, "mat"), 94);
    assert_eq!(count_by_source(&ts, "bfcl"), 400);
    // 6 clean trajectories, plus the 6 corrected trajectories the RoT records contain.
    let regrpo: Vec<_> = ts.iter().filter(|t| t.source == "regrpo").collect();
    assert_eq!(regrpo.iter().filter(|t| t.source_file.ends_with("mat_train.sample.json")).count(), 6);
    assert_eq!(regrpo.iter().filter(|t| t.source_file.ends_with("rot_train.sample.json")).count(), 6);
    assert_eq!(rots.len(), 6);
    assert!(rots.iter().all(|r| ts.iter().any(|t| t.trajectory_id == r.trajectory_id)));
    let n = assert_actions_round_trip(&ts, &rots);
    assert!(n > 239 + 400, "only {n} actions");
    assert_read_back_equals(&repo, &inputs).await;
    for (f, p) in &inputs {
        let s = ingest(&repo, *f, std::slice::from_ref(p)).await;
        assert_eq!(s.trajectories_added + s.rot_added, 0);
    }
    assert!(repo.read::<Reject>(None).await.unwrap().is_empty());
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

const GOOD_CHAT: &str = r#"{"messages":[{"role":"user","content":"hi"},{"role":"assistant","content":null,"tool_calls":[{"type":"function","function":{"name":"f","arguments":"{\"x\":1}"}}]},{"role":"tool","content":"ok"}]}"#;

#[tokio::test]
async fn malformed_inputs_end_in_rejects_and_the_good_records_go_in() {
    let dir = tempfile::tempdir().unwrap();
    let repo = fresh_repo(&dir).await;
    let good_mat = std::fs::read_to_string(fixture("mat/trajectories.json")).unwrap();
    let records: Vec<serde_json::Value> = serde_json::from_str(&good_mat).unwrap();
    let one = records[0].to_string();

    let truncated = format!("[{one}, {}", &one[..one.len() / 2]);
    let mut wrong = records[1].clone();
    wrong["conversations"][1]["value"] = serde_json::json!(5);
    let wrong_type = format!("[{one}, {wrong}]");
    let mut utf8 = format!("[{}, ", records[2]).into_bytes();
    utf8.extend_from_slice(b"{\"id\": \"bad\xff\xfe\", \"conversations\": []}]");
    let cases: Vec<(PathBuf, &str)> = vec![
        (write(dir.path(), "truncated.json", truncated.as_bytes()), "truncated"),
        (write(dir.path(), "wrong_type.json", wrong_type.as_bytes()), "conversations[1].value"),
        (write(dir.path(), "utf8.json", &utf8), "UTF-8"),
        (write(dir.path(), "empty.json", b""), "empty file"),
    ];
    for (path, expect) in &cases {
        let s = ingest(&repo, Format::Mat, std::slice::from_ref(path)).await;
        assert_eq!(s.rejected, 1, "{}", path.display());
        let rejects = repo.read::<Reject>(None).await.unwrap();
        let r = rejects.iter().find(|r| r.file.ends_with(path.file_name().unwrap().to_str().unwrap())).unwrap();
        assert!(r.reason.contains(expect), "{}: reason `{}` lacks `{expect}`", path.display(), r.reason);
    }
    // The good records beside the bad ones went in: records 0 (twice, deduplicated) and 2.
    assert_eq!(repo.read::<Trajectory>(None).await.unwrap().len(), 2);

    // JSON Lines: a 20 MB line of garbage and a nesting bomb between good lines.
    let mut lines = format!("{GOOD_CHAT}\n{{\"messages\": \"").into_bytes();
    lines.extend(std::iter::repeat_n(b'x', 20 << 20));
    lines.extend_from_slice(b"\n{\"messages\": [], \"tools\": ");
    lines.extend(std::iter::repeat_n(b'[', 100_000));
    lines.extend(std::iter::repeat_n(b']', 100_000));
    lines.extend_from_slice(b"}");
    lines.extend_from_slice(format!("\n{}\n", GOOD_CHAT.replace("hi", "hello")).as_bytes());
    let path = write(dir.path(), "chat.jsonl", &lines);
    let s = ingest(&repo, Format::Openai, std::slice::from_ref(&path)).await;
    assert_eq!((s.records_read, s.trajectories_added, s.rejected), (4, 2, 2));
    let rejects = repo.read::<Reject>(None).await.unwrap();
    let by_line = |l: i64| rejects.iter().find(|r| r.file.ends_with("chat.jsonl") && r.line == Some(l)).unwrap();
    assert!(by_line(2).reason.contains("EOF") || by_line(2).reason.contains("end of"), "{}", by_line(2).reason);
    assert!(by_line(3).reason.contains("nesting deeper than 128"), "{}", by_line(3).reason);
    assert!(by_line(2).excerpt.len() <= 160);

    // Rejects are content-addressed too: a rerun adds no reject twice, also when the same
    // file is given by another spelling of its path.
    let before = rejects.len();
    ingest(&repo, Format::Openai, std::slice::from_ref(&path)).await;
    assert_eq!(repo.read::<Reject>(None).await.unwrap().len(), before);
    std::fs::create_dir(dir.path().join("sub")).unwrap();
    let other_spelling = dir.path().join("sub").join("..").join("chat.jsonl");
    ingest(&repo, Format::Openai, &[other_spelling]).await;
    assert_eq!(repo.read::<Reject>(None).await.unwrap().len(), before);
}

#[tokio::test]
async fn one_bad_first_line_never_costs_a_chat_file() {
    // Each used to fail or refuse the whole file ("stream did not contain valid UTF-8"; an
    // array line taken for a JSON document), losing the good line after it.
    let dir = tempfile::tempdir().unwrap();
    let repo = fresh_repo(&dir).await;
    let cut = &GOOD_CHAT[..GOOD_CHAT.len() / 2];
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("utf8.jsonl", b"{\"messages\": [{\"role\": \"user\", \"content\": \"caf\xe9\"}]}".to_vec(), "UTF-8"),
        ("array.jsonl", format!("[{GOOD_CHAT}]").into_bytes(), "found a JSON array"),
        ("cut.jsonl", cut.as_bytes().to_vec(), "EOF"),
        ("opened.jsonl", b"{\"messages\": [".to_vec(), "EOF"),
        ("scalar.jsonl", b"42".to_vec(), "found something else"),
    ];
    for (name, first, expect) in cases {
        let mut bytes = first;
        bytes.extend(format!("\n{}\n", GOOD_CHAT.replace("hi", "hello")).as_bytes());
        let path = write(dir.path(), name, &bytes);
        let s = ingest(&repo, Format::Openai, &[path]).await;
        assert_eq!((s.records_read, s.rejected, s.trajectories_added + s.duplicates), (2, 1, 1), "{name}");
        let rejects = repo.read::<Reject>(None).await.unwrap();
        let r = rejects.iter().find(|r| r.file.ends_with(name)).unwrap();
        assert_eq!((r.line, r.byte_offset), (Some(1), 0), "{name}");
        assert!(r.reason.contains(expect), "{name}: reason `{}` lacks `{expect}`", r.reason);
    }
}

#[tokio::test]
async fn bfcl_without_answers_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let repo = fresh_repo(&dir).await;
    let q = write(dir.path(), "q.json", std::fs::read(fixture("bfcl/questions.json")).unwrap().as_slice());
    let err = ingest::ingest(&repo, Format::Bfcl, &[q], &IngestOptions::default()).await.unwrap_err();
    assert!(err.to_string().contains("no BFCL answers file found"), "{err}");
    assert!(err.to_string().contains("--answers"), "{err}");
    // The answers of another questions file: one error naming both files, no rejects.
    let other = write(dir.path(), "other.answers.json", b"{\"id\": \"simple_999\", \"ground_truth\": []}\n");
    let opts = IngestOptions { answers: Some(other), ..IngestOptions::default() };
    let q = dir.path().join("q.json");
    let err = ingest::ingest(&repo, Format::Bfcl, &[q], &opts).await.unwrap_err().to_string();
    assert!(err.contains("other.answers.json") && err.contains("none of these questions' ids"), "{err}");
    assert!(repo.read::<Reject>(None).await.unwrap().is_empty());

    // One unreadable answers line costs only its own question, and its reject names the line.
    let answers = std::fs::read(fixture("bfcl/questions.answers.json")).unwrap();
    let mut lines: Vec<&[u8]> = answers.split(|b| *b == b'\n').filter(|l| !l.is_empty()).collect();
    lines[1] = b"{\"id\": \"fx_simple_1\", \"ground_truth\": [\xff";
    let bad = write(dir.path(), "bad.answers.json", &lines.join(&b'\n'));
    let opts = IngestOptions { answers: Some(bad), ..IngestOptions::default() };
    let s = ingest::ingest(&repo, Format::Bfcl, &[dir.path().join("q.json")], &opts).await.unwrap();
    assert_eq!((s.trajectories_added, s.rejected), (lines.len() - 1, 1));
    let rejects = repo.read::<Reject>(None).await.unwrap();
    assert!(
        rejects[0].reason.contains("fx_simple_1") && rejects[0].reason.contains("line 2:"),
        "{}",
        rejects[0].reason
    );
}

/// A repository with RoT and clean rows of three fixture formats, snapshotted as `v1`.
async fn publishable_repo(dir: &tempfile::TempDir) -> Repository {
    let repo = fresh_repo(dir).await;
    ingest(&repo, Format::Regrpo, &[fixture("regrpo/rot_sample.json"), fixture("regrpo/clean_sample.json")]).await;
    ingest(&repo, Format::Mat, &[fixture("mat/trajectories.json")]).await;
    ingest(&repo, Format::Openai, &[fixture("openai/chat.jsonl")]).await;
    // Few trajectories: a large test share, so every split gets some.
    let split = regrpo_schemas::SplitSpec::new([0.5, 0.25, 0.25], 0).unwrap();
    snapshot::create_with_split(&repo, "v1", None, split).await.unwrap();
    repo
}

#[tokio::test]
async fn publish_hf_is_leakage_safe_byte_identical_and_names_its_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let repo = publishable_repo(&dir).await;
    let opts = PublishOptions::default();
    let a = publish(&repo, "v1", &dir.path().join("a"), &opts).await.unwrap();
    let b = publish(&repo, "v1", &dir.path().join("b"), &opts).await.unwrap();
    assert_eq!(a.files.len(), b.files.len());
    for (fa, fb) in a.files.iter().zip(&b.files) {
        assert_eq!(
            std::fs::read(fa).unwrap(),
            std::fs::read(fb).unwrap(),
            "{} differs between two publishes",
            fa.display()
        );
    }
    // Every source trajectory is in exactly one split.
    let mut seen: std::collections::HashMap<String, String> = Default::default();
    let mut total = 0;
    for f in a.files.iter().filter(|f| f.extension().is_some_and(|e| e == "parquet")) {
        let split = f.file_name().unwrap().to_string_lossy().split('-').next().unwrap().to_string();
        let reader =
            parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(f).unwrap())
                .unwrap()
                .build()
                .unwrap();
        for batch in reader {
            let batch = batch.unwrap();
            total += batch.num_rows();
            let col = batch.column_by_name("source_trajectory_id").unwrap();
            let col = col.as_any().downcast_ref::<arrow::array::StringArray>().unwrap();
            for t in col.iter().flatten() {
                if let Some(other) = seen.insert(t.to_string(), split.clone()) {
                    assert_eq!(other, split, "trajectory {t} is in two splits");
                }
            }
        }
    }
    assert_eq!(total, a.rows.values().sum::<usize>());
    // The card claims the same counts, and names the snapshot and versions.
    let card = std::fs::read_to_string(dir.path().join("a/README.md")).unwrap();
    for (split, n) in &a.rows {
        assert!(
            card.contains(&format!("  - name: {split}\n")) && card.contains(&format!("num_examples: {n}\n")),
            "{card}"
        );
    }
    assert!(card.contains("snapshot `v1`") && card.contains("data/train-*"), "{card}");
    // No source license was given: the card does not claim one for rows it did not write.
    assert!(card.contains("license: other\n") && card.contains("| openai | "), "{card}");
    assert_eq!(a.unlicensed_sources, ["mat", "openai", "regrpo"]);
    let licensed = PublishOptions {
        source_licenses: ["mat", "openai", "regrpo"]
            .iter()
            .map(|s| (s.to_string(), "apache-2.0".to_string()))
            .collect(),
        ..opts.clone()
    };
    let l = publish(&repo, "v1", &dir.path().join("l"), &licensed).await.unwrap();
    let card = std::fs::read_to_string(dir.path().join("l/README.md")).unwrap();
    assert!(card.contains("license: apache-2.0\n") && l.unlicensed_sources.is_empty(), "{card}");
    let croissant: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("a/croissant.json")).unwrap()).unwrap();
    assert_eq!(croissant["conformsTo"], "http://mlcommons.org/croissant/1.0");
    let provenance: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("a/provenance.json")).unwrap()).unwrap();
    assert_eq!(provenance["snapshot"], "v1");
    assert!(publish(&repo, "v1", &dir.path().join("a"), &opts).await.is_err(), "refuses a used folder");

    // openai-jsonl: one chat per line, the same split sizes.
    let o = publish(
        &repo,
        "v1",
        &dir.path().join("o"),
        &PublishOptions { format: PublishFormat::OpenaiJsonl, ..opts.clone() },
    )
    .await
    .unwrap();
    assert_eq!(o.rows, a.rows);
    let train = std::fs::read_to_string(dir.path().join("o/train.jsonl")).unwrap();
    assert_eq!(train.lines().count(), a.rows["train"]);
    let first: serde_json::Value = serde_json::from_str(train.lines().next().unwrap()).unwrap();
    assert!(first["messages"][0]["role"].is_string());
    // Declared tools are in the `tools` slot and, rendered, in the system turn the policy sees.
    let mut with_tools = 0;
    for split in o.rows.keys() {
        let Ok(text) = std::fs::read_to_string(dir.path().join(format!("o/{split}.jsonl"))) else { continue };
        for line in text.lines() {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            let Some(tools) = v["tools"].as_array() else { continue };
            with_tools += 1;
            let system = v["messages"][0]["content"].as_str().unwrap();
            for t in tools {
                assert_eq!(t["type"], "function");
                let name = t["function"]["name"].as_str().unwrap();
                assert!(system.contains(name), "{name} is not in the system turn: {system}");
            }
            if tools[0]["function"]["name"] == "get_weather" {
                assert!(
                    system.contains("- get_weather(city: string, unit?: \"c\"|\"f\"): Weather for a city."),
                    "{system}"
                );
            }
        }
    }
    assert!(with_tools >= 2, "the chat fixture's two conversations declare tools");
}

#[tokio::test]
async fn every_publish_format_applies_the_same_gate_and_splits_and_provenance_says_what_was_done() {
    let dir = tempfile::tempdir().unwrap();
    let repo = publishable_repo(&dir).await;
    // Reference RoT rows that carry no verification of ours come in unverified.
    let rots = repo.read::<Rot>(None).await.unwrap();
    assert!(rots.iter().any(|r| !r.verified), "the fixture has unverified RoT rows");
    let mut published = BTreeMap::new();
    for verified_only in [true, false] {
        for format in [PublishFormat::Hf, PublishFormat::OpenaiJsonl, PublishFormat::RegrpoJson] {
            let name = match format {
                PublishFormat::Hf => "hf",
                PublishFormat::OpenaiJsonl => "openai-jsonl",
                PublishFormat::RegrpoJson => "regrpo-json",
            };
            let out = dir.path().join(format!("{name}-{verified_only}"));
            let opts = PublishOptions { format, verified_only, ..Default::default() };
            let p = publish(&repo, "v1", &out, &opts).await.unwrap();
            let provenance: serde_json::Value =
                serde_json::from_str(&std::fs::read_to_string(out.join("provenance.json")).unwrap()).unwrap();
            assert_eq!(provenance["options"]["verified_only"], verified_only);
            assert_eq!(provenance["rows"], serde_json::to_value(&p.rows).unwrap());
            if format == PublishFormat::RegrpoJson {
                // The records in the files are the rows provenance counts, split by split.
                for (split, n) in &p.rows {
                    let mut records = 0;
                    for kind in ["rot", "clean"] {
                        let Ok(text) = std::fs::read_to_string(out.join(format!("{kind}_{split}.json"))) else {
                            continue;
                        };
                        let v: Vec<serde_json::Value> = serde_json::from_str(&text).unwrap();
                        if kind == "rot" && verified_only {
                            assert!(v.iter().all(|r| r["rot_meta"]["verified"] == true), "{split}: an unverified row");
                        }
                        records += v.len();
                    }
                    assert_eq!(records, *n, "regrpo-json {split}");
                }
                // What was published reads back in: the same RoT conversations, row for row.
                let back = Repository::init(dir.path().join(format!("back-{verified_only}"))).await.unwrap();
                let files: Vec<PathBuf> = p.files.iter().filter(|f| !f.ends_with("provenance.json")).cloned().collect();
                assert_eq!(ingest(&back, Format::Regrpo, &files).await.rejected, 0);
                let conversations = |rs: Vec<Rot>| {
                    let mut v: Vec<String> =
                        rs.iter().map(|r| serde_json::to_string(&r.conversation).unwrap()).collect();
                    v.sort();
                    v
                };
                let sent: Vec<Rot> = rots.iter().filter(|r| r.verified || !verified_only).cloned().collect();
                assert_eq!(conversations(back.read::<Rot>(None).await.unwrap()), conversations(sent));
            }
            published.insert((name, verified_only), p.rows);
        }
    }
    for verified_only in [true, false] {
        let hf = &published[&("hf", verified_only)];
        assert_eq!(&published[&("openai-jsonl", verified_only)], hf);
        assert_eq!(&published[&("regrpo-json", verified_only)], hf);
    }
    assert!(
        published[&("hf", false)].values().sum::<usize>() > published[&("hf", true)].values().sum::<usize>(),
        "--include-unverified publishes more rows"
    );

    // An empty split gets no file and no entry in the card's configs or in Croissant.
    let out = dir.path().join("small");
    let no_test = regrpo_schemas::SplitSpec::new([0.5, 0.5, 0.0], 0).unwrap();
    snapshot::create_with_split(&repo, "v1-no-test", None, no_test).await.unwrap();
    let opts = PublishOptions { verified_only: false, ..Default::default() };
    let p = publish(&repo, "v1-no-test", &out, &opts).await.unwrap();
    assert_eq!(p.empty_splits, vec!["test".to_string()]);
    assert!(!p.files.iter().any(|f| f.file_name().unwrap().to_string_lossy().starts_with("test-")));
    let card = std::fs::read_to_string(out.join("README.md")).unwrap();
    assert!(!card.contains("split: test") && !card.contains("- name: test\n"), "{card}");
    assert!(!std::fs::read_to_string(out.join("croissant.json")).unwrap().contains("test-"));
}

#[tokio::test]
async fn chat_ingest_reads_sharegpt_roles_and_refuses_a_json_document_in_one_message() {
    let dir = tempfile::tempdir().unwrap();
    let repo = fresh_repo(&dir).await;
    let s = ingest(&repo, Format::Openai, &[fixture("openai/sharegpt.jsonl")]).await;
    assert_eq!((s.trajectories_added, s.rejected), (2, 0));
    let ts = sorted(repo.read::<Trajectory>(None).await.unwrap(), |t| t.source_id.clone());
    assert_eq!(ts[0].source_id, "sg-1");
    assert_eq!(ts[0].task, "Weather in Oslo?");
    assert_eq!(ts[0].steps[0].action.as_ref().unwrap().tool, "get_weather");
    assert_eq!(ts[0].steps[0].observation.as_ref().unwrap().text, "{\"temp_c\": 4}");
    assert_eq!(ts[0].final_answer.as_deref(), Some("It is 4 degrees in Oslo."));
    assert_eq!(ts[1].final_answer.as_deref(), Some("4"));

    // A pretty-printed JSON array given as JSON Lines: one error naming the file, no rejects.
    let chats: Vec<serde_json::Value> = std::fs::read_to_string(fixture("openai/chat.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let pretty = write(dir.path(), "chats.json", serde_json::to_string_pretty(&chats).unwrap().as_bytes());
    let before = repo.read::<Reject>(None).await.unwrap().len();
    let err = ingest::ingest(&repo, Format::Openai, std::slice::from_ref(&pretty), &IngestOptions::default())
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("chats.json") && err.contains("not JSON Lines"), "{err}");
    assert_eq!(repo.read::<Reject>(None).await.unwrap().len(), before);
}
