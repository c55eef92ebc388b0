//! Payloads that cross Temporal. They carry references (bucket, key, ETag, job and chunk ids),
//! never rows, so history size does not depend on the object's size.

use serde::{Deserialize, Serialize};

/// Default chunk size and chunks in flight, chosen together: every chunk costs each service a
/// fixed share (a Temporal activity, a Postgres transaction, two ClickHouse parts to insert and
/// merge), and a chunk in flight holds its parsed rows (about 40 MiB of worker memory for
/// 8 MiB). Two 8 MiB chunks spend less CPU than four of 4 MiB in the same wall time and memory
/// on two cores (README, Benchmark).
pub const DEFAULT_CHUNK_BYTES: u64 = 8 * 1024 * 1024;
pub const DEFAULT_MAX_PARALLEL_CHUNKS: u32 = 2;
pub const DEFAULT_HEARTBEAT_TIMEOUT_SECS: u64 = 30;
/// A workflow run continues as new past this many history events: far below Temporal's
/// 10,240-event warning, whatever the number of chunks (about 6 events per chunk).
pub const DEFAULT_HISTORY_EVENT_BUDGET: u32 = 6_000;
/// Transient failures are retried without an attempt cap, backing off up to this interval.
pub const DEFAULT_RETRY_MAX_INTERVAL_SECS: u64 = 60;
/// A job that has not ended after this long fails (`deadline_exceeded`); until then an outage
/// only makes it wait.
pub const DEFAULT_MAX_JOB_DURATION_SECS: u64 = 24 * 3600;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IngestRequest {
    pub job_id: String,
    pub source: String,
    pub bucket: String,
    pub key: String,
    /// The object version this job ingests; any other version fails the job.
    pub etag: String,
    pub dry_run: bool,
    /// `etlctl retry` / `repair`: the job this one re-runs.
    pub supersedes: Option<Supersedes>,
    pub options: IngestOptions,
}

/// How an object is ingested; `ingest`, `ingest-source` and schedules share them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IngestOptions {
    pub chunk_bytes: u64,
    pub max_parallel_chunks: u32,
    /// How long a chunk may go without a heartbeat before another worker retries it.
    pub heartbeat_timeout_secs: u64,
    /// History events after which a run hands over to a new run (continue-as-new).
    pub history_event_budget: u32,
    /// Longest record accepted (contract: 1 MiB by default, at most 64 MiB).
    pub max_record_bytes: u64,
    /// The object is not a full snapshot of the source: it never delists anything.
    pub partial: bool,
    /// Lets this job delist more than the mass-delist guard allows.
    pub allow_mass_delist: bool,
    /// Longest backoff between two attempts of a failing activity.
    pub retry_max_interval_secs: u64,
    /// The job fails (`deadline_exceeded`) if it has not ended this long after it started.
    pub max_job_duration_secs: u64,
}

impl Default for IngestOptions {
    fn default() -> Self {
        Self {
            chunk_bytes: DEFAULT_CHUNK_BYTES,
            max_parallel_chunks: DEFAULT_MAX_PARALLEL_CHUNKS,
            heartbeat_timeout_secs: DEFAULT_HEARTBEAT_TIMEOUT_SECS,
            history_event_budget: DEFAULT_HISTORY_EVENT_BUDGET,
            max_record_bytes: crate::planner::DEFAULT_MAX_RECORD_BYTES,
            partial: false,
            allow_mass_delist: false,
            retry_max_interval_secs: DEFAULT_RETRY_MAX_INTERVAL_SECS,
            max_job_duration_secs: DEFAULT_MAX_JOB_DURATION_SECS,
        }
    }
}

/// Why a job is re-run; names the successor's workflow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Rerun {
    /// `etlctl retry`: the job failed or was cancelled.
    Retry,
    /// `etlctl repair`: the job completed, and an operator doubts the result.
    Repair,
}

impl Rerun {
    pub fn verb(self) -> &'static str {
        match self {
            Rerun::Retry => "retry",
            Rerun::Repair => "repair",
        }
    }

    pub fn allowed(self, status: &str) -> bool {
        match self {
            Rerun::Retry => matches!(status, "failed" | "cancelled"),
            Rerun::Repair => status == "completed",
        }
    }

    /// One successor per job: the same command run twice finds the same workflow and job.
    pub fn workflow_id(self, origin_job_id: &str) -> String {
        format!("{}-{origin_job_id}", self.verb())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Supersedes {
    pub job_id: String,
    pub rerun: Rerun,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectMeta {
    pub bucket: String,
    pub key: String,
    pub etag: String,
    pub size: u64,
    /// RFC 3339, UTC.
    pub last_modified: String,
}

/// The plan activity's input: the request, and the deadline the workflow fixed for the job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanInput {
    pub request: IngestRequest,
    /// RFC 3339.
    pub deadline_at: String,
}

/// What a job's delisting step did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DelistOutcome {
    /// The job may delist: a full snapshot, every chunk committed, the newest object of its
    /// source.
    pub eligible: bool,
    pub delisted: u64,
    /// `(would_delist, listed)` when the mass-delist guard refused.
    pub refused: Option<(u64, u64)>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanResult {
    pub job_id: String,
    pub chunks: u32,
    pub source_rows: u64,
    pub object: ObjectMeta,
    /// The job row already reached a final status (the same object version was triggered
    /// again after its retention in Temporal ran out): nothing is ingested again.
    pub already_finished: bool,
    /// Each chunk's byte range `[start, end)` for the activity summaries; empty above
    /// `MAX_SUMMARY_RANGES` chunks, so the plan's payload stays small.
    #[serde(default)]
    pub chunk_ranges: Vec<[u64; 2]>,
    /// With `already_finished`: the status the job ended with (plans from before this field
    /// said nothing, and only ever found completed jobs in practice).
    #[serde(default)]
    pub finished_status: Option<String>,
}

/// What the `settle` step found: the job's totals and its reconciled counts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SettledJob {
    pub totals: JobTotals,
    pub reconciliation: Reconciliation,
}

/// What the `complete` step did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CompletedJob {
    /// `completed`, or the status the job had already ended with.
    pub status: String,
    pub reconciliation: Reconciliation,
    pub delisting: DelistOutcome,
}

/// Plans with more chunks name them by index alone in the Web UI (16 KiB of ranges at most).
pub const MAX_SUMMARY_RANGES: u32 = 1000;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkTask {
    pub job_id: String,
    pub chunk_index: u32,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkOutcome {
    pub chunk_index: u32,
    pub rows_total: u64,
    pub rows_valid: u64,
    pub rows_invalid: u64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobTotals {
    pub chunks: u32,
    pub chunks_committed: u32,
    pub rows_total: u64,
    pub rows_valid: u64,
    pub rows_invalid: u64,
    /// Distinct skus among the valid rows.
    pub items: u64,
    /// Items this job listed again after a delisting.
    pub items_relisted: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reconciliation {
    pub source_rows: u64,
    /// Sum over the chunk ledger.
    pub rows_total: u64,
    pub rows_valid: u64,
    pub rows_invalid: u64,
    /// Rows in `invalid_item_logs` for the job.
    pub invalid_logged: u64,
    /// Invalid-row logs of the job deleted by retention since.
    #[serde(default)]
    pub invalid_pruned: u64,
    /// Distinct skus among the valid rows, from the ledger.
    #[serde(default)]
    pub items: u64,
    /// Of those, items present in Postgres' catalog, counted by the transaction that completes
    /// the job; `None` for a dry run and for a job that did not reach it.
    pub pg_items: Option<u64>,
    /// Distinct skus of the object version's observations in ClickHouse (`FINAL`); `None` for
    /// a dry run.
    pub ch_items: Option<u64>,
    /// Observation rows of the object version in ClickHouse (`FINAL`): must equal
    /// `rows_valid`.
    pub ch_observations: Option<u64>,
    /// The source's current catalog compared between the stores (after delisting).
    #[serde(default)]
    pub catalog: Option<CatalogCheck>,
    pub ok: bool,
    /// What did not match, for the job's error.
    pub mismatches: Vec<String>,
}

/// One store's view of a source's current (listed) catalog, computed inside the store.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CatalogSide {
    pub listed: u64,
    pub delisted: u64,
    /// Sum over listed items of the first 60 bits of each item's digest (decimal text: it can
    /// pass 2^64).
    pub checksum: String,
    /// Listed items whose fields no longer match the digest recorded when they were written:
    /// changed in this store behind the pipeline's back.
    pub inconsistent: u64,
    /// Postgres, where its items were scanned: whether the per-source sums its triggers keep
    /// (what a job's comparison reads) match the items. `None` where not checked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sums_match: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CatalogCheck {
    pub postgres: CatalogSide,
    pub clickhouse: CatalogSide,
    /// Items whose listed state or digest differs between the stores.
    pub differing_items: u64,
    pub ok: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum JobOutcome {
    Completed,
    Failed {
        error: String,
        /// The failure's type name (see `error::failure_type`).
        error_type: String,
    },
    /// Cancelled by an operator: chunks committed so far stay committed.
    Cancelled {
        reason: String,
    },
}

impl JobOutcome {
    /// The job's final `status`.
    pub fn status(&self) -> &'static str {
        match self {
            JobOutcome::Completed => "completed",
            JobOutcome::Failed { .. } => "failed",
            JobOutcome::Cancelled { .. } => "cancelled",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FinalizeRequest {
    pub job_id: String,
    pub outcome: JobOutcome,
}

/// A source run's progress (its `progress` query): finished objects are summed here, running
/// ones are named so a watcher can ask them for their own progress.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceProgress {
    pub objects_total: u32,
    pub objects_done: u32,
    pub bytes_total: u64,
    /// Bytes of the objects that finished (whatever their outcome).
    pub bytes_done: u64,
    pub chunks_done: u64,
    pub rows_done: u64,
    pub rows_invalid: u64,
    pub running: Vec<RunningObject>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunningObject {
    pub workflow_id: String,
    pub size: u64,
}

/// What the `progress` query and the Web UI's current details show.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Progress {
    pub phase: String,
    pub chunks_done: u32,
    pub chunks_total: u32,
    pub rows_done: u64,
    pub rows_valid: u64,
    pub rows_invalid: u64,
}

impl Progress {
    pub fn details(&self) -> String {
        format!(
            "**{}**: {}/{} chunks, {} rows ({} valid, {} invalid)",
            self.phase,
            self.chunks_done,
            self.chunks_total,
            self.rows_done,
            self.rows_valid,
            self.rows_invalid
        )
    }
}

/// The job summary printed by `etlctl` (`--json`): an interface for operators' scripts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobSummary {
    pub job_id: String,
    pub workflow_id: String,
    pub source: String,
    pub status: String,
    pub error: Option<String>,
    /// The failure's type name when the job failed (`record_too_large`, `source_changed`, ...).
    pub error_type: Option<String>,
    pub dry_run: bool,
    /// Ingested as a partial object: it never delists.
    pub partial: bool,
    /// The mass-delist guard was lifted for this job (`--allow-mass-delist`).
    #[serde(default)]
    pub allow_mass_delist: bool,
    pub rows_total: u64,
    pub rows_valid: u64,
    pub rows_invalid: u64,
    pub items: Option<u64>,
    /// Items of the source this job delisted (its object did not mention them).
    pub items_delisted: Option<u64>,
    /// Items this job listed again after an earlier delisting.
    pub items_relisted: Option<u64>,
    /// Set when the mass-delist guard refused this job's delisting: `would_delist`, `listed`.
    pub delist_refused: Option<serde_json::Value>,
    pub chunks: u32,
    pub chunks_committed: u32,
    pub object: JobObject,
    pub reconciliation: Option<JobReconciliation>,
    /// When the job fails if it has not ended (`--max-job-duration`).
    pub deadline_at: Option<String>,
    pub created_at: String,
    pub finished_at: Option<String>,
    /// Chunks committed in Postgres whose ClickHouse write has not been confirmed yet.
    pub chunks_clickhouse_pending: u32,
    /// The job's delisting is committed in Postgres and not in ClickHouse yet (a completed job
    /// copies it as its last step; the source's next job does if that failed).
    #[serde(default)]
    pub delisting_clickhouse_pending: bool,
    /// The job this one re-ran (`etlctl retry` / `repair`).
    pub supersedes_job_id: Option<String>,
    /// The job that re-ran this one, and when it was started.
    pub superseded_by_job_id: Option<String>,
    pub superseded_at: Option<String>,
    /// When retention deleted the job's chunk ledger (its totals stay on the job).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ledger_pruned_at: Option<String>,
    /// Last `etlctl reconcile` of the job: when, and whether every count matched.
    pub verified_at: Option<String>,
    pub verified_ok: Option<bool>,
    /// For a running job, how its workflow stands (`running`, `terminated`, `timed_out`,
    /// `closed`, `not_found`): anything but `running` means the watchdog ends the job (or
    /// `etlctl retry` / `cancel` does, at once). Shown by `jobs show`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workflow_status: Option<String>,
    /// Per-chunk detail, with `jobs show --chunks`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chunk_details: Option<Vec<ChunkDetail>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChunkDetail {
    pub chunk_index: u32,
    pub byte_start: u64,
    pub byte_end: u64,
    pub first_row: u64,
    pub planned_rows: u64,
    pub status: String,
    pub rows_total: Option<u64>,
    pub rows_valid: Option<u64>,
    pub rows_invalid: Option<u64>,
    pub attempts: u32,
    pub clickhouse_written: bool,
    /// From the last attempt's start to its ClickHouse write (or Postgres commit).
    pub duration_ms: Option<u64>,
}

/// One line of `etlctl jobs list`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobListEntry {
    pub job_id: String,
    pub source: String,
    pub status: String,
    pub dry_run: bool,
    pub bucket: String,
    pub key: String,
    pub etag: String,
    pub rows_total: Option<u64>,
    pub rows_valid: Option<u64>,
    pub rows_invalid: Option<u64>,
    pub created_at: String,
    pub finished_at: Option<String>,
    pub error: Option<String>,
    pub superseded_by_job_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobObject {
    pub bucket: String,
    pub key: String,
    pub etag: String,
    pub size: Option<u64>,
    pub last_modified: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobReconciliation {
    pub source_rows: u64,
    pub pg_items: Option<u64>,
    pub ch_items: Option<u64>,
    pub ch_observations: Option<u64>,
    pub invalid_logged: u64,
    pub invalid_pruned: u64,
    /// The source's listed items in each store after this job (null for a dry run).
    pub pg_listed: Option<u64>,
    pub ch_listed: Option<u64>,
    pub catalog_ok: Option<bool>,
    pub ok: bool,
}

/// Input of the per-source workflow: ingest every object version under a prefix not yet
/// ingested successfully for the source.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceIngestRequest {
    pub source: String,
    pub bucket: String,
    pub prefix: String,
    /// File workflows (children) running at once.
    pub max_parallel_objects: u32,
    /// New objects started per run, oldest first; the rest wait for the next run, which keeps
    /// the source workflow's history bounded whatever the backlog.
    pub max_objects: u32,
    /// Objects per S3 listing request (the listing is read page by page, in bounded memory).
    pub list_page_size: u32,
    /// Applied to every object of the run.
    pub options: IngestOptions,
}

pub const DEFAULT_MAX_PARALLEL_OBJECTS: u32 = 2;
pub const DEFAULT_MAX_OBJECTS_PER_RUN: u32 = 200;
pub const DEFAULT_LIST_PAGE_SIZE: u32 = 1000;

/// The listing of a source prefix against the manifest. Its size is bounded by `max_objects`
/// whatever the number of objects under the prefix: the others are only counted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceListing {
    /// Objects to ingest in this run, oldest Last-Modified first.
    pub to_ingest: Vec<ObjectMeta>,
    /// Versions already ingested (in the manifest).
    pub skipped: u64,
    /// Versions whose last job failed or was cancelled: that takes `etlctl retry`, not a tick.
    pub failed_earlier: u64,
    /// New objects left for the next run (over `max_objects`).
    pub remaining: u64,
    /// Objects listed under the prefix in all.
    pub listed: u64,
}

/// What happened to one object a source run started.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceObjectOutcome {
    pub key: String,
    pub etag: String,
    pub last_modified: String,
    pub job_id: String,
    /// `completed`, `failed`, `cancelled` or `running`.
    pub status: String,
    pub error: Option<String>,
}

/// The job row's status and error, for a source run's report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobStatus {
    pub job_id: String,
    pub status: String,
    pub error: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceReport {
    pub source: String,
    pub bucket: String,
    pub prefix: String,
    pub started: u32,
    pub completed: u32,
    pub failed: u32,
    pub skipped: u64,
    pub failed_earlier: u64,
    pub remaining: u64,
    pub listed: u64,
    /// The objects this run started (skipped ones are only counted).
    pub objects: Vec<SourceObjectOutcome>,
}

/// Input of the retention workflow.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetentionRequest {
    pub days: u32,
    /// Rows per DELETE statement.
    pub batch_size: u32,
    /// Rows per run at most; the rest waits for the next run.
    pub max_rows: u64,
    /// The chunk ledgers (per-chunk rows with their sku lists) of jobs that completed more than
    /// this many days ago, with nothing left to copy, are deleted; the jobs keep their totals.
    /// `None` (runs scheduled before this option): kept.
    #[serde(default)]
    pub ledger_days: Option<u32>,
}

/// Jobs whose chunk ledger one retention activity deletes at most.
pub const LEDGER_JOBS_PER_BATCH: u32 = 100;
/// Ledger batches per retention run at most (the rest waits for the next run).
pub const LEDGER_BATCHES_PER_RUN: u32 = 100;

/// One bounded deletion of chunk ledgers, against a cutoff fixed by the first batch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerBatch {
    pub days: u32,
    pub cutoff: Option<String>,
    pub jobs: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerBatchResult {
    pub cutoff: String,
    /// Jobs whose ledger was deleted.
    pub jobs: u64,
    /// Chunk rows deleted.
    pub rows: u64,
}

pub const DEFAULT_RETENTION_DAYS: u32 = 90;
/// Chunk ledgers are kept this long after their job ended (`--ledger-days`).
pub const DEFAULT_LEDGER_DAYS: u32 = 30;
pub const DEFAULT_RETENTION_BATCH: u32 = 10_000;
pub const DEFAULT_RETENTION_MAX_ROWS: u64 = 1_000_000;

/// One bounded DELETE. The first batch fixes the cutoff, so every batch of a run (and every
/// retry of a batch) deletes against the same instant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetentionBatch {
    pub days: u32,
    pub cutoff: Option<String>,
    pub limit: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetentionBatchResult {
    pub cutoff: String,
    pub deleted: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetentionReport {
    pub days: u32,
    pub cutoff: String,
    pub deleted: u64,
    pub batches: u32,
    /// The run stopped at `max_rows`: older rows are left for the next run.
    pub capped: bool,
    /// Jobs whose chunk ledger this run deleted, and the chunk rows deleted.
    #[serde(default)]
    pub ledgers_pruned: u64,
    #[serde(default)]
    pub ledger_rows_deleted: u64,
}

/// Namespace of the v5 UUIDs that make job ids from workflow ids.
const JOB_ID_NAMESPACE: uuid::Uuid =
    uuid::Uuid::from_u128(0x6d1f_3c1e_8b2a_4f4e_9c07_52a4_e1b0_c0de);

/// How a job ingests its object version. With the version it is the job's identity: each mode
/// is a job of its own (a version ingested `--partial` by mistake can be ingested again as a
/// snapshot, and delist; a snapshot whose delisting the guard refused can be ingested again
/// with `--allow-mass-delist`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobMode {
    pub dry_run: bool,
    pub partial: bool,
    pub allow_mass_delist: bool,
}

impl JobMode {
    pub fn of(request: &IngestRequest) -> Self {
        Self {
            dry_run: request.dry_run,
            partial: request.options.partial,
            allow_mass_delist: request.options.allow_mass_delist,
        }
    }
}

/// The workflow ID of an ingest: one per (source, bucket, key, ETag) and mode, so triggering the
/// same object version again finds the same workflow and job. A plain snapshot ingest and a dry
/// run keep the ids they had before `partial` and `allow_mass_delist` joined the identity.
pub fn ingest_workflow_id(
    source: &str,
    bucket: &str,
    key: &str,
    etag: &str,
    mode: JobMode,
) -> String {
    let mut identity = format!("{source}\0{bucket}\0{key}\0{etag}\0{}", mode.dry_run);
    let mut prefix = if mode.dry_run { "dry-run" } else { "ingest" }.to_owned();
    for (set, name) in [
        (mode.partial, "partial"),
        (mode.allow_mass_delist, "allow-mass-delist"),
    ] {
        if set {
            identity.push('\0');
            identity.push_str(name);
            prefix.push('-');
            prefix.push_str(name);
        }
    }
    let digest = uuid::Uuid::new_v5(&JOB_ID_NAMESPACE, identity.as_bytes()).simple();
    format!("{prefix}-{source}-{digest}")
}

/// The identity of an object version in ClickHouse's history (observations): the same for
/// every job that ingests that version.
pub fn object_version_id(bucket: &str, key: &str, etag: &str) -> uuid::Uuid {
    let identity = format!("{bucket}\0{key}\0{etag}");
    uuid::Uuid::new_v5(&JOB_ID_NAMESPACE, identity.as_bytes())
}

/// A job's id follows from its workflow id, so a client can name the job before it starts.
pub fn job_id_for_workflow(workflow_id: &str) -> String {
    uuid::Uuid::new_v5(&JOB_ID_NAMESPACE, workflow_id.as_bytes()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_stable_and_distinguish_every_part_of_the_identity() {
        let snapshot = JobMode::default();
        let base = ingest_workflow_id("cotopaxi", "catalog", "a.csv", "\"e1\"", snapshot);
        assert_eq!(
            base,
            ingest_workflow_id("cotopaxi", "catalog", "a.csv", "\"e1\"", snapshot)
        );
        // The id a plain ingest had before the other flags joined the identity.
        assert_eq!(base, "ingest-cotopaxi-602c9feaa8d95999bea9eacaccdc0428");
        let mode = |dry_run, partial, allow_mass_delist| JobMode {
            dry_run,
            partial,
            allow_mass_delist,
        };
        let partial = ingest_workflow_id(
            "cotopaxi",
            "catalog",
            "a.csv",
            "\"e1\"",
            mode(false, true, false),
        );
        assert!(partial.starts_with("ingest-partial-cotopaxi-"), "{partial}");
        for other in [
            ingest_workflow_id("other", "catalog", "a.csv", "\"e1\"", snapshot),
            ingest_workflow_id("cotopaxi", "catalog2", "a.csv", "\"e1\"", snapshot),
            ingest_workflow_id("cotopaxi", "catalog", "b.csv", "\"e1\"", snapshot),
            ingest_workflow_id("cotopaxi", "catalog", "a.csv", "\"e2\"", snapshot),
            ingest_workflow_id(
                "cotopaxi",
                "catalog",
                "a.csv",
                "\"e1\"",
                mode(true, false, false),
            ),
            partial,
            ingest_workflow_id(
                "cotopaxi",
                "catalog",
                "a.csv",
                "\"e1\"",
                mode(false, false, true),
            ),
            ingest_workflow_id(
                "cotopaxi",
                "catalog",
                "a.csv",
                "\"e1\"",
                mode(false, true, true),
            ),
        ] {
            assert_ne!(base, other);
        }
        assert_eq!(job_id_for_workflow(&base), job_id_for_workflow(&base));
        assert_ne!(job_id_for_workflow(&base), job_id_for_workflow("x"));
    }
}
