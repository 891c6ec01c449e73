//! The grammar against the turns `format_assistant` prints, and the trie walk against the memo.

use super::*;
use regrpo_engine::ToolSuite;
use regrpo_schemas::Action;
use regrpo_schemas::react::{Reflection, format_assistant};

fn python() -> Grammar {
    Grammar::new(Surface::Python, &ToolSuite::builtin().specs())
}

fn accepts(g: &Grammar, text: &str) -> bool {
    let mut r = g.start();
    r.feed_all(g, text.as_bytes()) && r.is_done()
}

fn turn(code: &str, reflect: bool) -> String {
    let a = Action::parse_python(code).unwrap();
    let r = Reflection {
        error_type: "ArgInvalid".into(),
        evidence: "The observation says 'Error: file not found: bil.txt', so the file does not exist.".into(),
        fix_plan: "Set file_path to 'bill.txt' instead of 'bil.txt'.".into(),
    };
    format_assistant(reflect.then_some(&r), Some("Read the bill."), &a)
}

#[test]
fn the_printed_layout_of_every_builtin_call_is_accepted() {
    let g = python();
    for code in [
        "inspect_file_as_text(file_path=\"bill.txt\")",
        "crop(image_path=\"shapes.png\", box=[0, 0, 32, 32])",
        "add_text(image_path=\"shapes.png\", text=\"A3\", position=[4, 6])",
        "draw_box(image_path=\"a.png\", box=[1, 2, 3, 4], color=\"black\")",
        "search_text(query=\"Varlo founded year\", top_k=1)",
        "calculator(expression=\"17 * 2350 * (1 - 10 / 100)\")",
        "final_answer(answer=\"say \\\"hi\\\"\")",
        "final_answer(answer=12.5)",
        "sql_query(query=\"SELECT sum(revenue) AS total FROM sales WHERE region = 'north'\")",
    ] {
        for reflect in [false, true] {
            let t = turn(code, reflect);
            assert!(accepts(&g, &t), "refused:\n{t}");
        }
    }
    assert!(accepts(&g, "Code:\n```py\nimage_info(image_path=\"a.png\")\n```"), "no thought");
}

#[test]
fn calls_outside_the_specs_are_refused() {
    let g = python();
    for bad in [
        "Code:\n```py\nprint(\"x\")\n```",
        "Code:\n```py\ncrop(image_path=\"a.png\")\n```",
        "Code:\n```py\ncrop(image_path=\"a.png\", box=[0, 0, 32])\n```",
        "Code:\n```py\ncrop(image_path=1, box=[0, 0, 32, 32])\n```",
        "Code:\n```py\ninspect_file_as_text(filepath=\"a.txt\")\n```",
        "Code:\n```py\ninspect_file_as_text(file_path=\"a.txt\", file_path=\"b.txt\")\n```",
        "Code:\n```py\ndraw_box(image_path=\"a.png\", box=[1, 2, 3, 4], color=\"blackish\")\n```",
        "Reflection:\n- ErrorType: Typo\n- Evidence: x\n- FixPlan: y\nCode:\n```py\nimage_info(image_path=\"a.png\")\n```",
        "Thought: a\nb\n\nCode:\n```py\nimage_info(image_path=\"a.png\")\n```",
    ] {
        assert!(!accepts(&g, bad), "accepted:\n{bad}");
    }
}

#[test]
fn json_calls_follow_the_compact_layout() {
    let g = Grammar::new(Surface::Json, &ToolSuite::builtin().specs());
    let a =
        Action::parse_json(r#"{"name": "crop", "arguments": {"image_path": "a.png", "box": [0, 0, 8, 8]}}"#).unwrap();
    let t = format_assistant(None, Some("Crop it."), &a);
    assert!(accepts(&g, &t), "{t}");
    assert!(!accepts(&g, &t.replace("\"box\"", "\"bbox\"")));
}

#[test]
fn the_shortest_finish_is_exact_at_every_prefix() {
    // Walking a turn byte by byte, the remaining bytes always cover the shortest finish, and
    // at the start the shortest finish is the shortest turn there is.
    let g = python();
    let t = turn("crop(image_path=\"shapes.png\", box=[0, 0, 32, 32])", true);
    let mut r = g.start();
    for (i, b) in t.bytes().enumerate() {
        assert!(r.min_to_finish(&g) as usize <= t.len() - i, "at byte {i}");
        assert!(r.feed(&g, b));
    }
    assert!(r.is_done() && r.min_to_finish(&g) == 0);
    let shortest = "Code:\n```py\nsql_query(query=\"\")\n```";
    assert!(accepts(&g, shortest));
    assert_eq!(g.start().min_to_finish(&g) as usize, shortest.len());
}

#[test]
fn the_trie_allows_exactly_the_tokens_the_grammar_takes() {
    let g = python();
    let vocab: Vec<Option<Vec<u8>>> = ["Code", ":\n", "```", "py\n", "Th", "ought: ", "x", "\n", "`", "crop("]
        .iter()
        .map(|s| Some(s.as_bytes().to_vec()))
        .chain([None])
        .collect();
    let trie = TokenTrie::new(&vocab);
    let ids: Vec<u32> = trie.allowed(&g, &g.start(), 100, 10).into_iter().map(|(t, _)| t).collect();
    assert_eq!(ids.iter().copied().collect::<std::collections::BTreeSet<_>>(), [0, 4].into_iter().collect());
    // Too little budget left for the shortest call: nothing fits.
    assert!(trie.allowed(&g, &g.start(), 10, 10).is_empty());
}

#[test]
fn the_memo_allows_what_the_walk_allows_at_every_prefix_and_budget() {
    let g = python();
    // Every byte, and longer tokens that cross frames (a literal into a line, a value into
    // the argument list).
    let mut vocab: Vec<Option<Vec<u8>>> = (0..=255u8).map(|b| Some(vec![b])).collect();
    for w in [
        "Code:\n",
        "```py\n",
        "Reflection:\n",
        "- Evidence: ",
        "crop(",
        "image_path=\"",
        "\", box=[",
        ", ",
        "32",
        "]",
        ")\n```",
        "aaaaaaaa",
        "a\nb",
        "Thought: ",
    ] {
        vocab.push(Some(w.as_bytes().to_vec()));
    }
    vocab.push(None);
    let stop = (vocab.len() - 1) as u32;
    let trie = TokenTrie::new(&vocab);
    let masks = Masks::default();
    let long_line =
        format!("Thought: {}\n\nCode:\n```py\nimage_info(image_path=\"{}\")\n```", "a".repeat(398), "b".repeat(197));
    for text in [turn("crop(image_path=\"shapes.png\", box=[0, 0, 32, 32])", true), long_line] {
        let mut r = g.start();
        for (i, b) in text.bytes().enumerate() {
            for budget in [0, 1, 2, 3, 8, 40, 500] {
                let want: Vec<u32> = {
                    let mut v: Vec<u32> = trie.allowed(&g, &r, budget, stop).into_iter().map(|(t, _)| t).collect();
                    v.sort_unstable();
                    v
                };
                let got: Vec<u32> =
                    masks.allowed(&g, &trie, &r, budget, stop).map(|a| a.iter().collect()).unwrap_or_default();
                assert_eq!(got, want, "byte {i} of {text:?}, budget {budget}");
            }
            assert!(r.feed(&g, b));
        }
        assert!(r.is_done());
        assert_eq!(masks.allowed(&g, &trie, &r, 1, stop).unwrap().iter().collect::<Vec<_>>(), vec![stop]);
    }
}
