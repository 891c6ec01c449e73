//! Streaming record scanner for JSON inputs too big to parse at once.
//!
//! It splits a byte stream into records without building a tree: the elements of a top-level
//! array (`[{…}, {…}]`), the members of a top-level object (`{"id": {…}, …}`), or the lines
//! of JSON Lines. Each record comes with its byte offset (and line, for JSON Lines) so that a
//! reject names where it was. Memory is bounded by the largest record, not the file. Nesting
//! depth is only counted here, never recursed into, so a JSON bomb cannot overflow the stack;
//! serde_json's own recursion limit then rejects it as a record.

use std::io::BufRead;

/// How records are laid out in a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// `[record, record, …]`
    Array,
    /// `{"key": record, …}`
    Object,
    /// One record per line.
    Lines,
}

/// One record, or a piece of the file that could not be delimited as one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item {
    Record { offset: u64, line: Option<u64>, key: Option<String>, bytes: Vec<u8> },
    Bad { offset: u64, line: Option<u64>, reason: String, excerpt: Vec<u8> },
}

/// The largest record kept in memory; larger ones are rejected (and skipped) whole.
pub const MAX_RECORD_BYTES: usize = 256 << 20;
const EXCERPT: usize = 160;

/// Iterates the records of a reader.
pub struct Scanner<R> {
    reader: R,
    layout: Layout,
    offset: u64,
    line: u64,
    state: State,
    max_record: usize,
}

#[derive(Debug, PartialEq, Eq)]
enum State {
    Start,
    InContainer,
    Done,
}

impl<R: BufRead> Scanner<R> {
    pub fn new(reader: R, layout: Layout) -> Self {
        Scanner { reader, layout, offset: 0, line: 1, state: State::Start, max_record: MAX_RECORD_BYTES }
    }

    /// Rejects (and skips) records longer than `bytes` instead of [`MAX_RECORD_BYTES`].
    pub fn with_max_record_bytes(mut self, bytes: usize) -> Self {
        self.max_record = bytes;
        self
    }

    /// Bytes consumed so far.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    fn peek(&mut self) -> std::io::Result<Option<u8>> {
        Ok(self.reader.fill_buf()?.first().copied())
    }

    fn bump(&mut self) -> std::io::Result<Option<u8>> {
        let b = self.peek()?;
        if let Some(b) = b {
            self.reader.consume(1);
            self.offset += 1;
            if b == b'\n' {
                self.line += 1;
            }
        }
        Ok(b)
    }

    fn skip_ws(&mut self) -> std::io::Result<()> {
        loop {
            let buf = self.reader.fill_buf()?;
            if buf.is_empty() {
                return Ok(());
            }
            let n = buf.iter().take_while(|b| b.is_ascii_whitespace()).count();
            let newlines = buf[..n].iter().filter(|b| **b == b'\n').count() as u64;
            let all = n == buf.len();
            self.reader.consume(n);
            self.offset += n as u64;
            self.line += newlines;
            if !all {
                return Ok(());
            }
        }
    }

    /// Reads one JSON value starting at the current byte, tracking strings and depth.
    /// Returns `(bytes, complete)`; a scalar ends at `,`, `]`, `}` or whitespace at depth 0.
    fn read_value(&mut self) -> std::io::Result<(Vec<u8>, bool, bool)> {
        let mut out = Vec::new();
        let mut depth = 0usize;
        let mut in_str = false;
        let mut escaped = false;
        let mut oversized = false;
        loop {
            let buf = self.reader.fill_buf()?;
            if buf.is_empty() {
                let complete = depth == 0 && !in_str && !out.is_empty();
                return Ok((out, complete, oversized));
            }
            let mut end = None;
            for (i, &b) in buf.iter().enumerate() {
                if in_str {
                    if escaped {
                        escaped = false;
                    } else if b == b'\\' {
                        escaped = true;
                    } else if b == b'"' {
                        in_str = false;
                        if depth == 0 {
                            end = Some(i + 1);
                            break;
                        }
                    }
                    continue;
                }
                match b {
                    b'"' => in_str = true,
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' if depth == 0 => {
                        end = Some(i);
                        break;
                    }
                    b'}' | b']' => {
                        depth -= 1;
                        if depth == 0 {
                            end = Some(i + 1);
                            break;
                        }
                    }
                    b',' if depth == 0 => {
                        end = Some(i);
                        break;
                    }
                    b if depth == 0 && b.is_ascii_whitespace() && i > 0 => {
                        end = Some(i);
                        break;
                    }
                    _ => {}
                }
            }
            let take = end.unwrap_or(buf.len());
            if !oversized && out.len() + take <= self.max_record {
                out.extend_from_slice(&buf[..take]);
            } else {
                oversized = true;
                if out.len() < EXCERPT {
                    out.extend_from_slice(&buf[..take.min(EXCERPT)]);
                }
            }
            let newlines = buf[..take].iter().filter(|b| **b == b'\n').count() as u64;
            self.reader.consume(take);
            self.offset += take as u64;
            self.line += newlines;
            if end.is_some() {
                return Ok((out, true, oversized));
            }
        }
    }

    fn bad(&self, offset: u64, reason: impl Into<String>, excerpt: &[u8]) -> Item {
        let line = (self.layout == Layout::Lines).then_some(self.line);
        Item::Bad { offset, line, reason: reason.into(), excerpt: excerpt[..excerpt.len().min(EXCERPT)].to_vec() }
    }

    fn next_line(&mut self) -> std::io::Result<Option<Item>> {
        if self.state == State::Done {
            return Ok(None);
        }
        loop {
            let start = self.offset;
            let line_no = self.line;
            let mut bytes = Vec::new();
            let mut oversized = false;
            let mut saw_any = false;
            loop {
                let buf = self.reader.fill_buf()?;
                if buf.is_empty() {
                    break;
                }
                saw_any = true;
                let nl = buf.iter().position(|b| *b == b'\n');
                let take = nl.map_or(buf.len(), |p| p + 1);
                if !oversized && bytes.len() + take <= self.max_record {
                    bytes.extend_from_slice(&buf[..take]);
                } else {
                    oversized = true;
                }
                self.reader.consume(take);
                self.offset += take as u64;
                if nl.is_some() {
                    self.line += 1;
                    break;
                }
            }
            if !saw_any {
                if start == 0 {
                    self.state = State::Done;
                    return Ok(Some(self.bad(0, "empty file: expected JSON Lines, one record per line", b"")));
                }
                return Ok(None);
            }
            if oversized {
                return Ok(Some(Item::Bad {
                    offset: start,
                    line: Some(line_no),
                    reason: format!("line longer than {} bytes", self.max_record),
                    excerpt: bytes[..bytes.len().min(EXCERPT)].to_vec(),
                }));
            }
            if bytes.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            while bytes.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
                bytes.pop();
            }
            return Ok(Some(Item::Record { offset: start, line: Some(line_no), key: None, bytes }));
        }
    }

    /// The next record, bad stretch, or `None` at the end.
    pub fn next_item(&mut self) -> std::io::Result<Option<Item>> {
        if self.layout == Layout::Lines {
            return self.next_line();
        }
        let (open, close, what) = match self.layout {
            Layout::Array => (b'[', b']', "a JSON array of records"),
            _ => (b'{', b'}', "a JSON object of records keyed by id"),
        };
        match self.state {
            State::Done => return Ok(None),
            State::Start => {
                self.skip_ws()?;
                let at = self.offset;
                match self.peek()? {
                    None => {
                        self.state = State::Done;
                        return Ok(Some(self.bad(at, format!("empty file: expected {what}"), b"")));
                    }
                    Some(b) if b == open => {
                        self.bump()?;
                        self.state = State::InContainer;
                    }
                    Some(_) => {
                        self.state = State::Done;
                        let (bytes, _, _) = self.read_value()?;
                        return Ok(Some(self.bad(at, format!("expected {what}, found something else"), &bytes)));
                    }
                }
            }
            State::InContainer => {}
        }
        loop {
            self.skip_ws()?;
            let at = self.offset;
            match self.peek()? {
                None => {
                    self.state = State::Done;
                    return Ok(Some(self.bad(
                        at,
                        format!("truncated: the file ends before the closing `{}`", close as char),
                        b"",
                    )));
                }
                Some(b',') => {
                    self.bump()?;
                    continue;
                }
                Some(b) if b == close => {
                    self.bump()?;
                    self.skip_ws()?;
                    self.state = State::Done;
                    let tail_at = self.offset;
                    if self.peek()?.is_some() {
                        let (bytes, _, _) = self.read_value()?;
                        return Ok(Some(self.bad(
                            tail_at,
                            "unexpected data after the end of the top-level value",
                            &bytes,
                        )));
                    }
                    return Ok(None);
                }
                Some(_) => {}
            }
            let mut key = None;
            if self.layout == Layout::Object {
                let (kbytes, complete, _) = self.read_value()?;
                let parsed = serde_json::from_slice::<String>(&kbytes);
                self.skip_ws()?;
                let colon = self.bump()?;
                match (parsed, complete, colon) {
                    (Ok(k), true, Some(b':')) => key = Some(k),
                    _ => {
                        self.state = State::Done;
                        return Ok(Some(self.bad(at, "expected `\"key\": value` in the top-level object", &kbytes)));
                    }
                }
                self.skip_ws()?;
            }
            let start = self.offset;
            let (bytes, complete, oversized) = self.read_value()?;
            if bytes.is_empty() {
                // A closing bracket where a record should start (`[}`, `{"k": ]`): nothing was
                // read, so reading on would find it again. The structure ends here.
                let found = self.bump()?;
                self.state = State::Done;
                let found = found.map(|b| format!("`{}`", b as char)).unwrap_or_else(|| "the end of the file".into());
                return Ok(Some(self.bad(start, format!("expected a record, found {found}"), b"")));
            }
            if oversized {
                return Ok(Some(self.bad(start, format!("record larger than {} bytes", self.max_record), &bytes)));
            }
            if !complete {
                self.state = State::Done;
                return Ok(Some(self.bad(start, "truncated: the file ends inside this record", &bytes)));
            }
            return Ok(Some(Item::Record { offset: start, line: None, key, bytes }));
        }
    }
}

impl<R: BufRead> Iterator for Scanner<R> {
    type Item = std::io::Result<Item>;
    fn next(&mut self) -> Option<Self::Item> {
        self.next_item().transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan(text: &[u8], layout: Layout) -> Vec<Item> {
        Scanner::new(std::io::BufReader::with_capacity(7, text), layout).map(Result::unwrap).collect()
    }

    fn records(items: &[Item]) -> Vec<(u64, String)> {
        items
            .iter()
            .filter_map(|i| match i {
                Item::Record { offset, bytes, .. } => Some((*offset, String::from_utf8_lossy(bytes).into_owned())),
                Item::Bad { .. } => None,
            })
            .collect()
    }

    #[test]
    fn array_elements_with_offsets_across_buffer_boundaries() {
        let text = br#" [ {"a": "x,]}\"y"} , [1, 2], 3 ,"s"] "#;
        let items = scan(text, Layout::Array);
        assert_eq!(
            records(&items),
            vec![(3, r#"{"a": "x,]}\"y"}"#.into()), (22, "[1, 2]".into()), (30, "3".into()), (33, "\"s\"".into())]
        );
        assert_eq!(items.len(), 4);
    }

    #[test]
    fn truncated_array_keeps_good_records_and_reports_the_rest() {
        let items = scan(br#"[{"a": 1}, {"b": [2, "#, Layout::Array);
        assert_eq!(records(&items), vec![(1, r#"{"a": 1}"#.into())]);
        assert!(matches!(&items[1], Item::Bad { offset: 11, reason, .. } if reason.contains("truncated")));
    }

    #[test]
    fn empty_and_wrong_top_level_are_reported() {
        assert!(matches!(&scan(b"  \n", Layout::Array)[0], Item::Bad { reason, .. } if reason.contains("empty file")));
        assert!(
            matches!(&scan(b"{\"a\":1}", Layout::Array)[0], Item::Bad { reason, .. } if reason.contains("expected a JSON array"))
        );
        assert!(matches!(&scan(b"", Layout::Lines)[0], Item::Bad { reason, .. } if reason.contains("empty file")));
    }

    #[test]
    fn object_members_carry_their_keys() {
        let items = scan(br#"{"q1": {"x": 1}, "q2": {"y": 2}}"#, Layout::Object);
        let keys: Vec<_> = items
            .iter()
            .map(|i| match i {
                Item::Record { key, .. } => key.clone().unwrap(),
                Item::Bad { reason, .. } => panic!("{reason}"),
            })
            .collect();
        assert_eq!(keys, ["q1", "q2"]);
    }

    #[test]
    fn lines_skip_blank_lines_and_count_lines() {
        let items = scan(b"{\"a\":1}\n\n{\"b\":2}", Layout::Lines);
        assert!(matches!(&items[1], Item::Record { line: Some(3), offset: 9, .. }));
    }

    #[test]
    fn an_over_long_line_is_one_bad_item_and_the_next_line_is_read() {
        let text = b"{\"a\": \"0123456789012345678901234567890123456789\"}\n{\"b\":2}\n";
        let items: Vec<Item> = Scanner::new(std::io::BufReader::with_capacity(7, &text[..]), Layout::Lines)
            .with_max_record_bytes(16)
            .map(Result::unwrap)
            .collect();
        assert!(
            matches!(&items[0], Item::Bad { offset: 0, line: Some(1), reason, .. } if reason.contains("longer than 16"))
        );
        assert!(matches!(&items[1], Item::Record { offset: 50, line: Some(2), .. }));
        assert_eq!(items.len(), 2);
    }

    #[test]
    fn a_stray_closing_bracket_ends_the_scan_instead_of_looping() {
        // Found by the generated inputs below: `[}` read an empty record forever.
        for (text, layout) in [(&b"[}"[..], Layout::Array), (b"[1, }]", Layout::Array), (b"{\"k\": ]}", Layout::Object)]
        {
            let items = scan(text, layout);
            assert!(items.len() <= 2, "{items:?}");
            assert!(
                matches!(items.last(), Some(Item::Bad { reason, .. }) if reason.contains("expected a record")),
                "{items:?}"
            );
        }
    }

    #[test]
    fn deep_nesting_is_delimited_without_recursion() {
        let mut text = b"[".to_vec();
        text.extend(std::iter::repeat_n(b'[', 200_000));
        text.extend(std::iter::repeat_n(b']', 200_000));
        text.extend(b", 1]");
        let items = scan(&text, Layout::Array);
        assert_eq!(items.len(), 2);
    }

    mod generated {
        //! Generated inputs: valid files in every layout, cut anywhere and read through buffers
        //! of every size, give serde_json's records; random bytes never panic and never loop.
        use super::super::*;
        use proptest::prelude::*;
        use serde_json::{Map, Number, Value};

        fn json_value() -> impl Strategy<Value = Value> {
            let leaf = prop_oneof![
                Just(Value::Null),
                any::<bool>().prop_map(Value::Bool),
                any::<i64>().prop_map(|n| Value::Number(n.into())),
                any::<f64>().prop_filter_map("finite", |f| Number::from_f64(f).map(Value::Number)),
                any::<String>().prop_map(Value::String),
                "[\\[\\]{},:\"\\\\ \n]{0,8}".prop_map(Value::String),
            ];
            leaf.prop_recursive(4, 32, 4, |inner| {
                prop_oneof![
                    prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                    prop::collection::btree_map(".{0,6}", inner, 0..4)
                        .prop_map(|m| Value::Object(m.into_iter().collect::<Map<_, _>>())),
                ]
            })
        }

        fn layout() -> impl Strategy<Value = Layout> {
            prop_oneof![Just(Layout::Array), Just(Layout::Object), Just(Layout::Lines)]
        }

        /// The file a producer would write: records in the layout, compact or pretty.
        fn file(records: &[Value], layout: Layout, pretty: bool) -> Vec<u8> {
            let text = |v: &Value| if pretty { serde_json::to_string_pretty(v) } else { serde_json::to_string(v) };
            match layout {
                Layout::Array => text(&Value::Array(records.to_vec())).unwrap().into_bytes(),
                Layout::Object => {
                    let m: Map<String, Value> =
                        records.iter().enumerate().map(|(i, r)| (format!("k{i}"), r.clone())).collect();
                    text(&Value::Object(m)).unwrap().into_bytes()
                }
                Layout::Lines => {
                    records.iter().map(|r| serde_json::to_string(r).unwrap() + "\n").collect::<String>().into_bytes()
                }
            }
        }

        fn items(bytes: &[u8], layout: Layout, capacity: usize, max: usize) -> Vec<Item> {
            let scanner =
                Scanner::new(std::io::BufReader::with_capacity(capacity, bytes), layout).with_max_record_bytes(max);
            // Each item consumes at least one byte, and the end adds at most one: no endless loop.
            let out: Vec<Item> = scanner.take(bytes.len() + 2).map(Result::unwrap).collect();
            assert!(out.len() <= bytes.len() + 1, "{} items from {} bytes", out.len(), bytes.len());
            out
        }

        proptest! {
            #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

            #[test]
            fn valid_files_give_serde_jsons_records(
                records in prop::collection::vec(json_value(), 1..6),
                layout in layout(),
                pretty in any::<bool>(),
                capacity in 1usize..64,
            ) {
                let bytes = file(&records, layout, pretty);
                let got = items(&bytes, layout, capacity, MAX_RECORD_BYTES);
                prop_assert_eq!(got.len(), records.len());
                for (i, (item, want)) in got.iter().zip(&records).enumerate() {
                    let Item::Record { bytes: rb, key, offset, .. } = item else {
                        return Err(TestCaseError::fail(format!("record {i}: {item:?}")));
                    };
                    let v: Value = serde_json::from_slice(rb).map_err(|e| TestCaseError::fail(e.to_string()))?;
                    prop_assert_eq!(&v, want);
                    prop_assert_eq!(&bytes[*offset as usize..*offset as usize + rb.len()], &rb[..]);
                    if layout == Layout::Object {
                        prop_assert_eq!(key.clone(), Some(format!("k{i}")));
                    }
                }
            }

            #[test]
            fn a_cut_file_keeps_every_whole_record_before_the_cut(
                records in prop::collection::vec(json_value(), 1..6),
                layout in layout(),
                cut in any::<prop::sample::Index>(),
                capacity in 1usize..64,
            ) {
                let bytes = file(&records, layout, false);
                let cut = cut.index(bytes.len());
                let got = items(&bytes[..cut], layout, capacity, MAX_RECORD_BYTES);
                let whole: Vec<Value> = got
                    .iter()
                    .filter_map(|i| match i {
                        Item::Record { bytes, .. } => serde_json::from_slice(bytes).ok(),
                        Item::Bad { .. } => None,
                    })
                    .collect();
                // What was read is a prefix of what was written (a scalar cut short may still
                // parse as a shorter scalar: only the records before it are compared).
                let n = whole.len().saturating_sub(1);
                prop_assert_eq!(&whole[..n], &records[..n]);
                let reported = got.iter().any(|i| matches!(i, Item::Bad { .. }));
                prop_assert!(reported || whole.len() == records.len() || layout == Layout::Lines);
            }

            #[test]
            fn random_bytes_never_panic_and_records_stay_under_the_bound(
                bytes in prop_oneof![
                    prop::collection::vec(any::<u8>(), 0..400),
                    "[\\[\\]{},:\"\\\\ \na1]{0,200}".prop_map(String::into_bytes),
                ],
                layout in layout(),
                capacity in 1usize..32,
                max in 1usize..64,
            ) {
                for item in items(&bytes, layout, capacity, max) {
                    match item {
                        Item::Record { bytes: rb, offset, .. } => {
                            prop_assert!(rb.len() <= max);
                            prop_assert!(offset as usize + rb.len() <= bytes.len());
                        }
                        Item::Bad { offset, excerpt, .. } => {
                            prop_assert!(offset as usize <= bytes.len());
                            prop_assert!(excerpt.len() <= EXCERPT);
                        }
                    }
                }
            }
        }
    }
}
