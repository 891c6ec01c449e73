//! The word index answers free text exactly as a scan does: for needles cut from the texts
//! (any length, any case, cut mid-word or at separators) and needles that match nothing, the
//! rows the index serves, filtered by the exact condition, are the rows a scan finds.

use std::collections::BTreeSet;

use arrow::array::AsArray;
use arrow::compute::cast;
use arrow::datatypes::DataType;
use datafusion::common::ScalarValue;
use regrpo_datasets::Repository;
use regrpo_engine::{EngineConfig, ToolSuite};
use regrpo_queries::{At, Session, TextIndex};
use regrpo_schemas::Rot;

/// Texts a word splitter can get wrong: case, accents, multi-byte separators, digits glued to
/// letters, a needle's separators at the text's ends.
const HOSTILE: [(&str, &str); 6] = [
    ("Straße — MAẞE: ÉTÉ été", "Ünïcödé ΣΊΣΥΦΟΣ σίσυφος; done"),
    ("path=/data/REPORT_4242.csv", "FileNotFoundError: 'report_4242.CSV' (errno 2)"),
    ("x", "a1b2c3__d4 e5-f6.g7"),
    ("“quoted” ‘text’", "tab\tseparated\nlines\r\nand\u{a0}nbsp"),
    ("emoji 🙂 between🙂words", "日本語のテキスト と 中文"),
    ("∅", "…ellipsis…"),
];

async fn scan_ids(session: &Session, table: &str, needle: &str) -> BTreeSet<String> {
    let sql = format!("SELECT rot_id FROM {table} WHERE icontains(evidence, $1) OR icontains(failed_observation, $1)");
    let df = session.sql(&sql).await.unwrap();
    let df = df.with_param_values(vec![ScalarValue::Utf8(Some(needle.to_string()))]).unwrap();
    let mut out = BTreeSet::new();
    for b in df.collect().await.unwrap() {
        let col = cast(b.column(0), &DataType::Utf8).unwrap();
        out.extend(col.as_string::<i32>().iter().flatten().map(str::to_string));
    }
    out
}

/// A few characters of `s` from char `start`, `len` chars long.
fn cut(s: &str, start: usize, len: usize) -> String {
    s.chars().skip(start).take(len).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_word_index_finds_what_a_scan_finds() {
    let dir = tempfile::tempdir().unwrap();
    let repo = Repository::init(dir.path()).await.unwrap();
    regrpo_engine::toolworld::generate_into(&repo, 30, 5, 4, || {}).await.unwrap();
    let cfg = EngineConfig { seed: 5, per_trajectory: 2, ..EngineConfig::default() };
    regrpo_engine::run::run(&repo, &ToolSuite::builtin(), &cfg, None).await.unwrap();

    // Hostile texts, as a second commit (a second file).
    let session = Session::open(&repo, At::Latest).await.unwrap();
    let batches = session.query("SELECT * FROM rot ORDER BY rot_id LIMIT 1").await.unwrap();
    let template = regrpo_schemas::from_batch::<Rot>(&batches[0]).unwrap().remove(0);
    let hostile: Vec<Rot> = HOSTILE
        .iter()
        .enumerate()
        .map(|(i, (evidence, observation))| Rot {
            rot_id: format!("hostile{i:02}"),
            evidence: evidence.to_string(),
            failed_observation: observation.to_string(),
            ..template.clone()
        })
        .collect();
    repo.commit(&hostile, "hostile texts").await.unwrap();

    let session = Session::open(&repo, At::Latest).await.unwrap();
    let index = TextIndex::build(&repo, &session, "rot", &["evidence", "failed_observation"]).await.unwrap().unwrap();
    let texts = session.query("SELECT evidence, failed_observation FROM rot ORDER BY rot_id").await.unwrap();
    let mut all: Vec<String> = Vec::new();
    for b in &texts {
        for c in 0..2 {
            let col = cast(b.column(c), &DataType::Utf8).unwrap();
            all.extend(col.as_string::<i32>().iter().flatten().map(str::to_string));
        }
    }
    assert!(index.rows() as usize * 2 == all.len(), "every row indexed: {} rows, {} texts", index.rows(), all.len());

    // Needles: cuts of every length from 1 to 24 chars at a spread of places, in the text's
    // case, upper case and lower case; and needles found nowhere.
    let mut needles: BTreeSet<String> = BTreeSet::new();
    let mut seed = 0x2545F4914F6CDD1Du64;
    let mut next = |n: usize| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        (seed % n.max(1) as u64) as usize
    };
    for text in &all {
        let n = text.chars().count();
        for _ in 0..2 {
            let needle = cut(text, next(n), 1 + next(24));
            needles.insert(needle.to_uppercase());
            needles.insert(needle.to_lowercase());
            needles.insert(needle);
        }
    }
    needles
        .extend(["zzqx-not-anywhere", "4242.csv'", "σίσυφος", "ΣΊΣΥΦΟΣ", "MAẞE", "🙂words", "d4 E5"].map(String::from));
    needles.retain(|n| !n.is_empty());
    let needles: Vec<String> = needles.into_iter().filter(|_| next(4) == 0).collect();
    assert!(needles.len() > 50, "{} needles", needles.len());

    let (mut narrowed, mut found) = (0, 0);
    for needle in &needles {
        let expected = scan_ids(&session, "rot", needle).await;
        let Some(candidates) = index.candidates(needle) else {
            continue;
        };
        narrowed += 1;
        assert!(candidates.rows() >= expected.len() as u64, "{needle:?}: fewer candidates than matches");
        session.context().register_table("rot_candidates", index.provider(&candidates)).unwrap();
        let got = scan_ids(&session, "rot_candidates", needle).await;
        session.context().deregister_table("rot_candidates").unwrap();
        assert_eq!(got, expected, "needle {needle:?}");
        found += usize::from(!expected.is_empty());
    }
    assert!(narrowed * 2 > needles.len(), "the index narrowed only {narrowed} of {} needles", needles.len());
    assert!(found * 2 > narrowed, "only {found} of {narrowed} needles found anything");
    // Punctuation alone gives the index nothing to narrow by.
    assert!(index.candidates(" .:_").is_none());
}
