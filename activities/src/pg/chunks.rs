//! The chunk ledger: one row per planned chunk, and the Postgres side of a chunk's commit. The
//! protocol that orders these statements against S3 and ClickHouse is
//! [`crate::chunk_protocol`]; its locks and invariants are stated there.

use std::collections::HashSet;

use chrono::{DateTime, Utc};
use sqlx::{Postgres, Row, Transaction};

use super::{
    ObjectVersion, PgStore,
    catalog::{self, CatalogWrite, WrittenItem},
    parse_job_id,
};
use crate::{
    chunk::{ParsedChunk, ValidRow},
    error::EtlError,
    model::{ChunkOutcome, JobStatus},
};

/// What a chunk attempt needs to know, read in one query that also counts the attempt.
#[derive(Debug, Clone)]
pub struct ChunkWork {
    pub job_id: uuid::Uuid,
    pub chunk_index: u32,
    /// This attempt's number in the ledger: only the latest attempt may commit.
    pub lease: i32,
    pub source: String,
    pub bucket: String,
    pub dry_run: bool,
    pub version: ObjectVersion,
    pub header_raw: Vec<u8>,
    pub byte_start: u64,
    pub byte_end: u64,
    pub first_row: u64,
    pub planned_rows: u64,
    /// The plan's mention hashes of this chunk that other chunks of the object carry too
    /// (sorted): skus mentioned more than once are always written.
    pub shared_hashes: Vec<i64>,
    pub committed: Option<ChunkOutcome>,
    pub clickhouse_written: bool,
}

/// A chunk's open transaction, holding the ledger row's lock.
pub struct ChunkCommit {
    tx: Transaction<'static, Postgres>,
    work_job: uuid::Uuid,
    chunk_index: u32,
    pub mode: CatalogWrite,
}

/// See [`PgStore::copy_standing`].
pub struct CopyStanding {
    pub holds_lease: bool,
    /// ClickHouse holds no observation of the chunk's rows yet.
    pub first_copy: bool,
}

pub enum Begun {
    Open(ChunkCommit),
    /// An earlier attempt committed the chunk: its result stands.
    AlreadyCommitted(ChunkOutcome),
}

fn outcome_of(row: &sqlx::postgres::PgRow, chunk_index: u32) -> ChunkOutcome {
    ChunkOutcome {
        chunk_index,
        rows_total: row.get::<Option<i64>, _>("rows_total").unwrap_or(0) as u64,
        rows_valid: row.get::<Option<i64>, _>("rows_valid").unwrap_or(0) as u64,
        rows_invalid: row.get::<Option<i64>, _>("rows_invalid").unwrap_or(0) as u64,
    }
}

/// What [`chunk_work`] reads, from the ledger row `c` and its job `j`.
const CHUNK_WORK_COLUMNS: &str = "j.source, j.bucket, j.object_key, j.etag, j.dry_run, \
     j.last_modified, j.header_raw, c.attempts, c.byte_start, c.byte_end, c.first_row, \
     c.planned_rows, c.shared_hashes, c.status, c.rows_total, c.rows_valid, c.rows_invalid, \
     c.clickhouse_written";

impl PgStore {
    /// Reads what a chunk attempt needs and takes the chunk's lease (the attempt counter): an
    /// older attempt still running somewhere can no longer commit.
    pub async fn start_chunk_attempt(
        &self,
        job_id: &str,
        chunk_index: u32,
    ) -> Result<ChunkWork, EtlError> {
        let id = parse_job_id(job_id)?;
        let row = sqlx::query(&format!(
            "WITH attempt AS (
                 UPDATE etl_chunks
                 SET attempts = attempts + 1,
                     first_started_at = coalesce(first_started_at, now()),
                     last_started_at = now()
                 WHERE job_id = $1 AND chunk_index = $2
                 RETURNING *
             )
             SELECT {CHUNK_WORK_COLUMNS} FROM attempt c JOIN etl_jobs j ON j.id = c.job_id"
        ))
        .bind(id)
        .bind(chunk_index as i32)
        .fetch_optional(self.pool())
        .await?
        .ok_or_else(|| EtlError::PlanMismatch {
            job_id: job_id.to_owned(),
            chunk: chunk_index,
            reason: "no such chunk in the plan".to_owned(),
        })?;
        chunk_work(&row, id, chunk_index)
    }

    /// What a committed chunk's copy to ClickHouse needs, without taking its lease (the copy
    /// of an ended job's chunk, made by a later job of the source).
    pub async fn committed_chunk(
        &self,
        job_id: uuid::Uuid,
        chunk_index: u32,
    ) -> Result<ChunkWork, EtlError> {
        let row = sqlx::query(&format!(
            "SELECT {CHUNK_WORK_COLUMNS} FROM etl_chunks c JOIN etl_jobs j ON j.id = c.job_id
             WHERE c.job_id = $1 AND c.chunk_index = $2"
        ))
        .bind(job_id)
        .bind(chunk_index as i32)
        .fetch_one(self.pool())
        .await?;
        chunk_work(&row, job_id, chunk_index)
    }

    /// Opens the chunk's transaction: locks its ledger row, then checks that it is still
    /// uncommitted, that this attempt holds the lease, and that the job still accepts commits.
    pub async fn begin_chunk_commit(&self, work: &ChunkWork) -> Result<Begun, EtlError> {
        let mut tx = self.pool().begin().await?;
        let row = sqlx::query(
            "SELECT status, attempts, rows_total, rows_valid, rows_invalid FROM etl_chunks
             WHERE job_id = $1 AND chunk_index = $2 FOR UPDATE",
        )
        .bind(work.job_id)
        .bind(work.chunk_index as i32)
        .fetch_one(&mut *tx)
        .await?;
        if row.get::<String, _>("status") == "committed" {
            tx.rollback().await?;
            return Ok(Begun::AlreadyCommitted(outcome_of(&row, work.chunk_index)));
        }
        let stale_attempt = |reason: String| EtlError::StaleAttempt {
            job_id: work.job_id.to_string(),
            chunk: work.chunk_index,
            reason,
        };
        let attempts: i32 = row.get("attempts");
        if attempts != work.lease {
            return Err(stale_attempt(format!(
                "attempt {} lost its lease to attempt {attempts}; it writes nothing",
                work.lease
            )));
        }
        let (accepting, catalog_was_empty): (bool, bool) = sqlx::query_as(
            "SELECT accepting_commits, catalog_was_empty FROM etl_jobs WHERE id = $1 FOR SHARE",
        )
        .bind(work.job_id)
        .fetch_one(&mut *tx)
        .await?;
        if !accepting {
            return Err(stale_attempt(
                "the job is sealed (it ended or is ending); nothing more is committed".to_owned(),
            ));
        }
        let mode = if work.dry_run {
            CatalogWrite::Nothing
        } else {
            match catalog::write_mode(&mut tx, &work.source, &work.version).await? {
                // Every item of the first snapshot is new: nothing to compare first, and
                // nothing to conflict with, unless the object repeats a sku or another job
                // of the source runs (then it writes as `Forward`).
                CatalogWrite::Snapshot if catalog_was_empty => CatalogWrite::New,
                mode => mode,
            }
        };
        Ok(Begun::Open(ChunkCommit {
            tx,
            work_job: work.job_id,
            chunk_index: work.chunk_index,
            mode,
        }))
    }

    /// For the copy of a chunk this attempt has just committed: whether `lease` is still the
    /// chunk's latest attempt, and whether ClickHouse can hold none of the chunk's
    /// observations yet. No attempt of this job copied the chunk before (a copy follows the
    /// commit), so that is when no other job of the source ever ingested this object version
    /// (job rows are never deleted: a past one is found however old). Asked right before the
    /// copy, like the lookup of stored observations it spares, so it races with a concurrent
    /// job of the version no more than that lookup did; the block's token covers a concurrent
    /// copy of the same chunk.
    pub async fn copy_standing(&self, work: &ChunkWork) -> Result<CopyStanding, EtlError> {
        let (attempts, first_copy): (i32, bool) = sqlx::query_as(
            "SELECT c.attempts,
                    NOT EXISTS (SELECT 1 FROM etl_jobs o
                                WHERE o.bucket = j.bucket AND o.object_key = j.object_key
                                  AND o.etag = j.etag AND o.source = j.source
                                  AND o.id <> j.id AND NOT o.dry_run)
             FROM etl_chunks c JOIN etl_jobs j ON j.id = c.job_id
             WHERE c.job_id = $1 AND c.chunk_index = $2",
        )
        .bind(work.job_id)
        .bind(work.chunk_index as i32)
        .fetch_one(self.pool())
        .await?;
        Ok(CopyStanding {
            holds_lease: attempts == work.lease,
            first_copy,
        })
    }

    /// The chunk's ClickHouse copy is made; `observations_missing` when its observations
    /// could not be (the object changed before they were). Returns the chunk's latest attempt
    /// number: whoever made the copy, it is made.
    pub async fn mark_clickhouse_written(
        &self,
        job_id: uuid::Uuid,
        chunk_index: u32,
        observations_missing: bool,
    ) -> Result<i32, EtlError> {
        Ok(sqlx::query_scalar(
            "UPDATE etl_chunks SET clickhouse_written = true, clickhouse_written_at = now(),
                    observations_missing = $3
             WHERE job_id = $1 AND chunk_index = $2
             RETURNING attempts",
        )
        .bind(job_id)
        .bind(chunk_index as i32)
        .bind(observations_missing)
        .fetch_one(self.pool())
        .await?)
    }

    /// Committed chunks whose ClickHouse copy is not made: of this job (`job_id`) while it
    /// runs, and of every ended job of its source (a failed job's copies are made by the next
    /// job of the source). Reads the pending index only.
    pub async fn chunks_pending_clickhouse(
        &self,
        source: &str,
        job_id: uuid::Uuid,
    ) -> Result<Vec<(uuid::Uuid, u32)>, EtlError> {
        let rows: Vec<(uuid::Uuid, i32)> = sqlx::query_as(
            "SELECT c.job_id, c.chunk_index FROM etl_chunks c JOIN etl_jobs j ON j.id = c.job_id
             WHERE c.status = 'committed' AND NOT c.clickhouse_written
               AND j.source = $1 AND (j.id = $2 OR j.status <> 'running')
             ORDER BY j.created_at, c.chunk_index",
        )
        .bind(source)
        .bind(job_id)
        .fetch_all(self.pool())
        .await?;
        Ok(rows.into_iter().map(|(job, i)| (job, i as u32)).collect())
    }

    /// The skus whose catalog rows a committed chunk wrote.
    pub async fn written_skus(
        &self,
        job_id: uuid::Uuid,
        chunk_index: u32,
    ) -> Result<Vec<String>, EtlError> {
        let skus: Option<Vec<String>> = sqlx::query_scalar(
            "SELECT written_skus FROM etl_chunks WHERE job_id = $1 AND chunk_index = $2",
        )
        .bind(job_id)
        .bind(chunk_index as i32)
        .fetch_one(self.pool())
        .await?;
        Ok(skus.unwrap_or_default())
    }

    /// Status and error of each job, from the job rows (the record of truth).
    pub async fn job_statuses(&self, job_ids: &[String]) -> Result<Vec<JobStatus>, EtlError> {
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
            .map(|row| JobStatus {
                job_id: row.get::<uuid::Uuid, _>("id").to_string(),
                status: row.get("status"),
                error: row.get("error"),
            })
            .collect())
    }
}

/// The chunk and its job, from a row of the ledger joined with the job.
fn chunk_work(
    row: &sqlx::postgres::PgRow,
    job_id: uuid::Uuid,
    chunk_index: u32,
) -> Result<ChunkWork, EtlError> {
    let status: String = row.get("status");
    let bucket: String = row.get("bucket");
    let key: String = row.get("object_key");
    Ok(ChunkWork {
        job_id,
        chunk_index,
        lease: row.get("attempts"),
        source: row.get("source"),
        dry_run: row.get("dry_run"),
        version: ObjectVersion {
            modified_at: row
                .get::<Option<DateTime<Utc>>, _>("last_modified")
                .ok_or_else(|| EtlError::MissingLastModified {
                    bucket: bucket.clone(),
                    key: key.clone(),
                })?,
            key,
            etag: row.get("etag"),
        },
        bucket,
        header_raw: row
            .get::<Option<Vec<u8>>, _>("header_raw")
            .unwrap_or_default(),
        byte_start: row.get::<i64, _>("byte_start") as u64,
        byte_end: row.get::<i64, _>("byte_end") as u64,
        first_row: row.get::<i64, _>("first_row") as u64,
        planned_rows: row.get::<i64, _>("planned_rows") as u64,
        shared_hashes: row
            .get::<Option<Vec<i64>>, _>("shared_hashes")
            .unwrap_or_default(),
        committed: (status == "committed").then(|| outcome_of(row, chunk_index)),
        clickhouse_written: row.get("clickhouse_written"),
    })
}

impl ChunkCommit {
    /// Writes the chunk's latest row of each sku (`ParsedChunk::latest_per_sku`) to the catalog
    /// as `mode` allows (`always`: skus the object mentions more than once, written even when
    /// unchanged); returns the rows written.
    pub async fn write_catalog(
        &mut self,
        source: &str,
        version: &ObjectVersion,
        latest: &[&ValidRow],
        always: &HashSet<&str>,
    ) -> Result<Vec<WrittenItem>, EtlError> {
        catalog::upsert_items(
            &mut self.tx,
            catalog::Upsert {
                mode: self.mode,
                job_id: self.work_job,
                source,
                version,
                always,
            },
            latest,
        )
        .await
    }

    pub async fn record_invalid(&mut self, parsed: &ParsedChunk) -> Result<(), EtlError> {
        catalog::record_invalid(&mut self.tx, self.work_job, self.chunk_index, parsed).await
    }

    /// Commits the chunk and its ledger row. `clickhouse_written` is true when nothing is left
    /// to copy (a dry run, or no observation and no catalog row).
    pub async fn commit(
        mut self,
        outcome: &ChunkOutcome,
        parsed: &ParsedChunk,
        latest: &[&ValidRow],
        repeated: &HashSet<&str>,
        written: &[WrittenItem],
        clickhouse_written: bool,
    ) -> Result<(), EtlError> {
        let skus: Vec<&str> = latest.iter().map(|row| row.item.sku.as_str()).collect();
        // A sku in two chunks' `skus` is mentioned by both, so it is among both chunks'
        // repeated skus: the others are this chunk's alone.
        let shared_skus: Vec<&str> = skus
            .iter()
            .copied()
            .filter(|sku| repeated.contains(sku))
            .collect();
        let mut invalid_skus: Vec<&str> = parsed
            .invalid
            .iter()
            .filter_map(|row| row.sku.as_deref())
            .collect();
        invalid_skus.sort_unstable();
        invalid_skus.dedup();
        let written_skus: Vec<&str> = written.iter().map(|w| w.sku.as_str()).collect();
        let relisted: Vec<&str> = written
            .iter()
            .filter(|w| w.relisted)
            .map(|w| w.sku.as_str())
            .collect();
        sqlx::query(
            "UPDATE etl_chunks
             SET status = 'committed', rows_total = $3, rows_valid = $4, rows_invalid = $5,
                 skus = $6, invalid_skus = $7, written_skus = $8, relisted_skus = $9,
                 clickhouse_written = $10,
                 clickhouse_written_at = CASE WHEN $10 THEN now() END, shared_skus = $11,
                 committed_at = now()
             WHERE job_id = $1 AND chunk_index = $2",
        )
        .bind(self.work_job)
        .bind(self.chunk_index as i32)
        .bind(outcome.rows_total as i64)
        .bind(outcome.rows_valid as i64)
        .bind(outcome.rows_invalid as i64)
        .bind(&skus)
        .bind(&invalid_skus)
        .bind(&written_skus)
        .bind(&relisted)
        .bind(clickhouse_written)
        .bind(&shared_skus)
        .execute(&mut *self.tx)
        .await?;
        self.tx.commit().await?;
        Ok(())
    }
}
