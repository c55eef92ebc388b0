//! Operations on jobs in Postgres: listing, chunk detail, the re-run chain of `retry` and
//! `repair`, the per-source manifest, verification results and retention.

use chrono::{DateTime, Utc};
use sqlx::Row;

use crate::{
    error::EtlError,
    model::{
        ChunkDetail, IngestRequest, JobListEntry, ObjectMeta, RetentionBatch, RetentionBatchResult,
        SourceObjectOutcome, ingest_workflow_id, job_id_for_workflow,
    },
    pg::{PgStore, insert_job, parse_job_id, timestamp},
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
    pub chunk_bytes: u64,
    pub superseded_by_job_id: Option<String>,
}

/// Why a job is re-run; names the successor's workflow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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

    fn allowed(self, status: &str) -> bool {
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
                    chunk_bytes, superseded_by_job_id
             FROM etl_jobs WHERE id = $1",
        )
        .bind(parse_job_id(job_id)?)
        .fetch_optional(self.pool())
        .await?
        .ok_or_else(|| EtlError::JobNotFound(job_id.to_owned()))?;
        Ok(RerunOrigin {
            job_id: row.get::<uuid::Uuid, _>("id").to_string(),
            workflow_id: row.get("workflow_id"),
            status: row.get("status"),
            source: row.get("source"),
            bucket: row.get("bucket"),
            key: row.get("object_key"),
            etag: row.get("etag"),
            dry_run: row.get("dry_run"),
            chunk_bytes: row.get::<i64, _>("chunk_bytes") as u64,
            superseded_by_job_id: row
                .get::<Option<uuid::Uuid>, _>("superseded_by_job_id")
                .map(|id| id.to_string()),
        })
    }

    /// Creates the successor job of `origin` and links both ways in one transaction. A job
    /// has at most one successor: if it has one already, that one is returned unchanged.
    pub async fn open_successor_job(
        &self,
        rerun: Rerun,
        origin_job_id: &str,
        request: &IngestRequest,
        workflow_id: &str,
    ) -> Result<String, EtlError> {
        let origin = parse_job_id(origin_job_id)?;
        let mut tx = self.pool().begin().await?;
        let row = sqlx::query(
            "SELECT status, superseded_by_job_id FROM etl_jobs WHERE id = $1 FOR UPDATE",
        )
        .bind(origin)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or_else(|| EtlError::JobNotFound(origin_job_id.to_owned()))?;
        if let Some(successor) = row.get::<Option<uuid::Uuid>, _>("superseded_by_job_id") {
            return Ok(successor.to_string());
        }
        let status: String = row.get("status");
        if !rerun.allowed(&status) {
            return Err(EtlError::NotAllowed(format!(
                "job {origin_job_id} is {status}: `{}` is for {} jobs{}",
                rerun.verb(),
                match rerun {
                    Rerun::Retry => "failed or cancelled",
                    Rerun::Repair => "completed",
                },
                match (rerun, status.as_str()) {
                    (Rerun::Retry, "completed") => " (use `etlctl repair` to re-ingest it)",
                    (Rerun::Repair, "failed" | "cancelled") => " (use `etlctl retry`)",
                    (_, "running") => " (wait for it, or `etlctl cancel` it first)",
                    _ => "",
                }
            )));
        }
        let successor = parse_job_id(&request.job_id)?;
        insert_job(&mut *tx, request, workflow_id, Some(origin)).await?;
        sqlx::query(
            "UPDATE etl_jobs SET superseded_by_job_id = $2, superseded_at = now(),
                    updated_at = now()
             WHERE id = $1",
        )
        .bind(origin)
        .bind(successor)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(request.job_id.clone())
    }

    /// Splits a listing into object versions to ingest now (oldest Last-Modified first, at most
    /// `max_objects`) and the rest: versions in the manifest and versions whose job failed.
    pub async fn plan_source_run(
        &self,
        source: &str,
        mut listing: Vec<ObjectMeta>,
        max_objects: u32,
    ) -> Result<(Vec<ObjectMeta>, Vec<SourceObjectOutcome>, u64), EtlError> {
        listing.sort_by(|a, b| {
            (a.last_modified.as_str(), a.key.as_str())
                .cmp(&(b.last_modified.as_str(), b.key.as_str()))
        });
        let keys: Vec<&str> = listing.iter().map(|o| o.key.as_str()).collect();
        let etags: Vec<&str> = listing.iter().map(|o| o.etag.as_str()).collect();
        let job_ids: Vec<uuid::Uuid> = listing
            .iter()
            .map(|o| {
                let workflow_id = ingest_workflow_id(source, &o.bucket, &o.key, &o.etag, false);
                parse_job_id(&job_id_for_workflow(&workflow_id))
            })
            .collect::<Result<_, _>>()?;
        let bucket = listing
            .first()
            .map(|o| o.bucket.clone())
            .unwrap_or_default();
        // Per listed version: the manifest's job, else the status of the job this version
        // would get (a failed one is not retried by a tick: that is `etlctl retry`).
        let rows = sqlx::query(
            "SELECT l.ord, m.job_id AS ingested_by, j.status, j.error
             FROM UNNEST($3::text[], $4::text[], $5::uuid[]) WITH ORDINALITY
                  AS l(object_key, etag, job_id, ord)
             LEFT JOIN ingested_objects m
                    ON m.source = $1 AND m.bucket = $2 AND m.object_key = l.object_key
                   AND m.etag = l.etag
             LEFT JOIN etl_jobs j ON j.id = l.job_id
             ORDER BY l.ord",
        )
        .bind(source)
        .bind(&bucket)
        .bind(&keys)
        .bind(&etags)
        .bind(&job_ids)
        .fetch_all(self.pool())
        .await?;
        let mut to_ingest = Vec::new();
        let mut skipped = Vec::new();
        let mut remaining = 0u64;
        for ((object, job_id), row) in listing.into_iter().zip(job_ids).zip(rows) {
            let ingested_by: Option<uuid::Uuid> = row.get("ingested_by");
            let status: Option<String> = row.get("status");
            let outcome =
                |job_id: uuid::Uuid, status: &str, error: Option<String>| SourceObjectOutcome {
                    key: object.key.clone(),
                    etag: object.etag.clone(),
                    last_modified: object.last_modified.clone(),
                    job_id: job_id.to_string(),
                    status: status.to_owned(),
                    error,
                };
            match (ingested_by, status.as_deref()) {
                (Some(by), _) => skipped.push(outcome(by, "skipped", None)),
                (None, Some("failed" | "cancelled")) => {
                    skipped.push(outcome(job_id, "failed-earlier", row.get("error")))
                }
                _ if to_ingest.len() < max_objects as usize => to_ingest.push(object),
                _ => remaining += 1,
            }
        }
        Ok((to_ingest, skipped, remaining))
    }

    /// The outcome of each job of a source run, from the job rows (the record of truth).
    pub async fn job_outcomes(
        &self,
        job_ids: &[String],
    ) -> Result<Vec<(String, String, Option<String>)>, EtlError> {
        let ids: Vec<uuid::Uuid> = job_ids
            .iter()
            .map(|id| parse_job_id(id))
            .collect::<Result<_, _>>()?;
        let rows = sqlx::query(
            "SELECT l.id, coalesce(j.status, 'missing') AS status, j.error
             FROM UNNEST($1::uuid[]) WITH ORDINALITY AS l(id, ord)
             LEFT JOIN etl_jobs j ON j.id = l.id
             ORDER BY l.ord",
        )
        .bind(&ids)
        .fetch_all(self.pool())
        .await?;
        Ok(rows
            .iter()
            .map(|row| {
                (
                    row.get::<uuid::Uuid, _>("id").to_string(),
                    row.get("status"),
                    row.get("error"),
                )
            })
            .collect())
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

    /// One bounded DELETE of invalid rows older than the cutoff (fixed by the first batch).
    pub async fn delete_expired_invalid_rows(
        &self,
        batch: &RetentionBatch,
    ) -> Result<RetentionBatchResult, EtlError> {
        let cutoff: DateTime<Utc> = match &batch.cutoff {
            Some(cutoff) => DateTime::parse_from_rfc3339(cutoff)
                .map_err(|err| EtlError::NotAllowed(format!("bad cutoff {cutoff:?}: {err}")))?
                .with_timezone(&Utc),
            None => {
                sqlx::query_scalar("SELECT now() - make_interval(days => $1)")
                    .bind(batch.days as i32)
                    .fetch_one(self.pool())
                    .await?
            }
        };
        let deleted = sqlx::query(
            "DELETE FROM invalid_item_logs WHERE id IN (
                 SELECT id FROM invalid_item_logs WHERE created_at < $1
                 ORDER BY created_at LIMIT $2)",
        )
        .bind(cutoff)
        .bind(i64::from(batch.limit))
        .execute(self.pool())
        .await?
        .rows_affected();
        Ok(RetentionBatchResult {
            cutoff: cutoff.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
            deleted,
        })
    }
}

fn optional_count(row: &sqlx::postgres::PgRow, column: &str) -> Option<u64> {
    row.get::<Option<i64>, _>(column).map(|n| n as u64)
}
