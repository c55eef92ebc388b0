//! Operations on jobs in Postgres: listing, chunk detail, what a re-run needs to know of the
//! job it re-runs, verification results and retention.

use chrono::{DateTime, Utc};
use sqlx::Row;

use crate::{
    error::EtlError,
    model::{
        ChunkDetail, IngestOptions, JobListEntry, LedgerBatch, LedgerBatchResult, RetentionBatch,
        RetentionBatchResult,
    },
    pg::{PgStore, parse_job_id, timestamp},
};

/// Filters of `etlctl jobs list`.
#[derive(Debug, Clone, Default)]
pub struct JobFilter {
    pub source: Option<String>,
    pub status: Option<String>,
    pub limit: u32,
}

pub const JOB_STATUSES: [&str; 4] = ["running", "completed", "failed", "cancelled"];

/// What a re-run needs to know about the job it re-runs.
#[derive(Debug, Clone)]
pub struct RerunOrigin {
    pub job_id: String,
    pub workflow_id: String,
    pub status: String,
    pub source: String,
    pub bucket: String,
    pub key: String,
    pub etag: String,
    pub dry_run: bool,
    /// The job's options as it was started with them; `max_parallel_chunks` is the default
    /// (the job row does not keep it), and jobs from before a policy was stored get its
    /// default.
    pub options: IngestOptions,
    pub superseded_by_job_id: Option<String>,
}

impl PgStore {
    pub async fn chunk_details(&self, job_id: &str) -> Result<Vec<ChunkDetail>, EtlError> {
        let rows = sqlx::query(
            "SELECT chunk_index, byte_start, byte_end, first_row, planned_rows, status,
                    rows_total, rows_valid, rows_invalid, attempts, clickhouse_written,
                    (extract(epoch FROM coalesce(clickhouse_written_at, committed_at)
                                         - last_started_at) * 1000)::bigint AS duration_ms
             FROM etl_chunks WHERE job_id = $1 ORDER BY chunk_index",
        )
        .bind(parse_job_id(job_id)?)
        .fetch_all(self.pool())
        .await?;
        Ok(rows
            .iter()
            .map(|row| ChunkDetail {
                chunk_index: row.get::<i32, _>("chunk_index") as u32,
                byte_start: row.get::<i64, _>("byte_start") as u64,
                byte_end: row.get::<i64, _>("byte_end") as u64,
                first_row: row.get::<i64, _>("first_row") as u64,
                planned_rows: row.get::<i64, _>("planned_rows") as u64,
                status: row.get("status"),
                rows_total: optional_count(row, "rows_total"),
                rows_valid: optional_count(row, "rows_valid"),
                rows_invalid: optional_count(row, "rows_invalid"),
                attempts: row.get::<i32, _>("attempts") as u32,
                clickhouse_written: row.get("clickhouse_written"),
                duration_ms: row
                    .get::<Option<i64>, _>("duration_ms")
                    .map(|ms| ms.max(0) as u64),
            })
            .collect())
    }

    /// Newest first.
    pub async fn list_jobs(&self, filter: &JobFilter) -> Result<Vec<JobListEntry>, EtlError> {
        let rows = sqlx::query(
            "SELECT id, source, status, dry_run, bucket, object_key, etag, rows_total,
                    rows_valid, rows_invalid, created_at, finished_at, error, superseded_by_job_id
             FROM etl_jobs
             WHERE ($1::text IS NULL OR source = $1) AND ($2::text IS NULL OR status = $2)
             ORDER BY created_at DESC, id
             LIMIT $3",
        )
        .bind(&filter.source)
        .bind(&filter.status)
        .bind(i64::from(filter.limit))
        .fetch_all(self.pool())
        .await?;
        Ok(rows
            .iter()
            .map(|row| JobListEntry {
                job_id: row.get::<uuid::Uuid, _>("id").to_string(),
                source: row.get("source"),
                status: row.get("status"),
                dry_run: row.get("dry_run"),
                bucket: row.get("bucket"),
                key: row.get("object_key"),
                etag: row.get("etag"),
                rows_total: optional_count(row, "rows_total"),
                rows_valid: optional_count(row, "rows_valid"),
                rows_invalid: optional_count(row, "rows_invalid"),
                created_at: timestamp(row.get("created_at")),
                finished_at: row
                    .get::<Option<DateTime<Utc>>, _>("finished_at")
                    .map(timestamp),
                error: row.get("error"),
                superseded_by_job_id: row
                    .get::<Option<uuid::Uuid>, _>("superseded_by_job_id")
                    .map(|id| id.to_string()),
            })
            .collect())
    }

    pub async fn rerun_origin(&self, job_id: &str) -> Result<RerunOrigin, EtlError> {
        let row = sqlx::query(
            "SELECT id, workflow_id, status, source, bucket, object_key, etag, dry_run,
                    chunk_bytes, max_record_bytes, partial, allow_mass_delist,
                    heartbeat_timeout_secs, history_event_budget, retry_max_interval_secs,
                    max_job_duration_secs, superseded_by_job_id
             FROM etl_jobs WHERE id = $1",
        )
        .bind(parse_job_id(job_id)?)
        .fetch_optional(self.pool())
        .await?
        .ok_or_else(|| EtlError::JobNotFound(job_id.to_owned()))?;
        let defaults = IngestOptions::default();
        Ok(RerunOrigin {
            job_id: row.get::<uuid::Uuid, _>("id").to_string(),
            workflow_id: row.get("workflow_id"),
            status: row.get("status"),
            source: row.get("source"),
            bucket: row.get("bucket"),
            key: row.get("object_key"),
            etag: row.get("etag"),
            dry_run: row.get("dry_run"),
            options: IngestOptions {
                chunk_bytes: row.get::<i64, _>("chunk_bytes") as u64,
                max_record_bytes: row.get::<i64, _>("max_record_bytes") as u64,
                partial: row.get("partial"),
                allow_mass_delist: row.get("allow_mass_delist"),
                heartbeat_timeout_secs: row
                    .get::<Option<i64>, _>("heartbeat_timeout_secs")
                    .map_or(defaults.heartbeat_timeout_secs, |secs| secs as u64),
                history_event_budget: row
                    .get::<Option<i32>, _>("history_event_budget")
                    .map_or(defaults.history_event_budget, |events| events as u32),
                retry_max_interval_secs: row
                    .get::<Option<i64>, _>("retry_max_interval_secs")
                    .map_or(defaults.retry_max_interval_secs, |secs| secs as u64),
                max_job_duration_secs: row
                    .get::<Option<i64>, _>("max_job_duration_secs")
                    .map_or(defaults.max_job_duration_secs, |secs| secs as u64),
                max_parallel_chunks: defaults.max_parallel_chunks,
            },
            superseded_by_job_id: row
                .get::<Option<uuid::Uuid>, _>("superseded_by_job_id")
                .map(|id| id.to_string()),
        })
    }

    pub async fn store_verification(
        &self,
        job_id: &str,
        verification: &serde_json::Value,
        ok: bool,
    ) -> Result<(), EtlError> {
        sqlx::query(
            "UPDATE etl_jobs SET verified_at = now(), verification = $2, verified_ok = $3,
                    updated_at = now()
             WHERE id = $1",
        )
        .bind(parse_job_id(job_id)?)
        .bind(verification)
        .bind(ok)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// A run's cutoff: the first batch's, given; or `days` before now, by Postgres' clock.
    async fn cutoff(&self, given: Option<&str>, days: u32) -> Result<DateTime<Utc>, EtlError> {
        Ok(match given {
            Some(cutoff) => DateTime::parse_from_rfc3339(cutoff)
                .map_err(|err| EtlError::NotAllowed(format!("bad cutoff {cutoff:?}: {err}")))?
                .with_timezone(&Utc),
            None => {
                sqlx::query_scalar("SELECT now() - make_interval(days => $1)")
                    .bind(days as i32)
                    .fetch_one(self.pool())
                    .await?
            }
        })
    }

    /// One bounded DELETE of invalid rows older than the cutoff (fixed by the first batch).
    pub async fn delete_expired_invalid_rows(
        &self,
        batch: &RetentionBatch,
    ) -> Result<RetentionBatchResult, EtlError> {
        let cutoff = self.cutoff(batch.cutoff.as_deref(), batch.days).await?;
        // Each job keeps count of its pruned logs, in the same statement: reconcile then
        // tells pruned rows from missing ones.
        let deleted: i64 = sqlx::query_scalar(
            "WITH deleted AS (
                 DELETE FROM invalid_item_logs WHERE id IN (
                     SELECT id FROM invalid_item_logs WHERE created_at < $1
                     ORDER BY created_at LIMIT $2)
                 RETURNING job_id
             ), per_job AS (
                 SELECT job_id, count(*) AS n FROM deleted GROUP BY job_id
             ), counted AS (
                 UPDATE etl_jobs j SET invalid_rows_pruned = j.invalid_rows_pruned + p.n
                 FROM per_job p WHERE j.id = p.job_id
                 RETURNING p.n
             )
             SELECT coalesce(sum(n), 0)::bigint FROM counted",
        )
        .bind(cutoff)
        .bind(i64::from(batch.limit))
        .fetch_one(self.pool())
        .await?;
        Ok(RetentionBatchResult {
            cutoff: cutoff.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
            deleted: deleted as u64,
        })
    }
}

impl PgStore {
    /// Deletes the chunk ledgers of at most `batch.jobs` jobs that completed before the cutoff
    /// (fixed by the first batch) and owe ClickHouse nothing. Their totals are on the job row,
    /// which notes the pruning; a failed or cancelled job keeps its ledger (it tells which
    /// chunks committed), and nothing of a job still running or copying is touched.
    pub async fn prune_chunk_ledgers(
        &self,
        batch: &LedgerBatch,
    ) -> Result<LedgerBatchResult, EtlError> {
        let cutoff = self.cutoff(batch.cutoff.as_deref(), batch.days).await?;
        let row = sqlx::query(
            "WITH chosen AS (
                 SELECT j.id FROM etl_jobs j
                 WHERE j.status = 'completed' AND j.finished_at < $1
                   AND j.ledger_pruned_at IS NULL
                   AND NOT (j.delisted_at IS NOT NULL AND NOT j.delist_clickhouse_written)
                   AND NOT EXISTS (SELECT 1 FROM etl_chunks c WHERE c.job_id = j.id
                                   AND c.status = 'committed' AND NOT c.clickhouse_written)
                 ORDER BY j.finished_at LIMIT $2
                 FOR UPDATE SKIP LOCKED
             ), marked AS (
                 UPDATE etl_jobs j SET ledger_pruned_at = now(), updated_at = now()
                 FROM chosen WHERE j.id = chosen.id RETURNING j.id
             ), deleted AS (
                 DELETE FROM etl_chunks c USING marked WHERE c.job_id = marked.id
                 RETURNING 1
             )
             SELECT (SELECT count(*) FROM marked) AS jobs, (SELECT count(*) FROM deleted) AS rows",
        )
        .bind(cutoff)
        .bind(i64::from(batch.jobs))
        .fetch_one(self.pool())
        .await?;
        Ok(LedgerBatchResult {
            cutoff: cutoff.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
            jobs: row.get::<i64, _>("jobs") as u64,
            rows: row.get::<i64, _>("rows") as u64,
        })
    }
}

fn optional_count(row: &sqlx::postgres::PgRow, column: &str) -> Option<u64> {
    row.get::<Option<i64>, _>(column).map(|n| n as u64)
}
