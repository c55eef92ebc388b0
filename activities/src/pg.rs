//! Postgres, the system of record: jobs, the chunk ledger, the catalog, provenance, invalid rows.
//!
//! All statements are parameterised; input never becomes SQL text.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::json;
use sqlx::{
    PgPool, Postgres, Row, Transaction,
    postgres::{PgConnectOptions, PgPoolOptions},
};
use std::str::FromStr;

use crate::{
    chunk::ParsedChunk,
    config::{Config, STARTUP_CHECK_TIMEOUT},
    contract::FieldError,
    error::EtlError,
    model::{
        ChunkOutcome, IngestRequest, JobObject, JobOutcome, JobReconciliation, JobSummary,
        JobTotals, ObjectMeta, Reconciliation,
    },
    planner::PlannedChunk,
};

/// COPY data is sent in pieces of about this size.
const COPY_BUFFER_BYTES: usize = 1 << 20;

pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations");

#[derive(Clone, Debug)]
pub struct PgStore {
    pool: PgPool,
}

/// What a chunk attempt needs to know, read in one query.
#[derive(Debug, Clone)]
pub struct ChunkWork {
    pub source: String,
    pub bucket: String,
    pub key: String,
    pub etag: String,
    pub dry_run: bool,
    pub last_modified: DateTime<Utc>,
    pub header_raw: Vec<u8>,
    pub byte_start: u64,
    pub byte_end: u64,
    pub first_row: u64,
    pub planned_rows: u64,
    pub committed: Option<ChunkOutcome>,
    pub clickhouse_written: bool,
}

/// A job row as it stands before planning, for the plan activity's idempotency.
#[derive(Debug, Clone)]
pub struct JobState {
    pub status: String,
    pub planned: Option<(u32, u64)>,
    pub last_modified: Option<DateTime<Utc>>,
    pub size: Option<u64>,
}

impl PgStore {
    pub async fn connect(config: &Config) -> Result<Self, EtlError> {
        let options = PgConnectOptions::from_str(config.database_url.expose())?;
        let pool = PgPoolOptions::new()
            .max_connections((config.max_concurrent_activities as u32 + 2).max(4))
            .acquire_timeout(STARTUP_CHECK_TIMEOUT)
            .connect_with(options)
            .await?;
        Ok(Self { pool })
    }

    pub fn from_pool(pool: PgPool) -> Self {
        Self { pool }
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    pub async fn migrate(&self) -> Result<(), EtlError> {
        MIGRATOR
            .run(&self.pool)
            .await
            .map_err(|err| EtlError::Postgres(sqlx::Error::Migrate(Box::new(err))))
    }

    /// Creates the job row, or finds the one an earlier attempt (or run) created.
    pub async fn open_job(
        &self,
        request: &IngestRequest,
        workflow_id: &str,
    ) -> Result<JobState, EtlError> {
        let job_id = parse_job_id(&request.job_id)?;
        insert_job(&self.pool, request, workflow_id, None).await?;
        let row = sqlx::query(
            "SELECT status, planned_at IS NOT NULL AS planned, chunks, source_rows, last_modified, size
             FROM etl_jobs WHERE id = $1",
        )
        .bind(job_id)
        .fetch_one(&self.pool)
        .await?;
        let planned: bool = row.get("planned");
        Ok(JobState {
            status: row.get("status"),
            planned: planned.then(|| {
                (
                    row.get::<Option<i32>, _>("chunks").unwrap_or(0) as u32,
                    row.get::<Option<i64>, _>("source_rows").unwrap_or(0) as u64,
                )
            }),
            last_modified: row.get("last_modified"),
            size: row.get::<Option<i64>, _>("size").map(|s| s as u64),
        })
    }

    pub async fn record_object(&self, job_id: &str, object: &ObjectMeta) -> Result<(), EtlError> {
        sqlx::query(
            "UPDATE etl_jobs SET size = $2, last_modified = $3, updated_at = now() WHERE id = $1",
        )
        .bind(parse_job_id(job_id)?)
        .bind(object.size as i64)
        .bind(parse_time(&object.last_modified))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Stores the plan: the header and every chunk's byte range, in one transaction, so a plan
    /// is either absent or complete.
    pub async fn record_plan(
        &self,
        job_id: &str,
        header_raw: &[u8],
        chunks: &[PlannedChunk],
        source_rows: u64,
    ) -> Result<(), EtlError> {
        let job_id = parse_job_id(job_id)?;
        let mut tx = self.pool.begin().await?;
        for batch in chunks.chunks(10_000) {
            let index: Vec<i32> = batch.iter().map(|c| c.index as i32).collect();
            let start: Vec<i64> = batch.iter().map(|c| c.start as i64).collect();
            let end: Vec<i64> = batch.iter().map(|c| c.end as i64).collect();
            let first_row: Vec<i64> = batch.iter().map(|c| c.first_row as i64).collect();
            let rows: Vec<i64> = batch.iter().map(|c| c.rows as i64).collect();
            sqlx::query(
                "INSERT INTO etl_chunks (job_id, chunk_index, byte_start, byte_end, first_row, planned_rows)
                 SELECT $1, * FROM UNNEST($2::int[], $3::bigint[], $4::bigint[], $5::bigint[], $6::bigint[])
                 ON CONFLICT (job_id, chunk_index) DO NOTHING",
            )
            .bind(job_id)
            .bind(index)
            .bind(start)
            .bind(end)
            .bind(first_row)
            .bind(rows)
            .execute(&mut *tx)
            .await?;
        }
        sqlx::query(
            "UPDATE etl_jobs SET header_raw = $2, chunks = $3, source_rows = $4,
                    planned_at = now(), updated_at = now()
             WHERE id = $1",
        )
        .bind(job_id)
        .bind(header_raw)
        .bind(chunks.len() as i32)
        .bind(source_rows as i64)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Reads what a chunk attempt needs and counts the attempt.
    pub async fn start_chunk_attempt(
        &self,
        job_id: &str,
        chunk_index: u32,
    ) -> Result<ChunkWork, EtlError> {
        let id = parse_job_id(job_id)?;
        let row = sqlx::query(
            "WITH attempt AS (
                 UPDATE etl_chunks
                 SET attempts = attempts + 1,
                     first_started_at = coalesce(first_started_at, now()),
                     last_started_at = now()
                 WHERE job_id = $1 AND chunk_index = $2
                 RETURNING *
             )
             SELECT j.source, j.bucket, j.object_key, j.etag, j.dry_run, j.last_modified,
                    j.header_raw, c.byte_start, c.byte_end, c.first_row, c.planned_rows,
                    c.status, c.rows_total, c.rows_valid, c.rows_invalid, c.clickhouse_written
             FROM attempt c JOIN etl_jobs j ON j.id = c.job_id",
        )
        .bind(id)
        .bind(chunk_index as i32)
        .fetch_optional(&self.pool)
        .await?
        .ok_or_else(|| EtlError::PlanMismatch {
            job_id: job_id.to_owned(),
            chunk: chunk_index,
            reason: "no such chunk in the plan".to_owned(),
        })?;
        let status: String = row.get("status");
        let committed = (status == "committed").then(|| ChunkOutcome {
            chunk_index,
            rows_total: row.get::<Option<i64>, _>("rows_total").unwrap_or(0) as u64,
            rows_valid: row.get::<Option<i64>, _>("rows_valid").unwrap_or(0) as u64,
            rows_invalid: row.get::<Option<i64>, _>("rows_invalid").unwrap_or(0) as u64,
        });
        Ok(ChunkWork {
            source: row.get("source"),
            bucket: row.get("bucket"),
            key: row.get("object_key"),
            etag: row.get("etag"),
            dry_run: row.get("dry_run"),
            last_modified: row
                .get::<Option<DateTime<Utc>>, _>("last_modified")
                .unwrap_or_default(),
            header_raw: row
                .get::<Option<Vec<u8>>, _>("header_raw")
                .unwrap_or_default(),
            byte_start: row.get::<i64, _>("byte_start") as u64,
            byte_end: row.get::<i64, _>("byte_end") as u64,
            first_row: row.get::<i64, _>("first_row") as u64,
            planned_rows: row.get::<i64, _>("planned_rows") as u64,
            committed,
            clickhouse_written: row.get("clickhouse_written"),
        })
    }

    /// Commits a chunk's Postgres effects and its ledger row in one transaction.
    ///
    /// Returns the ledger's counts. If another attempt of the same chunk committed first (a
    /// zombie attempt whose heartbeat timed out), its result stands and nothing is written.
    pub async fn commit_chunk(
        &self,
        job_id: &str,
        chunk_index: u32,
        work: &ChunkWork,
        parsed: &ParsedChunk,
    ) -> Result<ChunkOutcome, EtlError> {
        let id = parse_job_id(job_id)?;
        let mut tx = self.pool.begin().await?;
        let status: String = sqlx::query_scalar(
            "SELECT status FROM etl_chunks WHERE job_id = $1 AND chunk_index = $2 FOR UPDATE",
        )
        .bind(id)
        .bind(chunk_index as i32)
        .fetch_one(&mut *tx)
        .await?;
        if status == "committed" {
            tx.rollback().await?;
            return self.committed_outcome(id, chunk_index).await;
        }
        if !work.dry_run {
            write_items(
                &mut tx,
                id,
                &work.source,
                chunk_index,
                work.last_modified,
                parsed,
            )
            .await?;
        }
        record_invalid(&mut tx, id, chunk_index, parsed).await?;
        crate::pause::reached(crate::pause::PausePoint::ChunkBeforeCommit).await;
        let outcome = ChunkOutcome {
            chunk_index,
            rows_total: parsed.rows_total,
            rows_valid: parsed.valid.len() as u64,
            rows_invalid: parsed.invalid.len() as u64,
        };
        sqlx::query(
            "UPDATE etl_chunks
             SET status = 'committed', rows_total = $3, rows_valid = $4, rows_invalid = $5,
                 committed_at = now()
             WHERE job_id = $1 AND chunk_index = $2",
        )
        .bind(id)
        .bind(chunk_index as i32)
        .bind(outcome.rows_total as i64)
        .bind(outcome.rows_valid as i64)
        .bind(outcome.rows_invalid as i64)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(outcome)
    }

    async fn committed_outcome(
        &self,
        job_id: uuid::Uuid,
        chunk_index: u32,
    ) -> Result<ChunkOutcome, EtlError> {
        let row = sqlx::query(
            "SELECT rows_total, rows_valid, rows_invalid FROM etl_chunks
             WHERE job_id = $1 AND chunk_index = $2",
        )
        .bind(job_id)
        .bind(chunk_index as i32)
        .fetch_one(&self.pool)
        .await?;
        Ok(ChunkOutcome {
            chunk_index,
            rows_total: row.get::<Option<i64>, _>(0).unwrap_or(0) as u64,
            rows_valid: row.get::<Option<i64>, _>(1).unwrap_or(0) as u64,
            rows_invalid: row.get::<Option<i64>, _>(2).unwrap_or(0) as u64,
        })
    }

    pub async fn mark_clickhouse_written(
        &self,
        job_id: &str,
        chunk_index: u32,
    ) -> Result<(), EtlError> {
        sqlx::query(
            "UPDATE etl_chunks SET clickhouse_written = true, clickhouse_written_at = now()
             WHERE job_id = $1 AND chunk_index = $2",
        )
        .bind(parse_job_id(job_id)?)
        .bind(chunk_index as i32)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Job totals from the ledger: committed chunks only, each counted once by construction.
    pub async fn totals(&self, job_id: &str) -> Result<JobTotals, EtlError> {
        let row = sqlx::query(
            "SELECT count(*) AS chunks,
                    count(*) FILTER (WHERE status = 'committed') AS committed,
                    coalesce(sum(rows_total), 0)::bigint AS rows_total,
                    coalesce(sum(rows_valid), 0)::bigint AS rows_valid,
                    coalesce(sum(rows_invalid), 0)::bigint AS rows_invalid
             FROM etl_chunks WHERE job_id = $1",
        )
        .bind(parse_job_id(job_id)?)
        .fetch_one(&self.pool)
        .await?;
        Ok(JobTotals {
            chunks: row.get::<i64, _>("chunks") as u32,
            chunks_committed: row.get::<i64, _>("committed") as u32,
            rows_total: row.get::<i64, _>("rows_total") as u64,
            rows_valid: row.get::<i64, _>("rows_valid") as u64,
            rows_invalid: row.get::<i64, _>("rows_invalid") as u64,
        })
    }

    pub async fn store_totals(&self, job_id: &str, totals: &JobTotals) -> Result<(), EtlError> {
        sqlx::query(
            "UPDATE etl_jobs SET rows_total = $2, rows_valid = $3, rows_invalid = $4,
                    updated_at = now()
             WHERE id = $1",
        )
        .bind(parse_job_id(job_id)?)
        .bind(totals.rows_total as i64)
        .bind(totals.rows_valid as i64)
        .bind(totals.rows_invalid as i64)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// (distinct skus of the job in provenance, invalid rows logged for the job)
    pub async fn job_counts(&self, job_id: &str) -> Result<(u64, u64), EtlError> {
        let id = parse_job_id(job_id)?;
        let row = sqlx::query(
            "SELECT (SELECT count(*) FROM catalog_item_jobs WHERE job_id = $1),
                    (SELECT count(*) FROM invalid_item_logs WHERE job_id = $1)",
        )
        .bind(id)
        .fetch_one(&self.pool)
        .await?;
        Ok((row.get::<i64, _>(0) as u64, row.get::<i64, _>(1) as u64))
    }

    pub async fn plan_facts(&self, job_id: &str) -> Result<(u64, bool), EtlError> {
        let row = sqlx::query("SELECT source_rows, dry_run FROM etl_jobs WHERE id = $1")
            .bind(parse_job_id(job_id)?)
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| EtlError::JobNotFound(job_id.to_owned()))?;
        Ok((row.get::<Option<i64>, _>(0).unwrap_or(0) as u64, row.get(1)))
    }

    pub async fn store_reconciliation(
        &self,
        job_id: &str,
        reconciliation: &Reconciliation,
    ) -> Result<(), EtlError> {
        sqlx::query(
            "UPDATE etl_jobs SET reconciliation = $2, reconciled_ok = $3, items = $4,
                    updated_at = now()
             WHERE id = $1",
        )
        .bind(parse_job_id(job_id)?)
        .bind(json!(reconciliation))
        .bind(reconciliation.ok)
        .bind(reconciliation.pg_items.map(|n| n as i64))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Final status. A job that already ended keeps its first final status: a replayed
    /// finalize must not turn `completed` into `failed` or move `finished_at`. A completed
    /// (non-dry-run) job enters the source's manifest in the same transaction.
    pub async fn finalize(&self, job_id: &str, outcome: &JobOutcome) -> Result<(), EtlError> {
        let (status, error) = match outcome {
            JobOutcome::Completed => ("completed", None),
            JobOutcome::Failed { error } => ("failed", Some(error.as_str())),
            JobOutcome::Cancelled { reason } => ("cancelled", Some(reason.as_str())),
        };
        let id = parse_job_id(job_id)?;
        let mut tx = self.pool.begin().await?;
        let finalized = sqlx::query(
            "UPDATE etl_jobs SET status = $2, error = $3, finished_at = now(), updated_at = now()
             WHERE id = $1 AND status = 'running'",
        )
        .bind(id)
        .bind(status)
        .bind(error)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if finalized == 1 && matches!(outcome, JobOutcome::Completed) {
            sqlx::query(
                "INSERT INTO ingested_objects (source, bucket, object_key, etag, job_id)
                 SELECT source, bucket, object_key, etag, id FROM etl_jobs
                 WHERE id = $1 AND NOT dry_run
                 ON CONFLICT (source, bucket, object_key, etag)
                 DO UPDATE SET job_id = EXCLUDED.job_id, ingested_at = now()",
            )
            .bind(id)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    pub async fn job_summary(&self, job_id: &str) -> Result<JobSummary, EtlError> {
        let id = parse_job_id(job_id)?;
        let row = sqlx::query(
            "SELECT j.id, j.workflow_id, j.source, j.status, j.error, j.dry_run, j.bucket,
                    j.object_key, j.etag, j.size, j.last_modified, j.chunks, j.items,
                    j.reconciliation, j.created_at, j.finished_at, j.supersedes_job_id,
                    j.superseded_by_job_id, j.superseded_at, j.verified_at, j.verified_ok,
                    coalesce(j.rows_total, c.rows_total) AS rows_total,
                    coalesce(j.rows_valid, c.rows_valid) AS rows_valid,
                    coalesce(j.rows_invalid, c.rows_invalid) AS rows_invalid,
                    c.committed, c.clickhouse_pending
             FROM etl_jobs j
             CROSS JOIN LATERAL (
                 SELECT coalesce(sum(rows_total), 0)::bigint AS rows_total,
                        coalesce(sum(rows_valid), 0)::bigint AS rows_valid,
                        coalesce(sum(rows_invalid), 0)::bigint AS rows_invalid,
                        count(*) FILTER (WHERE status = 'committed') AS committed,
                        count(*) FILTER (WHERE status = 'committed' AND NOT clickhouse_written
                                         AND NOT j.dry_run) AS clickhouse_pending
                 FROM etl_chunks WHERE job_id = j.id
             ) c
             WHERE j.id = $1",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await?
        .ok_or_else(|| EtlError::JobNotFound(job_id.to_owned()))?;
        let reconciliation: Option<serde_json::Value> = row.get("reconciliation");
        let reconciliation = reconciliation
            .and_then(|value| serde_json::from_value::<Reconciliation>(value).ok())
            .map(|r| JobReconciliation {
                source_rows: r.source_rows,
                pg_items: r.pg_items,
                ch_items: r.ch_items,
                ch_observations: r.ch_observations,
                invalid_logged: r.invalid_logged,
                ok: r.ok,
            });
        Ok(JobSummary {
            job_id: row.get::<uuid::Uuid, _>("id").to_string(),
            workflow_id: row.get("workflow_id"),
            source: row.get("source"),
            status: row.get("status"),
            error: row.get("error"),
            dry_run: row.get("dry_run"),
            rows_total: row.get::<i64, _>("rows_total") as u64,
            rows_valid: row.get::<i64, _>("rows_valid") as u64,
            rows_invalid: row.get::<i64, _>("rows_invalid") as u64,
            items: row.get::<Option<i64>, _>("items").map(|n| n as u64),
            chunks: row.get::<Option<i32>, _>("chunks").unwrap_or(0) as u32,
            chunks_committed: row.get::<i64, _>("committed") as u32,
            object: JobObject {
                bucket: row.get("bucket"),
                key: row.get("object_key"),
                etag: row.get("etag"),
                size: row.get::<Option<i64>, _>("size").map(|n| n as u64),
                last_modified: row
                    .get::<Option<DateTime<Utc>>, _>("last_modified")
                    .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
            },
            reconciliation,
            created_at: row
                .get::<DateTime<Utc>, _>("created_at")
                .to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            finished_at: row
                .get::<Option<DateTime<Utc>>, _>("finished_at")
                .map(timestamp),
            chunks_clickhouse_pending: row.get::<i64, _>("clickhouse_pending") as u32,
            supersedes_job_id: row
                .get::<Option<uuid::Uuid>, _>("supersedes_job_id")
                .map(|id| id.to_string()),
            superseded_by_job_id: row
                .get::<Option<uuid::Uuid>, _>("superseded_by_job_id")
                .map(|id| id.to_string()),
            superseded_at: row
                .get::<Option<DateTime<Utc>>, _>("superseded_at")
                .map(timestamp),
            verified_at: row
                .get::<Option<DateTime<Utc>>, _>("verified_at")
                .map(timestamp),
            verified_ok: row.get("verified_ok"),
            chunk_details: None,
        })
    }
}

/// The job row of `request`, unless it exists; `supersedes` links a re-run to its origin.
pub(crate) async fn insert_job<'e>(
    executor: impl sqlx::PgExecutor<'e>,
    request: &IngestRequest,
    workflow_id: &str,
    supersedes: Option<uuid::Uuid>,
) -> Result<(), EtlError> {
    sqlx::query(
        "INSERT INTO etl_jobs (id, workflow_id, source, bucket, object_key, etag, dry_run,
                               chunk_bytes, supersedes_job_id)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
         ON CONFLICT (id) DO NOTHING",
    )
    .bind(parse_job_id(&request.job_id)?)
    .bind(workflow_id)
    .bind(&request.source)
    .bind(&request.bucket)
    .bind(&request.key)
    .bind(&request.etag)
    .bind(request.dry_run)
    .bind(request.chunk_bytes as i64)
    .bind(supersedes)
    .execute(executor)
    .await?;
    Ok(())
}

/// Stages the chunk's latest row per sku with `COPY` (no per-row statement and no JSON to
/// parse: the cheapest way into Postgres), then upserts items and provenance from the stage.
/// The stage is a temporary table of the pooled connection, emptied at every commit.
async fn write_items(
    tx: &mut Transaction<'_, Postgres>,
    job_id: uuid::Uuid,
    source: &str,
    chunk_index: u32,
    modified_at: DateTime<Utc>,
    parsed: &ParsedChunk,
) -> Result<(), EtlError> {
    let latest = parsed.latest_per_sku();
    if latest.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "CREATE TEMP TABLE IF NOT EXISTS stage_items (
             sku text COLLATE \"C\", name text, brand text, category text, description text, price numeric,
             currency text, weight_grams numeric, availability text, product_url text,
             image_urls text[], attributes jsonb, row_number bigint
         ) ON COMMIT DELETE ROWS",
    )
    .execute(&mut **tx)
    .await?;
    let mut copy = tx.copy_in_raw("COPY stage_items FROM STDIN").await?;
    let mut buffer = Vec::with_capacity(COPY_BUFFER_BYTES);
    for row in latest {
        copy_text::item_row(&mut buffer, row);
        if buffer.len() >= COPY_BUFFER_BYTES {
            copy.send(buffer.as_slice()).await?;
            buffer.clear();
        }
    }
    copy.send(buffer.as_slice()).await?;
    copy.finish().await?;
    // `<=` lets a replay of the same row rewrite identical values; a lower version (an earlier
    // row, an older object) never overwrites a higher one.
    sqlx::query(
        "INSERT INTO catalog_items AS c (source, sku, name, brand, category, description, price,
                currency, weight_grams, availability, product_url, image_urls, attributes,
                version_modified_at, version_row, first_job_id, last_job_id)
         SELECT $1, s.sku, s.name, s.brand, s.category, s.description, s.price, s.currency,
                s.weight_grams, s.availability, s.product_url, s.image_urls, s.attributes,
                $2, s.row_number, $3, $3
         FROM stage_items s
         ORDER BY s.sku
         ON CONFLICT (source, sku) DO UPDATE SET
                name = EXCLUDED.name, brand = EXCLUDED.brand, category = EXCLUDED.category,
                description = EXCLUDED.description, price = EXCLUDED.price,
                currency = EXCLUDED.currency, weight_grams = EXCLUDED.weight_grams,
                availability = EXCLUDED.availability, product_url = EXCLUDED.product_url,
                image_urls = EXCLUDED.image_urls, attributes = EXCLUDED.attributes,
                version_modified_at = EXCLUDED.version_modified_at,
                version_row = EXCLUDED.version_row, last_job_id = EXCLUDED.last_job_id,
                updated_at = now()
         WHERE (c.version_modified_at, c.version_row)
               <= (EXCLUDED.version_modified_at, EXCLUDED.version_row)",
    )
    .bind(source)
    .bind(modified_at)
    .bind(job_id)
    .execute(&mut **tx)
    .await?;
    sqlx::query(
        "INSERT INTO catalog_item_jobs AS p (job_id, source, sku, row_number, chunk_index)
         SELECT $1, $2, s.sku, s.row_number, $3 FROM stage_items s ORDER BY s.sku
         ON CONFLICT (job_id, source, sku) DO UPDATE SET
                row_number = EXCLUDED.row_number, chunk_index = EXCLUDED.chunk_index
         WHERE p.row_number < EXCLUDED.row_number",
    )
    .bind(job_id)
    .bind(source)
    .bind(chunk_index as i32)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

async fn record_invalid(
    tx: &mut Transaction<'_, Postgres>,
    job_id: uuid::Uuid,
    chunk_index: u32,
    parsed: &ParsedChunk,
) -> Result<(), EtlError> {
    if parsed.invalid.is_empty() {
        return Ok(());
    }
    let rows: Vec<InvalidParam<'_>> = parsed
        .invalid
        .iter()
        .map(|row| InvalidParam {
            row_number: row.row_number,
            errors: &row.errors,
            raw_record: row.raw.as_str(),
        })
        .collect();
    sqlx::query(
        "INSERT INTO invalid_item_logs (job_id, chunk_index, row_number, errors, raw_record)
         SELECT $1, $2, r.row_number, r.errors, r.raw_record
         FROM jsonb_to_recordset($3::jsonb) AS r(row_number bigint, errors jsonb, raw_record text)
         ON CONFLICT (job_id, row_number) DO NOTHING",
    )
    .bind(job_id)
    .bind(chunk_index as i32)
    .bind(json_param(&rows)?)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

#[derive(Serialize)]
struct InvalidParam<'a> {
    row_number: u64,
    errors: &'a [FieldError],
    raw_record: &'a str,
}

/// A whole chunk as one JSON text parameter: one round trip per statement, and no
/// intermediate `serde_json::Value` tree (which costs several times the data in memory).
fn json_param<T: Serialize>(rows: &T) -> Result<String, EtlError> {
    serde_json::to_string(rows).map_err(|err| EtlError::Postgres(sqlx::Error::Encode(err.into())))
}

pub fn parse_job_id(job_id: &str) -> Result<uuid::Uuid, EtlError> {
    uuid::Uuid::parse_str(job_id).map_err(|_| EtlError::JobNotFound(job_id.to_owned()))
}

/// Timestamps in summaries: RFC 3339, UTC, milliseconds.
pub fn timestamp(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

fn parse_time(rfc3339: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(rfc3339)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// Postgres `COPY ... FROM STDIN` text format: tab-separated, `\\N` for NULL, backslash escapes.
mod copy_text {
    use crate::chunk::ValidRow;

    fn text(out: &mut Vec<u8>, value: &str) {
        for byte in value.bytes() {
            match byte {
                b'\\' => out.extend_from_slice(b"\\\\"),
                b'\t' => out.extend_from_slice(b"\\t"),
                b'\n' => out.extend_from_slice(b"\\n"),
                b'\r' => out.extend_from_slice(b"\\r"),
                other => out.push(other),
            }
        }
    }

    fn optional(out: &mut Vec<u8>, value: Option<&str>) {
        match value {
            Some(value) => text(out, value),
            None => out.extend_from_slice(b"\\N"),
        }
    }

    /// An array literal (`{"a","b"}`), itself escaped as text.
    fn array(out: &mut Vec<u8>, values: &[String]) {
        let mut literal = String::from("{");
        for (i, value) in values.iter().enumerate() {
            if i > 0 {
                literal.push(',');
            }
            literal.push('"');
            for c in value.chars() {
                if c == '"' || c == '\\' {
                    literal.push('\\');
                }
                literal.push(c);
            }
            literal.push('"');
        }
        literal.push('}');
        text(out, &literal);
    }

    pub(super) fn item_row(out: &mut Vec<u8>, row: &ValidRow) {
        let item = &row.item;
        let price = item.price.map(|p| p.to_string());
        let weight = item.weight_grams.map(|w| w.to_string());
        let attributes = serde_json::to_string(&item.attributes).unwrap_or_else(|_| "{}".into());
        text(out, &item.sku);
        out.push(b'\t');
        text(out, &item.name);
        out.push(b'\t');
        optional(out, item.brand.as_deref());
        out.push(b'\t');
        optional(out, item.category.as_deref());
        out.push(b'\t');
        optional(out, item.description.as_deref());
        out.push(b'\t');
        optional(out, price.as_deref());
        out.push(b'\t');
        text(out, &item.currency);
        out.push(b'\t');
        optional(out, weight.as_deref());
        out.push(b'\t');
        optional(out, item.availability.map(|a| a.as_str()));
        out.push(b'\t');
        text(out, &item.product_url);
        out.push(b'\t');
        array(out, &item.image_urls);
        out.push(b'\t');
        text(out, &attributes);
        out.push(b'\t');
        out.extend_from_slice(row.row_number.to_string().as_bytes());
        out.push(b'\n');
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn escapes_text_nulls_and_arrays() {
            let mut out = Vec::new();
            text(&mut out, "a\tb\\c\nd\re \\N");
            assert_eq!(out, b"a\\tb\\\\c\\nd\\re \\\\N");
            out.clear();
            optional(&mut out, None);
            assert_eq!(out, b"\\N");
            out.clear();
            array(&mut out, &["x,\"y\"".to_owned(), "back\\slash".to_owned()]);
            assert_eq!(
                String::from_utf8(out).unwrap(),
                r#"{"x,\\"y\\"","back\\\\slash"}"#
            );
        }
    }
}
