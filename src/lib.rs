//! `regrpo`'s library half: the demo as a library, and the terminal helpers the `regrpo`
//! command shares with it. The command line itself (argument parsing, one handler per command)
//! is the binary: `src/main.rs` and `src/cmd/`.
//!
//! | module | holds |
//! | --- | --- |
//! | [`demo`] | the whole pipeline on the embedded default in a fresh folder: four [`demo::Arm`]s trained and compared on the same held-out states, and the typed report ([`demo::DemoReport`], `report.json`) the table and the plots are rendered from |
//! | [`output`] | what commands print: query results, the data engine's run summary |
//! | [`progress`] | progress bars on stderr |
//!
//! Like the binary, this is glue at the edge over the library crates (`regrpo-datasets`,
//! `regrpo-formats`, `regrpo-queries`, `regrpo-engine`, `regrpo-trainer`): its errors are
//! `anyhow` errors with context, not a typed enum.
//!
//! ```text
//!  regrpo demo ─(Args → DemoConfig)─▶ demo::run ─▶ DemoReport ─▶ report.json, table, plots
//! ```

pub mod demo;
pub mod output;
pub mod progress;
