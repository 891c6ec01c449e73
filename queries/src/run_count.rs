//! Partial `count(*) … GROUP BY` over runs of equal keys.
//!
//! Our writer sorts each commit's rows by the table's cluster columns (`error_type`, `tool`:
//! [`regrpo_datasets::repo::cluster_columns`]), so a scan of `near_misses` or `rot` returns long
//! runs of one key. DataFusion's partial hash aggregate still hashes and probes the group table
//! once per row: two thirds of `GROUP BY error_type`'s time over 10M rows. [`RunCount`] replaces a
//! partial aggregate whose every aggregate is `count(*)` with [`RunCountExec`], which finds where
//! the keys change (for string views one 16-byte compare per row: equal views are equal
//! strings), interns the first row of each run in DataFusion's own group table and adds the run's
//! length to that group's count.
//!
//! ```text
//!  AggregateExec: mode=FinalPartitioned, gby=[error_type], aggr=[count(*)]      (unchanged)
//!    RepartitionExec: Hash([error_type])
//!      RunCountExec: gby=[error_type], counts=1      ◀── was AggregateExec: mode=Partial
//!        DataSourceExec: parquet
//! ```
//!
//! Its output is the partial aggregate's (same schema: the keys, then one `count` state per
//! aggregate), so the final aggregate above it is unchanged. A batch without runs costs one
//! intern per row, as before, plus the boundary pass. At most `batch_size` keys are held: past
//! that they are emitted and the table starts over (a partial aggregate may emit a key more than
//! once; the final one adds the counts up), so memory stays bounded whatever the cardinality.

use std::fmt;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, Int64Array, RecordBatch, UInt32Array};
use arrow::compute::kernels::cmp::distinct;
use arrow::compute::take;
use arrow::datatypes::{DataType, SchemaRef};
use datafusion::common::Result;
use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::execution::TaskContext;
use datafusion::logical_expr::EmitTo;
use datafusion::physical_expr::expressions::Literal;
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::aggregates::group_values::{GroupValues, new_group_values};
use datafusion::physical_plan::aggregates::order::GroupOrdering;
use datafusion::physical_plan::aggregates::{AggregateExec, AggregateMode};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType, apply_expression_roots};
use datafusion::physical_plan::metrics::{BaselineMetrics, ExecutionPlanMetricsSet, MetricsSet};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, InputOrderMode, PhysicalExpr, PlanProperties,
    SendableRecordBatchStream,
};
use futures::StreamExt;

/// The physical optimizer rule: every eligible partial aggregate becomes a [`RunCountExec`].
/// Runs after DataFusion's own rules (it only swaps one node for an equivalent one).
#[derive(Debug, Default)]
pub struct RunCount;

impl PhysicalOptimizerRule for RunCount {
    fn optimize(&self, plan: Arc<dyn ExecutionPlan>, _config: &ConfigOptions) -> Result<Arc<dyn ExecutionPlan>> {
        plan.transform_up(|node| match node.downcast_ref::<AggregateExec>().and_then(RunCountExec::replacing) {
            Some(exec) => Ok(Transformed::yes(Arc::new(exec) as Arc<dyn ExecutionPlan>)),
            None => Ok(Transformed::no(node)),
        })
        .map(|t| t.data)
    }

    fn name(&self) -> &str {
        "RunCount"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

/// A partial `count(*)` aggregate that interns one row per run of equal keys.
#[derive(Debug)]
pub struct RunCountExec {
    input: Arc<dyn ExecutionPlan>,
    keys: Vec<(Arc<dyn PhysicalExpr>, String)>,
    /// The keys' schema (what the group table holds).
    key_schema: SchemaRef,
    /// How many `count(*)` states follow the keys (one per aggregate of the query).
    counts: usize,
    properties: Arc<PlanProperties>,
    metrics: ExecutionPlanMetricsSet,
}

impl RunCountExec {
    /// The replacement for `agg`, when it is a partial aggregate of plain `GROUP BY` keys (no
    /// grouping sets, no limit, input in no particular order) whose aggregates are all
    /// `count(<non-null literal>)` — what `count(*)` plans to — without DISTINCT, FILTER or
    /// ORDER BY, or that has no aggregate (a `DISTINCT`'s first step). Anything else keeps
    /// DataFusion's aggregate.
    pub fn replacing(agg: &AggregateExec) -> Option<RunCountExec> {
        let group_by = agg.group_expr();
        if *agg.mode() != AggregateMode::Partial
            || !group_by.is_single()
            || group_by.expr().is_empty()
            || agg.limit_options().is_some()
            || *agg.input_order_mode() != InputOrderMode::Linear
            || agg.filter_expr().iter().any(Option::is_some)
        {
            return None;
        }
        let counts_rows = agg.aggr_expr().iter().all(|a| {
            a.fun().name() == "count"
                && !a.is_distinct()
                && a.order_bys().is_empty()
                && a.expressions().iter().all(|e| e.downcast_ref::<Literal>().is_some_and(|l| !l.value().is_null()))
                && a.state_fields().is_ok_and(|f| f.len() == 1 && *f[0].data_type() == DataType::Int64)
        });
        let key_schema = group_by.group_schema(&agg.input_schema()).ok()?;
        let schema = agg.schema();
        if !counts_rows || schema.fields().len() != key_schema.fields().len() + agg.aggr_expr().len() {
            return None;
        }
        let input = Arc::clone(agg.input());
        let properties = PlanProperties::new(
            agg.properties().equivalence_properties().clone(),
            agg.properties().output_partitioning().clone(),
            EmissionType::Final,
            Boundedness::Bounded,
        );
        Some(RunCountExec {
            input,
            keys: group_by.expr().to_vec(),
            key_schema,
            counts: agg.aggr_expr().len(),
            properties: Arc::new(properties),
            metrics: ExecutionPlanMetricsSet::new(),
        })
    }

    fn with_input(&self, input: Arc<dyn ExecutionPlan>) -> RunCountExec {
        RunCountExec {
            input,
            keys: self.keys.clone(),
            key_schema: Arc::clone(&self.key_schema),
            counts: self.counts,
            properties: Arc::clone(&self.properties),
            metrics: ExecutionPlanMetricsSet::new(),
        }
    }
}

impl DisplayAs for RunCountExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        let keys = self.keys.iter().map(|(e, name)| format!("{e} as {name}")).collect::<Vec<_>>();
        write!(f, "RunCountExec: gby=[{}], counts={}", keys.join(", "), self.counts)
    }
}

impl ExecutionPlan for RunCountExec {
    fn name(&self) -> &str {
        "RunCountExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn apply_expressions(
        &self,
        f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        apply_expression_roots(self.keys.iter().map(|(e, _)| e), f)
    }

    fn with_new_children(self: Arc<Self>, mut children: Vec<Arc<dyn ExecutionPlan>>) -> Result<Arc<dyn ExecutionPlan>> {
        match (children.pop(), children.is_empty()) {
            (Some(input), true) => Ok(Arc::new(self.with_input(input))),
            _ => datafusion::common::internal_err!("RunCountExec takes exactly one input"),
        }
    }

    fn execute(&self, partition: usize, context: Arc<TaskContext>) -> Result<SendableRecordBatchStream> {
        let input = self.input.execute(partition, Arc::clone(&context))?;
        let metrics = BaselineMetrics::new(&self.metrics, partition);
        let runs = Runs {
            keys: self.keys.iter().map(|(e, _)| Arc::clone(e)).collect(),
            groups: new_group_values(Arc::clone(&self.key_schema), &GroupOrdering::None)?,
            sums: Vec::new(),
            ids: Vec::new(),
            schema: self.schema(),
            counts: self.counts,
            hold_at_most: context.session_config().batch_size().max(1),
        };
        let batches = futures::stream::try_unfold(
            (input, runs, metrics, false),
            |(mut input, mut runs, metrics, mut done)| async move {
                while !done {
                    let emitted = match input.next().await {
                        Some(batch) => {
                            let batch = batch?;
                            let _timer = metrics.elapsed_compute().timer();
                            runs.add(&batch)?;
                            (runs.groups.len() >= runs.hold_at_most).then(|| runs.emit()).transpose()?
                        }
                        None => {
                            done = true;
                            let _timer = metrics.elapsed_compute().timer();
                            (!runs.groups.is_empty()).then(|| runs.emit()).transpose()?
                        }
                    };
                    if let Some(batch) = emitted {
                        metrics.record_output(batch.num_rows());
                        return Ok(Some((batch, (input, runs, metrics, done))));
                    }
                }
                metrics.done();
                Ok(None)
            },
        );
        Ok(Box::pin(RecordBatchStreamAdapter::new(self.schema(), batches)))
    }

    fn metrics(&self) -> Option<MetricsSet> {
        Some(self.metrics.clone_inner())
    }
}

/// One partition's group table and counts.
struct Runs {
    keys: Vec<Arc<dyn PhysicalExpr>>,
    groups: Box<dyn GroupValues>,
    /// Rows counted per group id.
    sums: Vec<i64>,
    /// Scratch: the group id of each interned row.
    ids: Vec<usize>,
    schema: SchemaRef,
    counts: usize,
    hold_at_most: usize,
}

impl Runs {
    fn add(&mut self, batch: &RecordBatch) -> Result<()> {
        let rows = batch.num_rows();
        if rows == 0 {
            return Ok(());
        }
        let keys = self.keys.iter().map(|e| e.evaluate(batch)?.into_array(rows)).collect::<Result<Vec<_>>>()?;
        match run_starts(&keys, rows) {
            // Interning a row per run pays for the `take` only when runs are at least 2 long.
            Some(starts) if starts.len() <= rows / 2 => {
                let starts = UInt32Array::from(starts);
                let firsts = keys.iter().map(|k| take(k, &starts, None)).collect::<Result<Vec<_>, _>>()?;
                self.groups.intern(&firsts, &mut self.ids)?;
                self.sums.resize(self.groups.len(), 0);
                let starts = starts.values();
                for (run, &group) in self.ids.iter().enumerate() {
                    let end = starts.get(run + 1).map_or(rows, |&s| s as usize);
                    self.sums[group] += (end - starts[run] as usize) as i64;
                }
            }
            _ => {
                self.groups.intern(&keys, &mut self.ids)?;
                self.sums.resize(self.groups.len(), 0);
                for &group in &self.ids {
                    self.sums[group] += 1;
                }
            }
        }
        Ok(())
    }

    /// The held keys and their counts, as the partial aggregate's output; the table is emptied.
    fn emit(&mut self) -> Result<RecordBatch> {
        let mut columns = self.groups.emit(EmitTo::All)?;
        // Emitting everything leaves some tables' hash maps in place: start over explicitly.
        self.groups.clear_shrink(self.hold_at_most);
        let sums: ArrayRef = Arc::new(Int64Array::from(std::mem::take(&mut self.sums)));
        columns.extend(std::iter::repeat_n(sums, self.counts));
        Ok(RecordBatch::try_new(Arc::clone(&self.schema), columns)?)
    }
}

/// The rows (of `rows`, at least one) where a run of equal keys starts, row 0 first; `None` when
/// a key's type cannot be compared row to row (the caller interns every row). A start may be
/// reported where the keys are in fact equal — the same string behind two different views — which
/// only splits a run: both halves are interned to the same group.
fn run_starts(keys: &[ArrayRef], rows: usize) -> Option<Vec<u32>> {
    let mut starts = vec![false; rows];
    starts[0] = true;
    for key in keys {
        let views = match key.data_type() {
            DataType::Utf8View => Some(key.as_string_view().views()),
            DataType::BinaryView => Some(key.as_binary_view().views()),
            _ => None,
        };
        match views {
            // Equal views hold equal bytes: inline strings are the view, longer ones the same
            // buffer range (as every row read from one Parquet dictionary page is).
            Some(views) => {
                for (start, pair) in starts[1..].iter_mut().zip(views.windows(2)) {
                    *start |= pair[0] != pair[1];
                }
                if let Some(nulls) = key.logical_nulls() {
                    for (i, start) in starts.iter_mut().enumerate().skip(1) {
                        *start |= nulls.is_valid(i) != nulls.is_valid(i - 1);
                    }
                }
            }
            None => {
                let changed = distinct(&key.slice(0, rows - 1), &key.slice(1, rows - 1)).ok()?;
                for (start, changed) in starts[1..].iter_mut().zip(changed.values().iter()) {
                    *start |= changed;
                }
            }
        }
    }
    Some(starts.iter().enumerate().filter(|(_, s)| **s).map(|(i, _)| i as u32).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Int32Array, StringArray, StringViewArray, StringViewBuilder};
    use arrow::datatypes::{Field, Schema};
    use arrow::util::pretty::pretty_format_batches;
    use datafusion::datasource::MemTable;
    use datafusion::execution::SessionStateBuilder;
    use datafusion::prelude::{SessionConfig, SessionContext};

    /// Three partitions of clustered keys (short, long and deduplicated long strings, with
    /// nulls and empty strings, and an integer), each partition several batches.
    fn table() -> Arc<MemTable> {
        let schema = Arc::new(Schema::new(vec![
            Field::new("error_type", DataType::Utf8View, true),
            Field::new("tool", DataType::Utf8View, true),
            Field::new("plain", DataType::Utf8, true),
            Field::new("n", DataType::Int32, true),
        ]));
        let types = [Some("ArgInvalid"), None, Some(""), Some("GroundingDrift"), Some("NonCommit")];
        let tools = ["inspect_file_as_text", "calculator", "a tool with a long name"];
        let mut partitions = Vec::new();
        for p in 0..3usize {
            let mut batches = Vec::new();
            for b in 0..4usize {
                let rows = 50 + 17 * b;
                // Clustered runs in most batches; every third batch is shuffled row by row.
                let at = |i: usize| if b % 3 == 2 { (i * 7 + p) % 11 } else { (i + b * 13 + p * 5) / 9 };
                let mut tool = StringViewBuilder::new().with_deduplicate_strings();
                for i in 0..rows {
                    tool.append_option((at(i) % 4 != 3).then(|| tools[at(i) % 3]));
                }
                let columns: Vec<ArrayRef> = vec![
                    Arc::new(StringViewArray::from_iter((0..rows).map(|i| types[at(i) / 2 % 5]))),
                    Arc::new(tool.finish()),
                    Arc::new(StringArray::from_iter((0..rows).map(|i| types[at(i) % 5]))),
                    Arc::new(Int32Array::from_iter((0..rows).map(|i| (at(i) % 6 != 5).then_some((at(i) / 3) as i32)))),
                ];
                batches.push(RecordBatch::try_new(Arc::clone(&schema), columns).unwrap());
            }
            partitions.push(batches);
        }
        Arc::new(MemTable::try_new(schema, partitions).unwrap())
    }

    /// `sql`'s rows without and with the rule, and the plan with it.
    async fn run(sql: &str, batch_size: usize) -> (String, String, String) {
        let config = || SessionConfig::new().with_target_partitions(2).with_batch_size(batch_size);
        let plain = SessionContext::new_with_config(config());
        let state = SessionStateBuilder::new()
            .with_config(config())
            .with_default_features()
            .with_physical_optimizer_rule(Arc::new(RunCount))
            .build();
        let runs = SessionContext::new_with_state(state);
        let mut out = Vec::new();
        for ctx in [&plain, &runs] {
            ctx.register_table("t", table()).unwrap();
            out.push(pretty_format_batches(&ctx.sql(sql).await.unwrap().collect().await.unwrap()).unwrap().to_string());
        }
        let plan = runs.sql(&format!("EXPLAIN {sql}")).await.unwrap().collect().await.unwrap();
        let plan = pretty_format_batches(&plan).unwrap().to_string();
        let with = out.pop().unwrap();
        (out.pop().unwrap(), with, plan)
    }

    #[tokio::test]
    async fn counts_by_runs_equal_the_hash_aggregate() {
        let queries = [
            "SELECT error_type, count(*) AS n FROM t GROUP BY error_type ORDER BY error_type",
            "SELECT tool, error_type, count(*), count(1) FROM t GROUP BY tool, error_type ORDER BY tool, error_type",
            "SELECT plain, n, count(*) FROM t GROUP BY plain, n ORDER BY plain, n",
            "SELECT n, count(*) FROM t WHERE tool IS NOT NULL GROUP BY n ORDER BY n",
            "SELECT upper(error_type) AS e, count(*) FROM t GROUP BY e ORDER BY e",
            // No aggregate at all: the keys' partial DISTINCT (here under count(DISTINCT n)).
            "SELECT DISTINCT tool FROM t ORDER BY tool",
            "SELECT error_type, count(DISTINCT n) FROM t GROUP BY error_type ORDER BY error_type",
        ];
        // A batch size of 2 makes every partition emit (and start over) many times.
        for batch_size in [8192, 2] {
            for sql in queries {
                let (plain, runs, plan) = run(sql, batch_size).await;
                assert_eq!(plain, runs, "{sql} (batch size {batch_size})");
                assert!(plan.contains("RunCountExec"), "{sql}: not replaced\n{plan}");
            }
        }
    }

    #[tokio::test]
    async fn other_aggregates_keep_datafusions() {
        for sql in [
            "SELECT error_type, count(n) FROM t GROUP BY error_type ORDER BY error_type",
            "SELECT error_type, count(*), sum(n) FROM t GROUP BY error_type ORDER BY error_type",
            "SELECT error_type, count(*) FILTER (WHERE n > 1) FROM t GROUP BY error_type ORDER BY error_type",
            "SELECT count(*) FROM t",
        ] {
            let (plain, runs, plan) = run(sql, 8192).await;
            assert_eq!(plain, runs, "{sql}");
            assert!(!plan.contains("RunCountExec"), "{sql}: replaced\n{plan}");
        }
    }

    fn starts(keys: Vec<ArrayRef>) -> Vec<u32> {
        let rows = keys[0].len();
        run_starts(&keys, rows).unwrap()
    }

    #[test]
    fn runs_start_where_any_key_changes() {
        let short: ArrayRef = Arc::new(StringViewArray::from(vec!["a", "a", "b", "b", "b", "a"]));
        assert_eq!(starts(vec![Arc::clone(&short)]), [0, 2, 5]);
        let ints: ArrayRef = Arc::new(Int32Array::from(vec![1, 1, 1, 2, 2, 2]));
        assert_eq!(starts(vec![short, ints]), [0, 2, 3, 5]);
    }

    #[test]
    fn a_null_is_not_the_empty_string() {
        // Both are all-zero views; only the validity tells them apart.
        let keys: ArrayRef = Arc::new(StringViewArray::from(vec![Some(""), None, None, Some("")]));
        assert_eq!(starts(vec![keys]), [0, 1, 3]);
        let plain: ArrayRef = Arc::new(StringArray::from(vec![Some(""), None, None, Some("")]));
        assert_eq!(starts(vec![plain]), [0, 1, 3]);
    }

    #[test]
    fn long_strings_in_different_places_only_split_runs() {
        // Each long value is copied into the buffer: equal strings, different views.
        let long = "a string longer than twelve bytes";
        let keys: ArrayRef = Arc::new(StringViewArray::from(vec![long, long, "short"]));
        let got = starts(vec![keys]);
        assert_eq!(got.first(), Some(&0));
        assert!(got.contains(&2), "a change of value is always a start: {got:?}");
    }
}
