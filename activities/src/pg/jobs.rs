//! Job rows: created and planned by the workflow's plan activity, totals and reconciliation,
//! sealing and the final status, summaries.

use chrono::{DateTime, Utc};
use serde_json::json;
use sqlx::{Postgres, Row, Transaction};

use super::{ObjectVersion, PgStore, parse_job_id, parse_time, timestamp};
use crate::{
    error::EtlError,
    model::{
        IngestRequest, JobObject, JobReconciliation, JobSummary, JobTotals, ObjectMeta,
        Reconciliation,
    },
    planner::PlannedChunk,
    s3::format_time,
};

/// The distinct items of a job's committed chunks; `job` is the SQL expression of the job's id.
/// A chunk's skus outside its `shared_skus` are in that chunk only, so they are counted chunk by
/// chunk, and only the shared ones (a few, unless the object repeats many skus far apart; all of
/// a chunk committed before the column) are hashed across chunks: a distinct count of all of a
/// job's skus took 0.09 s of Postgres on 200,000 rows.
fn committed_items(job: &str) -> String {
    format!(
        "((SELECT coalesce(sum(cardinality(skus) - cardinality(shared_skus)), 0)::bigint
           FROM etl_chunks WHERE job_id = {job})
          + (SELECT count(DISTINCT s) FROM etl_chunks, unnest(coalesce(shared_skus, skus)) AS s
             WHERE job_id = {job}))"
    )
}

/// A job row as the plan activity finds it.
#[derive(Debug, Clone)]
pub struct JobState {
    pub status: String,
    pub planned: Option<(u32, u64)>,
    pub object: Option<ObjectMeta>,
}

/// Other jobs of a source whose catalog writes may not have reached ClickHouse yet.
#[derive(Debug, Clone, Default)]
pub struct SourceActivity {
    pub busy_jobs: Vec<String>,
}

/// What later steps of a job need to know about it.
#[derive(Debug, Clone)]
pub struct JobFacts {
    pub source: String,
    pub source_rows: u64,
    pub dry_run: bool,
    pub partial: bool,
    pub allow_mass_delist: bool,
    pub max_record_bytes: u64,
    pub bucket: String,
    pub version: ObjectVersion,
}

/// The plan being stored while the object is scanned. Each batch of chunks commits on its own
/// (no transaction stays open across the S3 scan); the plan counts only once `finish` sets
/// `planned_at`, and a scan that starts again stores the same chunks again (the plan of an
/// object version is deterministic), so the attempt that completes the plan finds every chunk
/// stored as it stored it: a batch of another attempt commits before the completing
/// transaction takes the job row, or finds the plan complete and writes nothing. Once a plan
/// is complete, nothing of it changes: a stale attempt that ends late writes nothing.
pub struct PlanWriter<'a> {
    pg: &'a PgStore,
    job_id: uuid::Uuid,
}

/// Who finds the mention hashes that more than one chunk carries (each chunk's
/// `shared_hashes`).
pub enum SharedMentions<'a> {
    /// Postgres, from every chunk's hashes, stored by [`PlanWriter::add_chunks`]: the plan of
    /// an object with more mentions than the worker keeps in memory.
    InPostgres,
    /// The worker found them ([`crate::planner::keep_shared_mentions`]): these are the plan's
    /// chunks, each with its shared hashes only, stored by `finish` itself.
    Found(&'a [PlannedChunk]),
}

/// How a plan transaction holds the job row.
#[derive(Clone, Copy)]
enum RowLock {
    Share,
    Update,
}

/// Which hash column a chunk's hashes go to.
#[derive(Clone, Copy)]
enum HashColumn {
    Mentions,
    Shared,
}

impl PlanWriter<'_> {
    /// Locks the job row for the rest of `tx`; whether its plan is complete.
    async fn lock_planned(
        &self,
        tx: &mut sqlx::PgConnection,
        lock: RowLock,
    ) -> Result<bool, EtlError> {
        let statement = match lock {
            RowLock::Share => "SELECT planned_at IS NOT NULL FROM etl_jobs WHERE id = $1 FOR SHARE",
            RowLock::Update => {
                "SELECT planned_at IS NOT NULL FROM etl_jobs WHERE id = $1 FOR UPDATE"
            }
        };
        Ok(sqlx::query_scalar(statement)
            .bind(self.job_id)
            .fetch_one(tx)
            .await?)
    }

    /// Stores chunks with every mention hash they carry (for [`SharedMentions::InPostgres`]).
    pub async fn add_chunks(&mut self, chunks: &[PlannedChunk]) -> Result<(), EtlError> {
        let mut tx = self.pg.pool().begin().await?;
        // Shares the job row with other attempts' batches; `finish` takes it exclusively.
        if !self.lock_planned(&mut tx, RowLock::Share).await? {
            store_chunks(&mut tx, self.job_id, chunks, HashColumn::Mentions).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Completes the plan in one transaction, unless another attempt has: each chunk's shared
    /// hashes are found or stored (`mentions`), and a full snapshot (`snapshot`) becomes its
    /// source's newest snapshot if it is newer than the registered one; that row lock waits
    /// for chunk transactions of the source in flight, so none of them straddles the change.
    pub async fn finish(
        self,
        source: &str,
        header_raw: &[u8],
        chunks: u32,
        source_rows: u64,
        snapshot: Option<&ObjectVersion>,
        mentions: SharedMentions<'_>,
    ) -> Result<(), EtlError> {
        let mut tx = self.pg.pool().begin().await?;
        if self.lock_planned(&mut tx, RowLock::Update).await? {
            return Ok(());
        }
        match mentions {
            SharedMentions::Found(planned) => {
                store_chunks(&mut tx, self.job_id, planned, HashColumn::Shared).await?;
            }
            SharedMentions::InPostgres => {
                sqlx::query(
                    "WITH shared AS MATERIALIZED (
                         SELECT h FROM etl_chunks, unnest(mention_hashes) AS h
                         WHERE job_id = $1 GROUP BY h HAVING count(*) > 1)
                     UPDATE etl_chunks c
                     SET shared_hashes = (SELECT array_agg(h ORDER BY h)
                                          FROM unnest(c.mention_hashes) h
                                          WHERE h IN (SELECT h FROM shared)),
                         mention_hashes = NULL
                     WHERE c.job_id = $1",
                )
                .bind(self.job_id)
                .execute(&mut *tx)
                .await?;
            }
        }
        sqlx::query(
            "UPDATE etl_jobs SET header_raw = $2, chunks = $3, source_rows = $4,
                    planned_at = clock_timestamp(), updated_at = now()
             WHERE id = $1",
        )
        .bind(self.job_id)
        .bind(header_raw)
        .bind(chunks as i32)
        .bind(source_rows as i64)
        .execute(&mut *tx)
        .await?;
        if let Some(version) = snapshot {
            sqlx::query(
                "UPDATE catalog_sources SET snapshot_modified_at = $2, snapshot_key = $3,
                        snapshot_etag = $4, snapshot_job_id = $5, updated_at = now()
                 WHERE source = $1
                   AND (snapshot_modified_at IS NULL
                        OR (snapshot_modified_at, snapshot_key, snapshot_etag) < ($2, $3, $4))",
            )
            .bind(source)
            .bind(version.modified_at)
            .bind(&version.key)
            .bind(&version.etag)
            .bind(self.job_id)
            .execute(&mut *tx)
            .await?;
            // Read after the registration, which waited for every chunk of the source in
            // flight: what is not in the catalog now can only come from newer objects.
            sqlx::query(
                "UPDATE etl_jobs SET catalog_was_empty = NOT EXISTS (
                     SELECT 1 FROM catalog_items WHERE source = $2)
                 WHERE id = $1",
            )
            .bind(self.job_id)
            .bind(source)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }
}

/// Stores planned chunks, each with its hashes in `column` and the other hash column empty; a
/// chunk stored before (by this plan's earlier attempt) takes the new values.
async fn store_chunks(
    tx: &mut Transaction<'_, Postgres>,
    job_id: uuid::Uuid,
    chunks: &[PlannedChunk],
    column: HashColumn,
) -> Result<(), EtlError> {
    let (store, clear) = match column {
        HashColumn::Mentions => ("mention_hashes", "shared_hashes"),
        HashColumn::Shared => ("shared_hashes", "mention_hashes"),
    };
    for batch in chunks.chunks(1_000) {
        let index: Vec<i32> = batch.iter().map(|c| c.index as i32).collect();
        let start: Vec<i64> = batch.iter().map(|c| c.start as i64).collect();
        let end: Vec<i64> = batch.iter().map(|c| c.end as i64).collect();
        let first_row: Vec<i64> = batch.iter().map(|c| c.first_row as i64).collect();
        let rows: Vec<i64> = batch.iter().map(|c| c.rows as i64).collect();
        // Postgres arrays of arrays must be rectangular: one array literal per chunk.
        let hashes: Vec<String> = batch.iter().map(|c| bigint_array(&c.mentions)).collect();
        sqlx::query(&format!(
            "INSERT INTO etl_chunks (job_id, chunk_index, byte_start, byte_end, first_row,
                                     planned_rows, {store})
             SELECT $1, c.i, c.s, c.e, c.f, c.r, c.m::bigint[]
             FROM UNNEST($2::int[], $3::bigint[], $4::bigint[], $5::bigint[], $6::bigint[],
                         $7::text[]) AS c(i, s, e, f, r, m)
             ON CONFLICT (job_id, chunk_index) DO UPDATE
             SET {store} = EXCLUDED.{store}, {clear} = NULL"
        ))
        .bind(job_id)
        .bind(index)
        .bind(start)
        .bind(end)
        .bind(first_row)
        .bind(rows)
        .bind(hashes)
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

/// A job's mode in words (empty for a plain snapshot ingest), for messages.
pub fn mode_words(dry_run: bool, partial: bool, allow_mass_delist: bool) -> String {
    [
        (dry_run, " (dry run)"),
        (partial, " (--partial)"),
        (allow_mass_delist, " (--allow-mass-delist)"),
    ]
    .iter()
    .filter(|(set, _)| *set)
    .map(|(_, words)| *words)
    .collect()
}

/// `{1,2,3}`: a Postgres array literal of integers.
fn bigint_array(values: &[i64]) -> String {
    use std::fmt::Write;
    let mut literal = String::with_capacity(2 + values.len() * 21);
    literal.push('{');
    for (i, value) in values.iter().enumerate() {
        if i > 0 {
            literal.push(',');
        }
        let _ = write!(literal, "{value}");
    }
    literal.push('}');
    literal
}

impl PgStore {
    /// Creates the job row with the request's options, or finds the one an earlier attempt
    /// (or run) created. A row for another object, ETag or mode under the same id is a
    /// conflict, not this job. A re-run links to the job it supersedes in the same
    /// transaction; a job has one successor.
    pub async fn open_job(
        &self,
        request: &IngestRequest,
        workflow_id: &str,
    ) -> Result<JobState, EtlError> {
        let job_id = parse_job_id(&request.job_id)?;
        let supersedes = request
            .supersedes
            .as_ref()
            .map(|s| parse_job_id(&s.job_id))
            .transpose()?;
        let options = &request.options;
        let mut tx = self.pool().begin().await?;
        sqlx::query(
            "INSERT INTO etl_jobs (id, workflow_id, source, bucket, object_key, etag, dry_run,
                                   chunk_bytes, supersedes_job_id, max_record_bytes, partial,
                                   allow_mass_delist, heartbeat_timeout_secs,
                                   history_event_budget, retry_max_interval_secs,
                                   max_job_duration_secs)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)
             ON CONFLICT (id) DO NOTHING",
        )
        .bind(job_id)
        .bind(workflow_id)
        .bind(&request.source)
        .bind(&request.bucket)
        .bind(&request.key)
        .bind(&request.etag)
        .bind(request.dry_run)
        .bind(options.chunk_bytes as i64)
        .bind(supersedes)
        .bind(options.max_record_bytes as i64)
        .bind(options.partial)
        .bind(options.allow_mass_delist)
        .bind(options.heartbeat_timeout_secs as i64)
        .bind(options.history_event_budget as i32)
        .bind(options.retry_max_interval_secs as i64)
        .bind(options.max_job_duration_secs as i64)
        .execute(&mut *tx)
        .await?;
        let row = sqlx::query(
            "SELECT status, source, bucket, object_key, etag, dry_run, partial,
                    allow_mass_delist, planned_at IS NOT NULL AS planned, chunks, source_rows,
                    last_modified, size
             FROM etl_jobs WHERE id = $1",
        )
        .bind(job_id)
        .fetch_one(&mut *tx)
        .await?;
        let same = row.get::<String, _>("source") == request.source
            && row.get::<String, _>("bucket") == request.bucket
            && row.get::<String, _>("object_key") == request.key
            && row.get::<String, _>("etag") == request.etag
            && row.get::<bool, _>("dry_run") == request.dry_run
            && row.get::<bool, _>("partial") == options.partial
            && row.get::<bool, _>("allow_mass_delist") == options.allow_mass_delist;
        if !same {
            return Err(EtlError::JobConflict(format!(
                "job {} (workflow {workflow_id}) exists for {} s3://{}/{} ETag {}{}, not for \
                 this request",
                request.job_id,
                row.get::<String, _>("source"),
                row.get::<String, _>("bucket"),
                row.get::<String, _>("object_key"),
                row.get::<String, _>("etag"),
                mode_words(
                    row.get("dry_run"),
                    row.get("partial"),
                    row.get("allow_mass_delist")
                )
            )));
        }
        if let (Some(rerun), Some(origin)) = (&request.supersedes, supersedes) {
            link_successor(&mut tx, origin, job_id, rerun.rerun).await?;
        }
        if !request.dry_run {
            sqlx::query(
                "INSERT INTO catalog_sources (source) VALUES ($1) ON CONFLICT (source) DO NOTHING",
            )
            .bind(&request.source)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        let planned: bool = row.get("planned");
        let object = match (
            row.get::<Option<DateTime<Utc>>, _>("last_modified"),
            row.get::<Option<i64>, _>("size"),
        ) {
            (Some(modified), Some(size)) => Some(ObjectMeta {
                bucket: request.bucket.clone(),
                key: request.key.clone(),
                etag: request.etag.clone(),
                size: size as u64,
                last_modified: format_time(modified),
            }),
            _ => None,
        };
        Ok(JobState {
            status: row.get("status"),
            planned: planned.then(|| {
                (
                    row.get::<Option<i32>, _>("chunks").unwrap_or(0) as u32,
                    row.get::<Option<i64>, _>("source_rows").unwrap_or(0) as u64,
                )
            }),
            object,
        })
    }

    pub async fn record_object(
        &self,
        job_id: &str,
        object: &ObjectMeta,
        deadline_at: DateTime<Utc>,
    ) -> Result<(), EtlError> {
        sqlx::query(
            "UPDATE etl_jobs SET size = $2, last_modified = $3, deadline_at = $4,
                    updated_at = now()
             WHERE id = $1",
        )
        .bind(parse_job_id(job_id)?)
        .bind(object.size as i64)
        .bind(parse_time(&object.last_modified))
        .bind(deadline_at)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    pub fn plan_writer(&self, job_id: &str) -> Result<PlanWriter<'_>, EtlError> {
        Ok(PlanWriter {
            pg: self,
            job_id: parse_job_id(job_id)?,
        })
    }

    /// The planned chunks' byte ranges `[start, end)`, in chunk order, if the plan has at most
    /// `limit` chunks (the workflow names them in its activity summaries).
    pub async fn chunk_ranges(&self, job_id: &str, limit: u32) -> Result<Vec<[u64; 2]>, EtlError> {
        let rows: Vec<(i64, i64)> = sqlx::query_as(
            "SELECT byte_start, byte_end FROM etl_chunks WHERE job_id = $1
             ORDER BY chunk_index LIMIT $2",
        )
        .bind(parse_job_id(job_id)?)
        .bind(i64::from(limit) + 1)
        .fetch_all(self.pool())
        .await?;
        if rows.len() > limit as usize {
            return Ok(Vec::new());
        }
        Ok(rows
            .into_iter()
            .map(|(start, end)| [start as u64, end as u64])
            .collect())
    }

    /// Job totals from the ledger: committed chunks only, each counted once by construction.
    pub async fn totals(&self, job_id: &str) -> Result<JobTotals, EtlError> {
        let id = parse_job_id(job_id)?;
        let row = sqlx::query(&format!(
            "SELECT count(*) AS chunks,
                    count(*) FILTER (WHERE status = 'committed') AS committed,
                    coalesce(sum(rows_total), 0)::bigint AS rows_total,
                    coalesce(sum(rows_valid), 0)::bigint AS rows_valid,
                    coalesce(sum(rows_invalid), 0)::bigint AS rows_invalid,
                    (SELECT count(DISTINCT s) FROM etl_chunks c, unnest(c.relisted_skus) AS s
                     WHERE c.job_id = $1)
                    + coalesce(sum(items_relisted) FILTER (WHERE relisted_skus IS NULL), 0)::bigint
                        AS relisted,
                    {} AS items
             FROM etl_chunks WHERE job_id = $1",
            committed_items("$1")
        ))
        .bind(id)
        .fetch_one(self.pool())
        .await?;
        Ok(JobTotals {
            chunks: row.get::<i64, _>("chunks") as u32,
            chunks_committed: row.get::<i64, _>("committed") as u32,
            rows_total: row.get::<i64, _>("rows_total") as u64,
            rows_valid: row.get::<i64, _>("rows_valid") as u64,
            rows_invalid: row.get::<i64, _>("rows_invalid") as u64,
            items: row.get::<i64, _>("items") as u64,
            items_relisted: row.get::<i64, _>("relisted") as u64,
        })
    }

    /// Totals of a job whose chunks are all committed; from now on the job counts as done with
    /// its chunk phase for other jobs of its source.
    pub async fn store_totals(&self, job_id: &str, totals: &JobTotals) -> Result<(), EtlError> {
        sqlx::query(
            "UPDATE etl_jobs SET rows_total = $2, rows_valid = $3, rows_invalid = $4,
                    items = CASE WHEN dry_run THEN NULL ELSE $5 END,
                    items_relisted = CASE WHEN dry_run THEN NULL ELSE $6 END,
                    accepting_commits = false, updated_at = now()
             WHERE id = $1",
        )
        .bind(parse_job_id(job_id)?)
        .bind(totals.rows_total as i64)
        .bind(totals.rows_valid as i64)
        .bind(totals.rows_invalid as i64)
        .bind(totals.items as i64)
        .bind(totals.items_relisted as i64)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    pub async fn job_facts(&self, job_id: &str) -> Result<JobFacts, EtlError> {
        let row = sqlx::query(
            "SELECT source, source_rows, dry_run, partial, allow_mass_delist, max_record_bytes,
                    bucket, object_key, etag, last_modified
             FROM etl_jobs WHERE id = $1",
        )
        .bind(parse_job_id(job_id)?)
        .fetch_optional(self.pool())
        .await?
        .ok_or_else(|| EtlError::JobNotFound(job_id.to_owned()))?;
        let key: String = row.get("object_key");
        let bucket: String = row.get("bucket");
        Ok(JobFacts {
            source: row.get("source"),
            source_rows: row.get::<Option<i64>, _>("source_rows").unwrap_or(0) as u64,
            dry_run: row.get("dry_run"),
            partial: row.get("partial"),
            allow_mass_delist: row.get("allow_mass_delist"),
            max_record_bytes: row.get::<i64, _>("max_record_bytes") as u64,
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
        })
    }

    /// (invalid rows logged for the job, logs of it deleted by retention since)
    pub async fn invalid_logged(&self, job_id: &str) -> Result<(u64, u64), EtlError> {
        let id = parse_job_id(job_id)?;
        let row = sqlx::query(
            "SELECT (SELECT count(*) FROM invalid_item_logs WHERE job_id = $1),
                    (SELECT invalid_rows_pruned FROM etl_jobs WHERE id = $1)",
        )
        .bind(id)
        .fetch_one(self.pool())
        .await?;
        Ok((
            row.get::<i64, _>(0) as u64,
            row.get::<Option<i64>, _>(1).unwrap_or(0) as u64,
        ))
    }

    pub async fn store_reconciliation(
        &self,
        job_id: &str,
        reconciliation: &Reconciliation,
    ) -> Result<(), EtlError> {
        sqlx::query(
            "UPDATE etl_jobs SET reconciliation = $2, reconciled_ok = $3, updated_at = now()
             WHERE id = $1",
        )
        .bind(parse_job_id(job_id)?)
        .bind(json!(reconciliation))
        .bind(reconciliation.ok)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// The reconciliation the workflow stored for the job.
    pub async fn stored_reconciliation(&self, job_id: &str) -> Result<Reconciliation, EtlError> {
        let stored: Option<serde_json::Value> =
            sqlx::query_scalar("SELECT reconciliation FROM etl_jobs WHERE id = $1")
                .bind(parse_job_id(job_id)?)
                .fetch_optional(self.pool())
                .await?
                .ok_or_else(|| EtlError::JobNotFound(job_id.to_owned()))?;
        stored
            .and_then(|value| serde_json::from_value(value).ok())
            .ok_or_else(|| {
                EtlError::Reconciliation(format!("job {job_id} has not been reconciled yet"))
            })
    }

    /// No chunk of the job can commit after this: an attempt that outlived its lease finds the
    /// job sealed and writes nothing, so what the workflow reports stays what is stored. Waits
    /// for the job's chunk transactions in flight (they hold the job row FOR SHARE).
    pub async fn seal(&self, job_id: &str) -> Result<(), EtlError> {
        sqlx::query(
            "UPDATE etl_jobs SET accepting_commits = false, updated_at = now() WHERE id = $1",
        )
        .bind(parse_job_id(job_id)?)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Running jobs of `source` other than `job_id` that may still change the catalog or have
    /// not copied their changes to ClickHouse yet: comparing the stores must wait for them.
    /// Ended jobs never count (what they owe ClickHouse, the comparing job copies first), so
    /// the cost is that of the running jobs, whatever the source's history.
    pub async fn source_activity(
        &self,
        source: &str,
        job_id: &str,
    ) -> Result<SourceActivity, EtlError> {
        let rows = sqlx::query(
            "SELECT j.id FROM etl_jobs j
             WHERE j.source = $1 AND j.status = 'running' AND j.id <> $2 AND NOT j.dry_run
               AND (j.accepting_commits
                    OR EXISTS (SELECT 1 FROM etl_chunks c WHERE c.job_id = j.id
                               AND c.status = 'committed' AND NOT c.clickhouse_written))
             LIMIT 10",
        )
        .bind(source)
        .bind(parse_job_id(job_id)?)
        .fetch_all(self.pool())
        .await?;
        Ok(SourceActivity {
            busy_jobs: rows
                .iter()
                .map(|row| row.get::<uuid::Uuid, _>(0).to_string())
                .collect(),
        })
    }

    /// The job's status and error, or `None` when no job row exists (yet).
    pub async fn job_status(
        &self,
        job_id: &str,
    ) -> Result<Option<(String, Option<String>)>, EtlError> {
        let row = sqlx::query("SELECT status, error FROM etl_jobs WHERE id = $1")
            .bind(parse_job_id(job_id)?)
            .fetch_optional(self.pool())
            .await?;
        Ok(row.map(|row| (row.get("status"), row.get("error"))))
    }

    pub async fn job_summary(&self, job_id: &str) -> Result<JobSummary, EtlError> {
        let id = parse_job_id(job_id)?;
        let row = sqlx::query(&format!(
            "SELECT j.id, j.workflow_id, j.source, j.status, j.error, j.error_type, j.dry_run,
                    j.partial, j.allow_mass_delist, j.bucket, j.object_key, j.etag, j.size,
                    j.last_modified, j.chunks, j.delist_refused,
                    -- A job that did not complete reports what its committed chunks hold.
                    CASE WHEN NOT j.dry_run THEN coalesce(j.items, {}) END AS items,
                    CASE WHEN NOT j.dry_run THEN coalesce(j.items_delisted, 0) END
                        AS items_delisted,
                    CASE WHEN NOT j.dry_run THEN coalesce(j.items_relisted, c.relisted) END
                        AS items_relisted,
                    j.reconciliation, j.created_at, j.finished_at, j.deadline_at,
                    j.supersedes_job_id, j.superseded_by_job_id, j.superseded_at, j.verified_at,
                    j.verified_ok, j.ledger_pruned_at,
                    j.delisted_at IS NOT NULL AND NOT j.delist_clickhouse_written
                        AS delisting_pending,
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
                                         AND NOT j.dry_run) AS clickhouse_pending,
                        (SELECT count(DISTINCT s) FROM etl_chunks r, unnest(r.relisted_skus) s
                         WHERE r.job_id = j.id)
                        + coalesce(sum(items_relisted) FILTER (WHERE relisted_skus IS NULL), 0)
                            ::bigint AS relisted
                 FROM etl_chunks WHERE job_id = j.id
             ) c
             WHERE j.id = $1",
            committed_items("j.id")
        ))
        .bind(id)
        .fetch_optional(self.pool())
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
                invalid_pruned: r.invalid_pruned,
                pg_listed: r.catalog.as_ref().map(|c| c.postgres.listed),
                ch_listed: r.catalog.as_ref().map(|c| c.clickhouse.listed),
                catalog_ok: r.catalog.as_ref().map(|c| c.ok),
                ok: r.ok,
            });
        let count = |column: &str| row.get::<Option<i64>, _>(column).map(|n| n as u64);
        Ok(JobSummary {
            job_id: row.get::<uuid::Uuid, _>("id").to_string(),
            workflow_id: row.get("workflow_id"),
            source: row.get("source"),
            status: row.get("status"),
            error: row.get("error"),
            error_type: row.get("error_type"),
            dry_run: row.get("dry_run"),
            partial: row.get("partial"),
            allow_mass_delist: row.get("allow_mass_delist"),
            rows_total: row.get::<i64, _>("rows_total") as u64,
            rows_valid: row.get::<i64, _>("rows_valid") as u64,
            rows_invalid: row.get::<i64, _>("rows_invalid") as u64,
            items: count("items"),
            items_delisted: count("items_delisted"),
            items_relisted: count("items_relisted"),
            delist_refused: row.get("delist_refused"),
            chunks: row.get::<Option<i32>, _>("chunks").unwrap_or(0) as u32,
            // Only completed jobs' ledgers are pruned: every chunk of theirs committed.
            chunks_committed: match row.get::<Option<DateTime<Utc>>, _>("ledger_pruned_at") {
                Some(_) => row.get::<Option<i32>, _>("chunks").unwrap_or(0) as u32,
                None => row.get::<i64, _>("committed") as u32,
            },
            object: JobObject {
                bucket: row.get("bucket"),
                key: row.get("object_key"),
                etag: row.get("etag"),
                size: count("size"),
                last_modified: row
                    .get::<Option<DateTime<Utc>>, _>("last_modified")
                    .map(format_time),
            },
            reconciliation,
            deadline_at: row
                .get::<Option<DateTime<Utc>>, _>("deadline_at")
                .map(timestamp),
            created_at: timestamp(row.get("created_at")),
            finished_at: row
                .get::<Option<DateTime<Utc>>, _>("finished_at")
                .map(timestamp),
            chunks_clickhouse_pending: row.get::<i64, _>("clickhouse_pending") as u32,
            delisting_clickhouse_pending: row.get("delisting_pending"),
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
            ledger_pruned_at: row
                .get::<Option<DateTime<Utc>>, _>("ledger_pruned_at")
                .map(timestamp),
            workflow_status: None,
            chunk_details: None,
        })
    }
}

/// Links a re-run to its origin both ways. The origin must be in a state the re-run is for,
/// and has at most one successor.
async fn link_successor(
    tx: &mut Transaction<'_, Postgres>,
    origin: uuid::Uuid,
    successor: uuid::Uuid,
    rerun: crate::model::Rerun,
) -> Result<(), EtlError> {
    let row =
        sqlx::query("SELECT status, superseded_by_job_id FROM etl_jobs WHERE id = $1 FOR UPDATE")
            .bind(origin)
            .fetch_optional(&mut **tx)
            .await?
            .ok_or_else(|| EtlError::JobNotFound(origin.to_string()))?;
    match row.get::<Option<uuid::Uuid>, _>("superseded_by_job_id") {
        Some(existing) if existing == successor => return Ok(()),
        Some(existing) => {
            return Err(EtlError::JobConflict(format!(
                "job {origin} was already superseded by job {existing}"
            )));
        }
        None => {}
    }
    let status: String = row.get("status");
    if !rerun.allowed(&status) {
        return Err(EtlError::NotAllowed(format!(
            "job {origin} is {status}: `{}` is not for {status} jobs",
            rerun.verb()
        )));
    }
    sqlx::query(
        "UPDATE etl_jobs SET superseded_by_job_id = $2, superseded_at = now(), updated_at = now()
         WHERE id = $1",
    )
    .bind(origin)
    .bind(successor)
    .execute(&mut **tx)
    .await?;
    Ok(())
}
