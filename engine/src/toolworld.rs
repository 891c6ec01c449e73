//! toolworld: a seeded generator of tasks the builtin tools can solve.
//!
//! A task is a sandbox of files (CSV tables, text documents, JSON, small PNG images), a
//! question, a ground-truth sequence of 2–6 tool calls ending in `final_answer`, and the
//! answer. The generator knows the answer from the data it made; the observations come from
//! executing the calls with the builtin tools, and [`materialize`] checks that the executed
//! trajectory ends in the generator's answer, so every trajectory replays.
//!
//! The world is one where fixes can be derived, as real tools make them derivable: each
//! thought states the plan's arguments (`Compute 17 * 23.`), error observations name what
//! exists (the folder's files, a tool's parameters, a table's columns, the image size), and a
//! crop reports where the shape in it is, so every argument a step needs can be read from what
//! the agent has seen (the engine marks each RoT row `derivable` by that test).
//!
//! Families (every builtin tool is used by at least one):
//!
//! | family | calls |
//! | --- | --- |
//! | `arith` | calculator → final_answer |
//! | `file_fact` | inspect_file_as_text → final_answer |
//! | `sql_sum` | sql_query (→ calculator) → final_answer |
//! | `doc_search` | search_text → final_answer |
//! | `image_color` | image_info → crop → final_answer |
//! | `image_annotate` | image_info → crop → draw_box → add_text → final_answer |
//! | `multi_hop` | search_text → sql_query → calculator → final_answer |

use std::io::Cursor;
use std::path::{Path, PathBuf};

use image::{ImageFormat, Rgb, RgbImage};
use rand::seq::{IndexedRandom, SliceRandom};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use regrpo_schemas::action::{Action, Arg, Call, Surface};
use regrpo_schemas::id::sha256_hex;
use regrpo_schemas::{ActionRecord, FileRef, Observation, Step, Trajectory};
use serde_json::{Value, json};

use crate::error::{Error, IoContext, Result};
use crate::tool::builtin::calculator::{evaluate, format_number};
use crate::tool::builtin::image::color;
use crate::tool::{CallContext, ToolSuite};

/// The families, in the order tasks cycle through them.
pub const FAMILIES: [&str; 7] =
    ["arith", "file_fact", "sql_sum", "doc_search", "image_color", "image_annotate", "multi_hop"];

/// A generated task before execution.
#[derive(Debug, Clone)]
pub struct Task {
    pub id: String,
    pub family: &'static str,
    pub question: String,
    pub files: Files,
    /// Ground-truth calls with a thought each.
    pub calls: Vec<(String, Call)>,
    pub answer: String,
}

/// Files of a sandbox: name and bytes.
type Files = Vec<(String, Vec<u8>)>;

/// A shape drawn in an image: quadrant, color name, bounding box.
type Shape = (usize, &'static str, [i64; 4]);

fn call(name: &str, args: Vec<(&str, Value)>) -> Call {
    Call::new(name, args.into_iter().map(|(k, v)| Arg::keyword(k, v)).collect())
}

const ITEMS: &[&str] = &["notebook", "lamp", "kettle", "backpack", "chair", "monitor", "jacket", "umbrella"];
const REGIONS: &[&str] = &["north", "south", "east", "west", "central"];
const PRODUCTS: &[&str] = &["aurora", "breeze", "cobalt", "delta", "ember", "fjord", "granite", "harbor"];
const CITIES: &[&str] = &["Lisbon", "Oslo", "Tallinn", "Porto", "Ghent", "Bergen", "Turku", "Graz", "Lyon", "Utrecht"];
const SYLLABLES: &[&str] = &["var", "lo", "qui", "ten", "mor", "zan", "bel", "ri", "sta", "kon", "dra", "pel"];
const QUADRANTS: &[(&str, [i64; 4])] = &[
    ("top-left", [0, 0, 32, 32]),
    ("top-right", [32, 0, 64, 32]),
    ("bottom-left", [0, 32, 32, 64]),
    ("bottom-right", [32, 32, 64, 64]),
];
const SHAPE_COLORS: &[&str] = &["red", "green", "blue", "yellow", "orange", "purple"];

fn name(rng: &mut ChaCha8Rng) -> String {
    let mut s: String = (0..2).map(|_| *SYLLABLES.choose(rng).expect("non-empty")).collect();
    if let Some(first) = s.get_mut(0..1) {
        first.make_ascii_uppercase();
    }
    s
}

/// Distinct entity names.
fn names(rng: &mut ChaCha8Rng, n: usize) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    while out.len() < n {
        let c = format!(
            "{} {}",
            name(rng),
            ["Labs", "Works", "Foods", "Motors", "Textiles"].choose(rng).expect("non-empty")
        );
        if !out.iter().any(|o| o.split(' ').next() == c.split(' ').next()) {
            out.push(c);
        }
    }
    out
}

/// A sales table: `region,product,units,revenue`, one row per (region, product).
fn sales_csv(rng: &mut ChaCha8Rng, products: &[&str]) -> (String, Vec<(String, String, i64, i64)>) {
    let mut rows = Vec::new();
    for r in REGIONS {
        for p in products {
            let units = rng.random_range(3..120);
            let price = rng.random_range(5..60);
            rows.push((r.to_string(), p.to_string(), units, units * price));
        }
    }
    let mut text = String::from("region,product,units,revenue\n");
    for (r, p, u, v) in &rows {
        text.push_str(&format!("{r},{p},{u},{v}\n"));
    }
    (text, rows)
}

/// Paragraphs with the same shape (so a query on the shared words ties across them).
fn company_docs(rng: &mut ChaCha8Rng, companies: &[String], flagship: &[&str]) -> (Files, Vec<(i64, String)>) {
    let mut facts = Vec::new();
    let mut paras = Vec::new();
    for (c, p) in companies.iter().zip(flagship) {
        let year = rng.random_range(1950..2021);
        let city = CITIES.choose(rng).expect("non-empty").to_string();
        paras.push(format!("{c} was founded in {year} in {city}. Its flagship product is the {p} line."));
        facts.push((year, city));
    }
    let half = paras.len().div_ceil(2);
    let docs = vec![
        ("companies_a.txt".to_string(), paras[..half].join("\n\n").into_bytes()),
        ("companies_b.md".to_string(), format!("# Company notes\n\n{}", paras[half..].join("\n\n")).into_bytes()),
    ];
    (docs, facts)
}

/// A 64x64 PNG with a shape in some quadrants; returns the bytes and `(quadrant, color, bbox)`.
fn shapes_png(rng: &mut ChaCha8Rng) -> (Vec<u8>, Vec<Shape>) {
    let mut img = RgbImage::from_pixel(64, 64, Rgb([255, 255, 255]));
    let mut quads: Vec<usize> = (0..4).collect();
    quads.shuffle(rng);
    let n = rng.random_range(2..=4);
    let mut colors: Vec<&str> = SHAPE_COLORS.to_vec();
    colors.shuffle(rng);
    let mut shapes = Vec::new();
    for (q, c) in quads.into_iter().take(n).zip(colors) {
        let [qx, qy, _, _] = QUADRANTS[q].1;
        let (w, h) = (rng.random_range(10..22), rng.random_range(10..22));
        let (x, y) = (qx + rng.random_range(2..(30 - w)), qy + rng.random_range(2..(30 - h)));
        let rgb = Rgb(color(c).expect("palette color"));
        for yy in y..y + h {
            for xx in x..x + w {
                img.put_pixel(xx as u32, yy as u32, rgb);
            }
        }
        shapes.push((q, c, [x, y, x + w, y + h]));
    }
    let mut bytes = Vec::new();
    img.write_to(&mut Cursor::new(&mut bytes), ImageFormat::Png).expect("PNG encoding to memory");
    (bytes, shapes)
}

/// Generates task `index` of the world with this seed.
pub fn generate(seed: u64, index: usize) -> Task {
    let family = FAMILIES[index % FAMILIES.len()];
    let mut rng = ChaCha8Rng::seed_from_u64(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ index as u64);
    let id = format!("tw-{seed}-{index:06}");
    let mut files: Files = Vec::new();
    let mut calls: Vec<(String, Call)> = Vec::new();
    let (question, answer) = match family {
        "arith" => {
            let item = ITEMS.choose(&mut rng).expect("non-empty");
            let n = rng.random_range(2..40);
            let price = rng.random_range(3..200);
            let discount = [5, 10, 15, 20, 25, 30].choose(&mut rng).copied().unwrap_or(10);
            let expr = format!("{n} * {price} * (1 - {discount} / 100)");
            let answer = format_number(evaluate(&expr).expect("generated expressions evaluate"));
            calls.push((format!("Compute {expr}."), call("calculator", vec![("expression", json!(expr))])));
            (
                format!(
                    "A shop sells {n} {item}s at {price} each with a {discount}% discount on the total. What is the total after the discount?"
                ),
                answer,
            )
        }
        "file_fact" => {
            let people = names(&mut rng, 4);
            let mut records = Vec::new();
            for p in &people {
                records
                    .push(json!({"name": p, "city": CITIES.choose(&mut rng), "employees": rng.random_range(5..900)}));
            }
            let target = rng.random_range(0..people.len());
            let key = ["city", "employees"].choose(&mut rng).copied().unwrap_or("city");
            let answer = match &records[target][key] {
                Value::String(s) => s.clone(),
                v => v.to_string(),
            };
            files.push((
                "registry.json".into(),
                serde_json::to_vec_pretty(&json!({"companies": records})).expect("JSON"),
            ));
            files.push((
                "notes.md".into(),
                format!("# Notes\n\nThe registry lists {} companies.\n", people.len()).into_bytes(),
            ));
            files.push(("archive.json".into(), serde_json::to_vec_pretty(&json!({"companies": []})).expect("JSON")));
            calls.push((
                "Read registry.json.".into(),
                call("inspect_file_as_text", vec![("file_path", json!("registry.json"))]),
            ));
            (format!("According to registry.json, what is the {key} of {}?", people[target]), answer)
        }
        "sql_sum" => {
            let products: Vec<&str> = PRODUCTS.choose_multiple(&mut rng, 4).copied().collect();
            let (csv, rows) = sales_csv(&mut rng, &products);
            files.push(("sales.csv".into(), csv.into_bytes()));
            let prices: String = products.iter().map(|p| format!("{p},{}\n", rng.random_range(5..60))).collect();
            files.push(("catalog.csv".into(), format!("product,list_price\n{prices}").into_bytes()));
            let region = REGIONS.choose(&mut rng).expect("non-empty");
            let units: i64 = rows.iter().filter(|r| r.0 == *region).map(|r| r.2).sum();
            let revenue: i64 = rows.iter().filter(|r| r.0 == *region).map(|r| r.3).sum();
            if rng.random_bool(0.5) {
                let q = format!("SELECT sum(revenue) AS total FROM sales WHERE region = '{region}'");
                calls.push((format!("Query the sales table: {q}"), call("sql_query", vec![("query", json!(q))])));
                (format!("What is the total revenue of the {region} region in sales.csv?"), revenue.to_string())
            } else {
                let q =
                    format!("SELECT sum(revenue) AS revenue, sum(units) AS units FROM sales WHERE region = '{region}'");
                calls.push((format!("Query the sales table: {q}"), call("sql_query", vec![("query", json!(q))])));
                let expr = format!("round({revenue} / {units}, 2)");
                let answer = format_number(evaluate(&expr).expect("generated expressions evaluate"));
                calls.push((format!("Compute {expr}."), call("calculator", vec![("expression", json!(expr))])));
                (
                    format!(
                        "What is the average revenue per unit in the {region} region of sales.csv, rounded to 2 decimals?"
                    ),
                    answer,
                )
            }
        }
        "doc_search" => {
            let companies = names(&mut rng, 6);
            let flagship: Vec<&str> = PRODUCTS.choose_multiple(&mut rng, 6).copied().collect();
            let (docs, facts) = company_docs(&mut rng, &companies, &flagship);
            files.extend(docs);
            let t = rng.random_range(0..companies.len());
            let first = companies[t].split(' ').next().unwrap_or_default().to_string();
            let (answer, q, query) = if rng.random_bool(0.5) {
                (
                    facts[t].0.to_string(),
                    format!("In which year was {} founded, according to the documents?", companies[t]),
                    format!("{first} founded year"),
                )
            } else {
                (
                    facts[t].1.clone(),
                    format!("In which city was {} founded, according to the documents?", companies[t]),
                    format!("{first} founded city"),
                )
            };
            calls.push((
                format!("Search the documents for '{query}'."),
                call("search_text", vec![("query", json!(query)), ("top_k", json!(1))]),
            ));
            (q, answer)
        }
        "image_color" | "image_annotate" => {
            let (png, shapes) = shapes_png(&mut rng);
            files.push(("shapes.png".into(), png));
            let &(q, c, bbox) = shapes.choose(&mut rng).expect("at least two shapes");
            let (qname, qbox) = QUADRANTS[q];
            calls.push((
                "Check the size of shapes.png.".into(),
                call("image_info", vec![("image_path", json!("shapes.png"))]),
            ));
            calls.push((
                format!("Crop the {qname} quadrant, box {qbox:?}."),
                call("crop", vec![("image_path", json!("shapes.png")), ("box", json!(qbox))]),
            ));
            if family == "image_annotate" {
                let label = format!("{}{}", (b'A' + rng.random_range(0..26u8)) as char, rng.random_range(1..10));
                calls.push((
                    format!("Box the shape at {bbox:?} in black."),
                    call(
                        "draw_box",
                        vec![("image_path", json!("shapes.png")), ("box", json!(bbox)), ("color", json!("black"))],
                    ),
                ));
                // The label goes at the shape's corner, which the crop reported.
                let pos = [bbox[0], bbox[1]];
                calls.push((
                    format!("Label it {label} at {pos:?}."),
                    call(
                        "add_text",
                        vec![("image_path", json!("shapes.png")), ("text", json!(label)), ("position", json!(pos))],
                    ),
                ));
                (
                    format!(
                        "In shapes.png, box the shape in the {qname} quadrant, label it {label}, and say what color it is."
                    ),
                    c.to_string(),
                )
            } else {
                (format!("What color is the shape in the {qname} quadrant of shapes.png?"), c.to_string())
            }
        }
        _ => {
            // multi_hop
            let companies = names(&mut rng, 4);
            let flagship: Vec<&str> = PRODUCTS.choose_multiple(&mut rng, 4).copied().collect();
            let (docs, _) = company_docs(&mut rng, &companies, &flagship);
            files.extend(docs);
            let (csv, rows) = sales_csv(&mut rng, &flagship);
            files.push(("sales.csv".into(), csv.into_bytes()));
            let t = rng.random_range(0..companies.len());
            let first = companies[t].split(' ').next().unwrap_or_default().to_string();
            let product = flagship[t];
            let units: i64 = rows.iter().filter(|r| r.1 == product).map(|r| r.2).sum();
            let factor = rng.random_range(2..5);
            let query = format!("{first} flagship product");
            calls.push((
                format!("Search the documents for '{query}'."),
                call("search_text", vec![("query", json!(query)), ("top_k", json!(1))]),
            ));
            let q = format!("SELECT sum(units) AS units FROM sales WHERE product = '{product}'");
            calls.push((format!("Query the sales table: {q}"), call("sql_query", vec![("query", json!(q))])));
            let expr = format!("{units} * {factor}");
            calls.push((format!("Compute {expr}."), call("calculator", vec![("expression", json!(expr))])));
            (
                format!("What is {factor} times the units sold of {}'s flagship product, per sales.csv?", companies[t]),
                (units * factor).to_string(),
            )
        }
    };
    calls.push((format!("The answer is {answer}."), call("final_answer", vec![("answer", json!(answer))])));
    Task { id, family, question, files, calls, answer }
}

/// The system prompt toolworld trajectories carry.
///
/// It names the tools and their parameters only (the full specs are in `tool_specs`): small
/// policies train on short prompts.
pub fn system_prompt(suite: &ToolSuite) -> String {
    let tools: Vec<String> =
        suite.specs().iter().map(|s| format!("{}({})", s.name, s.parameter_names().join(", "))).collect();
    format!(
        "You are a tool-using agent. Each step write a Thought then a Code block calling one tool. Tools: {}. End with final_answer(answer=...).",
        tools.join(", ")
    )
}

/// Where a task's files live inside a repository.
pub fn sandbox_rel(task_id: &str) -> String {
    format!("sandboxes/{task_id}")
}

/// Writes a task's sandbox under `root`, executes its calls with the builtin tools, and
/// returns the trajectory. Fails if a call fails or the answer is not the generator's.
pub async fn materialize(
    root: &Path,
    task: &Task,
    suite: &ToolSuite,
    seed: u64,
    index: usize,
    batch: &str,
) -> Result<Trajectory> {
    let rel = sandbox_rel(&task.id);
    let dir = root.join(&rel);
    std::fs::create_dir_all(&dir).at(&dir)?;
    let mut files = Vec::new();
    for (name, bytes) in &task.files {
        let path = dir.join(name);
        std::fs::write(&path, bytes).at(&path)?;
        files.push(FileRef { name: name.clone(), path: format!("{rel}/{name}"), sha256: Some(sha256_hex(bytes)) });
    }
    let ctx = CallContext::new(Some(dir.clone()));
    let mut steps = Vec::new();
    for (i, (thought, c)) in task.calls.iter().enumerate() {
        let exec = suite.execute(c, &[], &ctx).await;
        if !exec.status.is_ok() {
            return Err(Error::Internal(format!(
                "toolworld task {} step {i} ({}) failed: {}",
                task.id, c.name, exec.text
            )));
        }
        let action = Action::single(Surface::Python, c.clone());
        steps.push(Step {
            index: i as i32,
            thought: Some(thought.clone()),
            action: Some(ActionRecord::from(&action)),
            observation: Some(Observation { status: exec.status, text: exec.text }),
        });
    }
    let final_obs = steps.last().and_then(|s| s.observation.as_ref()).map(|o| o.text.clone()).unwrap_or_default();
    if final_obs != format!("Final answer: {}", task.answer) {
        return Err(Error::Internal(format!(
            "toolworld task {}: executed answer `{final_obs}` is not `{}`",
            task.id, task.answer
        )));
    }
    let specs: Vec<Value> = suite.specs().iter().map(|s| s.to_openai()).collect();
    let t = Trajectory {
        trajectory_id: String::new(),
        source: "toolworld".into(),
        source_id: task.id.clone(),
        source_file: format!("toolworld:seed={seed}"),
        source_offset: index as i64,
        source_line: None,
        task: task.question.clone(),
        system_prompt: Some(system_prompt(suite)),
        files,
        tool_specs: Value::Array(specs).to_string(),
        steps,
        final_answer: Some(task.answer.clone()),
        gt_answer: Some(Value::String(task.answer.clone()).to_string()),
        meta: Some(json!({"family": task.family, "sandbox": rel, "seed": seed}).to_string()),
        ingest_batch: batch.to_string(),
    };
    Ok(regrpo_schemas::id::seal(t))
}

/// Generates `tasks` tasks of the world `seed` into a repository: sandboxes under
/// `sandboxes/`, trajectories appended (a task already there is skipped). `on_task` is
/// called once per task. Returns `(added, skipped)`.
pub async fn generate_into(
    repo: &regrpo_datasets::Repository,
    tasks: usize,
    seed: u64,
    concurrency: usize,
    on_task: impl Fn() + Sync,
) -> Result<(usize, usize)> {
    use futures::StreamExt;
    let suite = ToolSuite::builtin();
    let root = repo.workdir().to_path_buf();
    let batch = regrpo_schemas::id::content_id([format!("toolworld seed={seed} tasks={tasks}").as_bytes()]);
    let mut app = repo.appender::<Trajectory>().await?;
    let (mut added, mut skipped) = (0, 0);
    let chunk = 1000;
    for start in (0..tasks).step_by(chunk) {
        let end = (start + chunk).min(tasks);
        let made: Vec<Result<Trajectory>> = futures::stream::iter((start..end).map(|i| {
            let (suite, root, batch, on_task) = (&suite, &root, &batch, &on_task);
            async move {
                let task = generate(seed, i);
                let t = materialize(root, &task, suite, seed, i, batch).await;
                on_task();
                t
            }
        }))
        .buffered(concurrency.max(1))
        .collect()
        .await;
        let rows = made.into_iter().collect::<Result<Vec<_>>>()?;
        // A remote repository gets the chunk's sandboxes before its trajectories: a trajectory
        // in the table always has its files in the store.
        repo.push_sandboxes().await?;
        let a = app.append(rows, &format!("toolworld seed={seed}")).await?;
        added += a.added;
        skipped += a.duplicates;
    }
    Ok((added, skipped))
}

/// The sandbox folder of a trajectory, if it has one (`meta.sandbox`, relative to the repo).
pub fn sandbox_of(root: &Path, t: &Trajectory) -> Option<PathBuf> {
    let meta: Value = serde_json::from_str(t.meta.as_deref()?).ok()?;
    let rel = meta.get("sandbox")?.as_str()?;
    Some(root.join(rel))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generation_is_deterministic_and_covers_every_family() {
        let a: Vec<_> = (0..14).map(|i| generate(7, i)).collect();
        let b: Vec<_> = (0..14).map(|i| generate(7, i)).collect();
        for (x, y) in a.iter().zip(&b) {
            assert_eq!((&x.question, &x.answer, &x.files), (&y.question, &y.answer, &y.files));
        }
        for f in FAMILIES {
            assert!(a.iter().any(|t| t.family == f));
        }
        assert!(a.iter().all(|t| (2..=6).contains(&t.calls.len())));
        assert_ne!(generate(8, 0).question, a[0].question);
    }
}
