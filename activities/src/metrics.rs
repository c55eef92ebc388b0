//! The project's Prometheus metrics, recorded on the SDK's meter so they share its endpoint.
//!
//! Effects are counted by the attempt that commits them, once: a chunk when its Postgres
//! transaction commits (a retry that finds it committed counts nothing), a job, its rows and
//! its delisting when its final status is written the first time. Every count carries
//! `dry_run`, so dashboards count what was stored (`dry_run="false"`) apart from what was only
//! checked. Failures are counted per failed attempt, which is what retries are.

use std::{sync::Arc, time::Duration};

use crate::pg::EndedJob;
use temporalio_common::telemetry::metrics::{
    CoreMeter, Counter, HistogramDuration, MetricAttributes, MetricKeyValue, MetricParameters,
    NewAttributes, NoOpCoreMeter,
};

/// The chunk phases `catalog_chunk_phase_seconds` times.
#[derive(Debug, Clone, Copy)]
pub enum Phase {
    /// The chunk's byte range from S3.
    Read,
    /// CSV parsing and validation.
    Parse,
    /// Catalog and invalid-row writes and the commit of the chunk's transaction.
    Postgres,
    /// Observations and the catalog copy.
    ClickHouse,
}

impl Phase {
    fn label(self) -> &'static str {
        match self {
            Phase::Read => "read",
            Phase::Parse => "parse",
            Phase::Postgres => "postgres",
            Phase::ClickHouse => "clickhouse",
        }
    }
}

/// Histogram buckets of the chunk phases, in seconds: from a small chunk's parse to a large
/// chunk waiting out a slow store.
pub const PHASE_BUCKETS: [f64; 13] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];
pub const PHASE_HISTOGRAM: &str = "catalog_chunk_phase_seconds";

/// What one committed chunk adds.
#[derive(Debug, Clone, Copy)]
pub struct CommittedChunk {
    pub rows_valid: u64,
    pub rows_invalid: u64,
    pub bytes: u64,
}

#[derive(Clone)]
pub struct Metrics {
    meter: Arc<dyn CoreMeter>,
    rows: Counter,
    job_rows: Counter,
    bytes_read: Counter,
    chunks_committed: Counter,
    chunk_phase: HistogramDuration,
    jobs_finished: Counter,
    items_delisted: Counter,
    items_relisted: Counter,
    activity_failures: Counter,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

fn counter(meter: &Arc<dyn CoreMeter>, name: &'static str, description: &'static str) -> Counter {
    meter.counter(
        MetricParameters::builder()
            .name(name)
            .description(description)
            .build(),
    )
}

impl Metrics {
    /// Metrics recorded on `meter`, or nowhere (`ETL_METRICS_ADDR` empty).
    pub fn new(meter: Option<Arc<dyn CoreMeter>>) -> Self {
        let meter = meter.unwrap_or_else(|| Arc::new(NoOpCoreMeter));
        Self {
            rows: counter(
                &meter,
                "catalog_rows_total",
                "Rows of committed chunks, by source, outcome (valid, invalid) and dry_run; \
                 the rate of work while jobs run",
            ),
            job_rows: counter(
                &meter,
                "catalog_job_rows_total",
                "Rows of completed jobs, by source, outcome (valid, invalid) and dry_run, \
                 counted once when the job completes: the rows committed",
            ),
            bytes_read: counter(
                &meter,
                "catalog_bytes_read_total",
                "Object bytes of committed chunks, by source",
            ),
            chunks_committed: counter(
                &meter,
                "catalog_chunks_committed_total",
                "Chunks committed, by source",
            ),
            chunk_phase: meter.histogram_duration(
                MetricParameters::builder()
                    .name(PHASE_HISTOGRAM)
                    .description(
                        "Time a committed chunk spent per phase (read, parse, postgres, \
                         clickhouse)",
                    )
                    .build(),
            ),
            jobs_finished: counter(
                &meter,
                "catalog_jobs_finished_total",
                "Jobs that reached a final status, by source and status",
            ),
            items_delisted: counter(
                &meter,
                "catalog_items_delisted_total",
                "Catalog items delisted by snapshots, by source",
            ),
            items_relisted: counter(
                &meter,
                "catalog_items_relisted_total",
                "Delisted catalog items that came back, by source (counted when their job \
                 completes)",
            ),
            activity_failures: counter(
                &meter,
                "catalog_activity_failures_total",
                "Failed activity attempts, by activity, failure type and whether Temporal \
                 retries them",
            ),
            meter,
        }
    }

    fn labels(&self, pairs: &[(&'static str, &str)]) -> MetricAttributes {
        self.meter.new_attributes(NewAttributes::from(
            pairs
                .iter()
                .map(|(key, value)| MetricKeyValue::new(*key, (*value).to_owned())),
        ))
    }

    fn add_rows(&self, counter: &Counter, source: &str, dry_run: bool, valid: u64, invalid: u64) {
        let dry_run = if dry_run { "true" } else { "false" };
        for (outcome, rows) in [("valid", valid), ("invalid", invalid)] {
            counter.add(
                rows,
                &self.labels(&[
                    ("source", source),
                    ("outcome", outcome),
                    ("dry_run", dry_run),
                ]),
            );
        }
    }

    pub fn chunk_committed(&self, source: &str, dry_run: bool, chunk: CommittedChunk) {
        self.add_rows(
            &self.rows,
            source,
            dry_run,
            chunk.rows_valid,
            chunk.rows_invalid,
        );
        let by_source = self.labels(&[
            ("source", source),
            ("dry_run", if dry_run { "true" } else { "false" }),
        ]);
        self.bytes_read.add(chunk.bytes, &by_source);
        self.chunks_committed.add(1, &by_source);
    }

    pub fn chunk_phase(&self, phase: Phase, took: Duration) {
        self.chunk_phase
            .record(took, &self.labels(&[("phase", phase.label())]));
    }

    /// A job reached its final status (this call wrote it).
    pub fn job_finished(&self, job: &EndedJob) {
        let dry_run = if job.dry_run { "true" } else { "false" };
        self.jobs_finished.add(
            1,
            &self.labels(&[
                ("source", &job.source),
                ("status", job.status),
                ("dry_run", dry_run),
            ]),
        );
        if job.status == "completed" {
            self.add_rows(
                &self.job_rows,
                &job.source,
                job.dry_run,
                job.rows_valid,
                job.rows_invalid,
            );
        }
        let by_source = self.labels(&[("source", &job.source)]);
        if job.items_delisted > 0 {
            self.items_delisted.add(job.items_delisted, &by_source);
        }
        if job.items_relisted > 0 {
            self.items_relisted.add(job.items_relisted, &by_source);
        }
    }

    pub fn activity_failed(&self, activity: &str, failure_type: &str, retryable: bool) {
        self.activity_failures.add(
            1,
            &self.labels(&[
                ("activity", activity),
                ("failure_type", failure_type),
                ("retryable", if retryable { "true" } else { "false" }),
            ]),
        );
    }
}
