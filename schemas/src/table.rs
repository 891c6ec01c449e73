//! Arrow schemas of every table, defined once, and records ⇄ `RecordBatch` conversion.
//!
//! Types are chosen to be plain Delta types (string, long, integer, double, boolean, timestamp,
//! array, struct): no unsigned integers, no dictionary types (Parquet dictionary-encodes on
//! its own), so any Delta reader reads the tables.

use std::sync::{Arc, OnceLock};

use arrow::array::RecordBatch;
use arrow::compute::cast;
use arrow::datatypes::{DataType, Field, FieldRef, Fields, Schema, SchemaRef, TimeUnit};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{Error, Result};
use crate::records::{Metric, NearMiss, Reject, Review, Rollout, Rot, Run, Trajectory};

/// A row type stored in one table of the repository.
pub trait Record: Serialize + DeserializeOwned + Send + Sync + 'static {
    /// The table's name in the repository.
    const TABLE: &'static str;
    /// The name of the content-hash id column, the table's primary key.
    const ID: &'static str;

    /// The table's Arrow schema.
    fn schema() -> SchemaRef;

    /// This row's id.
    fn id(&self) -> &str;
}

/// Converts records into one batch of the table's schema.
pub fn to_batch<R: Record>(records: &[R]) -> Result<RecordBatch> {
    let schema = R::schema();
    serde_arrow::to_record_batch(schema.fields(), &records).map_err(|source| Error::Arrow { table: R::TABLE, source })
}

/// Converts a batch read from the table back into records, whichever reader typed it (see
/// `conform`).
pub fn from_batch<R: Record>(batch: &RecordBatch) -> Result<Vec<R>> {
    let batch = conform(batch, &R::schema())?;
    serde_arrow::from_record_batch(&batch).map_err(|source| Error::Arrow { table: R::TABLE, source })
}

/// A batch read back from a table, in the table's own schema: columns picked by name and in
/// the schema's order, each cast where the reader typed it differently (a view or dictionary
/// string, a large list). Columns already of the schema's type are shared, not copied.
fn conform(batch: &RecordBatch, schema: &SchemaRef) -> Result<RecordBatch> {
    let mut cols = Vec::with_capacity(schema.fields().len());
    for field in schema.fields() {
        let col = batch
            .column_by_name(field.name())
            .ok_or_else(|| Error::MissingColumn { column: field.name().to_string() })?;
        cols.push(if col.data_type() == field.data_type() { col.clone() } else { cast(col, field.data_type())? });
    }
    Ok(RecordBatch::try_new(Arc::clone(schema), cols)?)
}

fn s(name: &str) -> Field {
    Field::new(name, DataType::Utf8, false)
}
fn os(name: &str) -> Field {
    Field::new(name, DataType::Utf8, true)
}
fn i32f(name: &str) -> Field {
    Field::new(name, DataType::Int32, false)
}
fn i64f(name: &str) -> Field {
    Field::new(name, DataType::Int64, false)
}
fn list_of(name: &str, item: DataType) -> Field {
    Field::new(name, DataType::List(Arc::new(Field::new("element", item, false))), false)
}
fn ts(name: &str, nullable: bool) -> Field {
    Field::new(name, DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())), nullable)
}

fn action_fields() -> Fields {
    Fields::from(vec![s("tool"), s("arguments"), s("surface"), s("raw")])
}

fn action(name: &str, nullable: bool) -> Field {
    Field::new(name, DataType::Struct(action_fields()), nullable)
}

fn schema_of(fields: Vec<Field>) -> SchemaRef {
    Arc::new(Schema::new(fields))
}

macro_rules! cached_schema {
    ($build:expr) => {{
        static SCHEMA: OnceLock<SchemaRef> = OnceLock::new();
        SCHEMA.get_or_init(|| $build).clone()
    }};
}

impl Record for Trajectory {
    const TABLE: &'static str = "trajectories";
    const ID: &'static str = "trajectory_id";

    fn schema() -> SchemaRef {
        cached_schema!({
            let file = DataType::Struct(Fields::from(vec![s("name"), s("path"), os("sha256")]));
            let observation = Fields::from(vec![s("status"), s("text")]);
            let step = DataType::Struct(Fields::from(vec![
                i32f("index"),
                os("thought"),
                action("action", true),
                Field::new("observation", DataType::Struct(observation), true),
            ]));
            schema_of(vec![
                s("trajectory_id"),
                s("source"),
                s("source_id"),
                s("source_file"),
                i64f("source_offset"),
                Field::new("source_line", DataType::Int64, true),
                s("task"),
                os("system_prompt"),
                list_of("files", file),
                s("tool_specs"),
                list_of("steps", step),
                os("final_answer"),
                os("gt_answer"),
                os("meta"),
                s("ingest_batch"),
            ])
        })
    }

    fn id(&self) -> &str {
        &self.trajectory_id
    }
}

impl Record for NearMiss {
    const TABLE: &'static str = "near_misses";
    const ID: &'static str = "near_miss_id";

    fn schema() -> SchemaRef {
        cached_schema!({
            let execution = DataType::Struct(Fields::from(vec![
                s("status"),
                s("text"),
                os("error_code"),
                i64f("duration_us"),
                s("tool_version"),
            ]));
            schema_of(vec![
                s("near_miss_id"),
                s("trajectory_id"),
                i32f("step_index"),
                s("error_type"),
                s("tool"),
                s("operator"),
                s("change"),
                s("source"),
                action("original_action", false),
                action("failed_action", false),
                Field::new("execution", execution, false),
                Field::new("is_failure", DataType::Boolean, false),
                s("verdict"),
                os("reason"),
                s("engine_run_id"),
                i64f("seed"),
            ])
        })
    }

    fn id(&self) -> &str {
        &self.near_miss_id
    }
}

impl Record for Rot {
    const TABLE: &'static str = "rot";
    const ID: &'static str = "rot_id";

    fn schema() -> SchemaRef {
        cached_schema!({
            let message = DataType::Struct(Fields::from(vec![s("role"), s("content")]));
            schema_of(vec![
                s("rot_id"),
                os("near_miss_id"),
                s("trajectory_id"),
                i32f("step_index"),
                s("error_type"),
                s("tool"),
                s("evidence"),
                Field::new("evidence_start", DataType::Int32, true),
                Field::new("evidence_end", DataType::Int32, true),
                s("fix_plan"),
                action("failed_action", false),
                s("failed_observation"),
                action("corrected_action", false),
                os("corrected_observation"),
                Field::new("verified", DataType::Boolean, false),
                Field::new("derivable", DataType::Boolean, true),
                list_of("conversation", message),
                list_of("gates", DataType::Utf8),
                s("generator"),
                s("engine_run_id"),
            ])
        })
    }

    fn id(&self) -> &str {
        &self.rot_id
    }
}

impl Record for Reject {
    const TABLE: &'static str = "rejects";
    const ID: &'static str = "reject_id";

    fn schema() -> SchemaRef {
        cached_schema!(schema_of(vec![
            s("reject_id"),
            s("format"),
            s("file"),
            Field::new("line", DataType::Int64, true),
            i64f("byte_offset"),
            s("reason"),
            s("excerpt"),
            s("ingest_batch"),
        ]))
    }

    fn id(&self) -> &str {
        &self.reject_id
    }
}

impl Record for Review {
    const TABLE: &'static str = "reviews";
    const ID: &'static str = "review_id";

    fn schema() -> SchemaRef {
        cached_schema!(schema_of(vec![
            s("review_id"),
            s("row_table"),
            s("row_id"),
            s("verdict"),
            os("reason"),
            s("reviewer"),
            i64f("reviewed_at"),
            os("snapshot"),
        ]))
    }

    fn id(&self) -> &str {
        &self.review_id
    }
}

impl Record for Run {
    const TABLE: &'static str = "runs";
    const ID: &'static str = "run_id";

    fn schema() -> SchemaRef {
        cached_schema!(schema_of(vec![
            s("run_id"),
            s("kind"),
            os("snapshot"),
            s("table_versions"),
            s("config"),
            os("git_commit"),
            ts("started_at", false),
            ts("finished_at", true),
            s("status"),
            os("summary"),
        ]))
    }

    fn id(&self) -> &str {
        &self.run_id
    }
}

impl Record for Metric {
    const TABLE: &'static str = "metrics";
    const ID: &'static str = "";

    fn schema() -> SchemaRef {
        cached_schema!(schema_of(vec![
            s("run_id"),
            i64f("step"),
            s("name"),
            Field::new("value", DataType::Float64, false),
            os("split"),
        ]))
    }

    fn id(&self) -> &str {
        ""
    }
}

impl Record for Rollout {
    const TABLE: &'static str = "rollouts";
    const ID: &'static str = "rollout_id";

    fn schema() -> SchemaRef {
        cached_schema!(schema_of(vec![
            s("rollout_id"),
            s("run_id"),
            i64f("step"),
            s("state_id"),
            s("state_kind"),
            i32f("group_index"),
            s("completion"),
            i32f("reflection_tokens"),
            action("parsed_action", true),
            os("error_type"),
            s("exec_status"),
            Field::new("success", DataType::Boolean, false),
            Field::new("reward", DataType::Float64, false),
            Field::new("advantage", DataType::Float64, false),
        ]))
    }

    fn id(&self) -> &str {
        &self.rollout_id
    }
}

/// Every table of a repository: name and schema.
pub fn all_tables() -> Vec<(&'static str, SchemaRef)> {
    vec![
        (Trajectory::TABLE, Trajectory::schema()),
        (NearMiss::TABLE, NearMiss::schema()),
        (Rot::TABLE, Rot::schema()),
        (Reject::TABLE, Reject::schema()),
        (Run::TABLE, Run::schema()),
        (Metric::TABLE, Metric::schema()),
        (Rollout::TABLE, Rollout::schema()),
        (Review::TABLE, Review::schema()),
    ]
}

/// The schema fields as `FieldRef`s, handy for builders.
pub fn field_refs(schema: &SchemaRef) -> Vec<FieldRef> {
    schema.fields().iter().cloned().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::*;

    fn trajectory() -> Trajectory {
        Trajectory {
            trajectory_id: "t1".into(),
            source: "mat".into(),
            source_id: "x".into(),
            source_file: "f.json".into(),
            source_offset: 10,
            source_line: None,
            task: "do it".into(),
            system_prompt: Some("sys".into()),
            files: vec![FileRef { name: "a.png".into(), path: "files/a.png".into(), sha256: None }],
            tool_specs: "[]".into(),
            steps: vec![
                Step {
                    index: 0,
                    thought: Some("think".into()),
                    action: Some(ActionRecord {
                        tool: "crop".into(),
                        arguments: "{}".into(),
                        surface: "python".into(),
                        raw: "crop()".into(),
                    }),
                    observation: Some(Observation { status: crate::ExecStatus::Ok, text: "done".into() }),
                },
                Step { index: 1, thought: Some("no code".into()), action: None, observation: None },
            ],
            final_answer: Some("42".into()),
            gt_answer: None,
            meta: Some("{}".into()),
            ingest_batch: "b".into(),
        }
    }

    #[test]
    fn trajectory_round_trips_through_a_batch() {
        let rows = vec![trajectory(), trajectory()];
        let batch = to_batch(&rows).unwrap();
        assert_eq!(batch.schema(), Trajectory::schema());
        assert_eq!(from_batch::<Trajectory>(&batch).unwrap(), rows);
    }

    #[test]
    fn runs_store_timestamps() {
        let run = Run {
            run_id: "r".into(),
            kind: "sft".into(),
            snapshot: Some("s".into()),
            table_versions: "{}".into(),
            config: "{}".into(),
            git_commit: None,
            started_at: 1_700_000_000_000_000,
            finished_at: None,
            status: "running".into(),
            summary: None,
        };
        let batch = to_batch(std::slice::from_ref(&run)).unwrap();
        assert_eq!(from_batch::<Run>(&batch).unwrap(), vec![run]);
    }

    #[test]
    fn every_table_has_a_schema_without_unsigned_types() {
        for (name, schema) in all_tables() {
            for f in schema.flattened_fields() {
                assert!(!f.data_type().is_unsigned_integer(), "{name}.{} is unsigned", f.name());
            }
        }
    }
}
