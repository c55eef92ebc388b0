//! Activities: all I/O of the ETL (S3 reads, parsing, validation, Postgres and ClickHouse
//! writes). Each activity body returns a typed [`EtlError`]; it becomes a retryable or
//! non-retryable Temporal failure in exactly one place, [`EtlError::into_activity_error`].

pub mod audit;
pub mod ch;
pub mod chunk;
pub mod config;
pub mod contract;
pub mod error;
pub mod generator;
pub mod model;
pub mod ops;
pub mod pause;
pub mod pg;
pub mod planner;
pub mod s3;
pub mod temporal;
pub mod verify;

use std::sync::Arc;

use temporalio_macros::activities;
use temporalio_sdk::activities::{ActivityContext, ActivityError};

use crate::{
    ch::{ChStore, WrittenAlready},
    chunk::{parse_chunk, parse_header},
    config::Config,
    error::EtlError,
    model::{
        ChunkOutcome, ChunkTask, FinalizeRequest, IngestRequest, JobTotals, ObjectMeta, PlanResult,
        Reconciliation, RetentionBatch, RetentionBatchResult, SourceIngestRequest, SourceListing,
    },
    pause::PausePoint,
    pg::PgStore,
    planner::ChunkPlanner,
    s3::ObjectStore,
};

/// Heartbeat at least this often while scanning an object during planning.
const PLAN_HEARTBEAT_BYTES: u64 = 32 * 1024 * 1024;

/// Short activities heartbeat this often, whatever they wait on, so a worker that dies inside
/// one is noticed within the workflow's heartbeat timeout instead of the start-to-close timeout.
pub const SHORT_ACTIVITY_HEARTBEAT: std::time::Duration = std::time::Duration::from_secs(2);

async fn heartbeating<T>(ctx: &ActivityContext, work: impl Future<Output = T>) -> T {
    let mut work = std::pin::pin!(work);
    let mut ticker = tokio::time::interval(SHORT_ACTIVITY_HEARTBEAT);
    loop {
        tokio::select! {
            out = &mut work => return out,
            _ = ticker.tick() => ctx.record_heartbeat(()).await.ok(),
        };
    }
}

/// The clients every activity shares.
pub struct EtlActivities {
    pub pg: PgStore,
    pub ch: ChStore,
    pub s3: ObjectStore,
}

impl EtlActivities {
    /// Connects to every service and checks each one, so bad configuration fails at start-up
    /// with a message naming the service, not later inside a job.
    pub async fn connect(config: &Config) -> Result<Self, StartupError> {
        let pg = PgStore::connect(config)
            .await
            .map_err(|e| StartupError::new("Postgres (DATABASE_URL)", e))?;
        pg.migrate()
            .await
            .map_err(|e| StartupError::new("Postgres migrations", e))?;
        let ch = ChStore::new(config);
        ch.migrate()
            .await
            .map_err(|e| StartupError::new("ClickHouse (CLICKHOUSE_URL)", e))?;
        let s3 = ObjectStore::new(config);
        Ok(Self { pg, ch, s3 })
    }

    async fn plan_job(
        &self,
        ctx: &ActivityContext,
        request: &IngestRequest,
    ) -> Result<PlanResult, EtlError> {
        let workflow_id = ctx.info().workflow_id.clone().unwrap_or_default();
        let job = self.pg.open_job(request, &workflow_id).await?;
        let stored_object =
            |size: Option<u64>, modified: Option<chrono::DateTime<chrono::Utc>>| ObjectMeta {
                bucket: request.bucket.clone(),
                key: request.key.clone(),
                etag: request.etag.clone(),
                size: size.unwrap_or(0),
                last_modified: modified
                    .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
                    .unwrap_or_default(),
            };
        if job.status != "running" {
            let (chunks, source_rows) = job.planned.unwrap_or((0, 0));
            return Ok(PlanResult {
                job_id: request.job_id.clone(),
                chunks,
                source_rows,
                object: stored_object(job.size, job.last_modified),
                already_finished: true,
            });
        }
        let object = self.s3.head(&request.bucket, &request.key).await?;
        if object.etag != request.etag {
            return Err(EtlError::SourceChanged {
                bucket: request.bucket.clone(),
                key: request.key.clone(),
                expected: request.etag.clone(),
            });
        }
        self.pg.record_object(&request.job_id, &object).await?;
        if let Some((chunks, source_rows)) = job.planned {
            return Ok(PlanResult {
                job_id: request.job_id.clone(),
                chunks,
                source_rows,
                object,
                already_finished: false,
            });
        }
        if object.size == 0 {
            return Err(EtlError::EmptyObject {
                bucket: request.bucket.clone(),
                key: request.key.clone(),
            });
        }
        let mut body = self
            .s3
            .open_range(&request.bucket, &request.key, &request.etag, 0, None)
            .await?;
        let mut planner = ChunkPlanner::new(request.chunk_bytes);
        let mut scanned = 0u64;
        let mut next_heartbeat = PLAN_HEARTBEAT_BYTES;
        while let Some(bytes) = body.try_next().await.map_err(|err| {
            EtlError::S3(format!(
                "reading s3://{}/{}: {err}",
                request.bucket, request.key
            ))
        })? {
            planner.feed(&bytes);
            scanned += bytes.len() as u64;
            if scanned >= next_heartbeat {
                next_heartbeat += PLAN_HEARTBEAT_BYTES;
                ctx.record_heartbeat(scanned).await.ok();
            }
        }
        if scanned != object.size {
            return Err(EtlError::S3(format!(
                "short read of s3://{}/{}: {scanned} of {} bytes",
                request.bucket, request.key, object.size
            )));
        }
        pause::reached(PausePoint::Plan).await;
        let plan = planner.finish();
        let bad_header = |reason: String| EtlError::BadHeader {
            bucket: request.bucket.clone(),
            key: request.key.clone(),
            reason,
        };
        if plan.header.is_none() {
            return Err(bad_header("no header record (only blank lines)".to_owned()));
        }
        parse_header(&plan.header_bytes).map_err(|err| bad_header(err.to_string()))?;
        self.pg
            .record_plan(
                &request.job_id,
                &plan.header_bytes,
                &plan.chunks,
                plan.data_rows,
            )
            .await?;
        Ok(PlanResult {
            job_id: request.job_id.clone(),
            chunks: plan.chunks.len() as u32,
            source_rows: plan.data_rows,
            object,
            already_finished: false,
        })
    }

    async fn run_chunk(
        &self,
        ctx: &ActivityContext,
        task: &ChunkTask,
    ) -> Result<ChunkOutcome, EtlError> {
        let work = self
            .pg
            .start_chunk_attempt(&task.job_id, task.chunk_index)
            .await?;
        if let Some(outcome) = work.committed
            && (work.dry_run || work.clickhouse_written)
        {
            return Ok(outcome);
        }
        let started = std::time::Instant::now();
        let bytes = self
            .s3
            .read_range(
                &work.bucket,
                &work.key,
                &work.etag,
                work.byte_start,
                work.byte_end,
            )
            .await?;
        let read = started.elapsed();
        ctx.record_heartbeat(task.chunk_index).await.ok();
        let header = parse_header(&work.header_raw).map_err(|err| EtlError::PlanMismatch {
            job_id: task.job_id.clone(),
            chunk: task.chunk_index,
            reason: format!("stored header does not parse: {err}"),
        })?;
        let first_row = work.first_row;
        let parsed = tokio::task::spawn_blocking(move || parse_chunk(&header, &bytes, first_row))
            .await
            .map_err(|err| EtlError::PlanMismatch {
                job_id: task.job_id.clone(),
                chunk: task.chunk_index,
                reason: format!("parser task failed: {err}"),
            })?;
        let parse = started.elapsed() - read;
        if parsed.rows_total != work.planned_rows {
            return Err(EtlError::PlanMismatch {
                job_id: task.job_id.clone(),
                chunk: task.chunk_index,
                reason: format!(
                    "parsed {} records where the plan has {}",
                    parsed.rows_total, work.planned_rows
                ),
            });
        }
        let (outcome, already) = match work.committed {
            Some(outcome) => {
                let already = self.ch.written_already(&task.job_id, &parsed).await?;
                (outcome, already)
            }
            None => {
                let outcome = self
                    .pg
                    .commit_chunk(&task.job_id, task.chunk_index, &work, &parsed)
                    .await?;
                (outcome, WrittenAlready::default())
            }
        };
        let postgres = started.elapsed() - read - parse;
        if !work.dry_run {
            pause::reached(PausePoint::ChunkBeforeClickHouse).await;
            ctx.record_heartbeat(task.chunk_index).await.ok();
            self.ch
                .write_chunk(
                    &work.source,
                    &task.job_id,
                    work.last_modified,
                    &parsed,
                    already,
                )
                .await?;
            self.pg
                .mark_clickhouse_written(&task.job_id, task.chunk_index)
                .await?;
        }
        tracing::info!(
            job_id = %task.job_id,
            chunk = task.chunk_index,
            rows = outcome.rows_total,
            read_ms = read.as_millis() as u64,
            parse_ms = parse.as_millis() as u64,
            postgres_ms = postgres.as_millis() as u64,
            clickhouse_ms = (started.elapsed() - read - parse - postgres).as_millis() as u64,
            "chunk done"
        );
        Ok(outcome)
    }

    async fn job_totals(&self, job_id: &str) -> Result<JobTotals, EtlError> {
        let totals = self.pg.totals(job_id).await?;
        if totals.chunks_committed != totals.chunks {
            return Err(EtlError::Reconciliation(format!(
                "only {} of {} chunks are committed",
                totals.chunks_committed, totals.chunks
            )));
        }
        pause::reached(PausePoint::Aggregate).await;
        self.pg.store_totals(job_id, &totals).await?;
        Ok(totals)
    }

    async fn reconcile_job(&self, job_id: &str) -> Result<Reconciliation, EtlError> {
        let (source_rows, dry_run) = self.pg.plan_facts(job_id).await?;
        let totals = self.pg.totals(job_id).await?;
        let (pg_items, invalid_logged) = self.pg.job_counts(job_id).await?;
        let ch = if dry_run {
            None
        } else {
            Some(self.ch.job_counts(job_id).await?)
        };
        let mut mismatches = Vec::new();
        if totals.rows_total != source_rows {
            mismatches.push(format!(
                "chunks hold {} rows, the object has {source_rows}",
                totals.rows_total
            ));
        }
        if totals.rows_valid + totals.rows_invalid != totals.rows_total {
            mismatches.push(format!(
                "rows_valid {} + rows_invalid {} != rows_total {}",
                totals.rows_valid, totals.rows_invalid, totals.rows_total
            ));
        }
        if invalid_logged != totals.rows_invalid {
            mismatches.push(format!(
                "{invalid_logged} invalid rows logged, {} counted",
                totals.rows_invalid
            ));
        }
        if let Some((ch_items, ch_observations)) = ch {
            if ch_items != pg_items {
                mismatches.push(format!(
                    "ClickHouse has {ch_items} items for the job, Postgres {pg_items}"
                ));
            }
            if ch_observations != totals.rows_valid {
                mismatches.push(format!(
                    "ClickHouse has {ch_observations} observations, {} valid rows counted",
                    totals.rows_valid
                ));
            }
        }
        let reconciliation = Reconciliation {
            source_rows,
            rows_total: totals.rows_total,
            rows_valid: totals.rows_valid,
            rows_invalid: totals.rows_invalid,
            invalid_logged,
            pg_items: (!dry_run).then_some(pg_items),
            ch_items: ch.map(|(items, _)| items),
            ch_observations: ch.map(|(_, rows)| rows),
            ok: mismatches.is_empty(),
            mismatches,
        };
        self.pg
            .store_reconciliation(job_id, &reconciliation)
            .await?;
        Ok(reconciliation)
    }
}

#[activities]
impl EtlActivities {
    /// HEAD the object, create the job row, check the header and store row-aligned chunks.
    #[activity]
    pub async fn plan(
        self: Arc<Self>,
        ctx: ActivityContext,
        request: IngestRequest,
    ) -> Result<PlanResult, ActivityError> {
        self.plan_job(&ctx, &request)
            .await
            .map_err(EtlError::into_activity_error)
    }

    /// Read, parse, validate and write one chunk, exactly once in effect.
    #[activity]
    pub async fn ingest_chunk(
        self: Arc<Self>,
        ctx: ActivityContext,
        task: ChunkTask,
    ) -> Result<ChunkOutcome, ActivityError> {
        self.run_chunk(&ctx, &task)
            .await
            .map_err(EtlError::into_activity_error)
    }

    /// Job totals from the chunk ledger.
    #[activity]
    pub async fn aggregate(
        self: Arc<Self>,
        ctx: ActivityContext,
        job_id: String,
    ) -> Result<JobTotals, ActivityError> {
        heartbeating(&ctx, self.job_totals(&job_id))
            .await
            .map_err(EtlError::into_activity_error)
    }

    /// Source rows vs ledger vs Postgres vs ClickHouse; stored on the job.
    #[activity]
    pub async fn reconcile(
        self: Arc<Self>,
        ctx: ActivityContext,
        job_id: String,
    ) -> Result<Reconciliation, ActivityError> {
        heartbeating(&ctx, self.reconcile_job(&job_id))
            .await
            .map_err(EtlError::into_activity_error)
    }

    /// Lists the source's prefix and splits it against the manifest: what this run ingests.
    #[activity]
    pub async fn list_source_objects(
        self: Arc<Self>,
        ctx: ActivityContext,
        request: SourceIngestRequest,
    ) -> Result<SourceListing, ActivityError> {
        let listing = async {
            let listing = self.s3.list(&request.bucket, &request.prefix).await?;
            let (to_ingest, skipped, remaining) = self
                .pg
                .plan_source_run(&request.source, listing, request.max_objects)
                .await?;
            Ok(SourceListing {
                to_ingest,
                skipped,
                remaining,
            })
        };
        heartbeating(&ctx, listing)
            .await
            .map_err(EtlError::into_activity_error)
    }

    /// Status and error of each job, from the job rows.
    #[activity]
    pub async fn job_outcomes(
        self: Arc<Self>,
        ctx: ActivityContext,
        job_ids: Vec<String>,
    ) -> Result<Vec<(String, String, Option<String>)>, ActivityError> {
        heartbeating(&ctx, self.pg.job_outcomes(&job_ids))
            .await
            .map_err(EtlError::into_activity_error)
    }

    /// One bounded DELETE of expired invalid rows.
    #[activity]
    pub async fn delete_expired_invalid_rows(
        self: Arc<Self>,
        ctx: ActivityContext,
        batch: RetentionBatch,
    ) -> Result<RetentionBatchResult, ActivityError> {
        heartbeating(&ctx, self.pg.delete_expired_invalid_rows(&batch))
            .await
            .map_err(EtlError::into_activity_error)
    }

    /// Final status (and error) on the job row.
    #[activity]
    pub async fn finalize(
        self: Arc<Self>,
        ctx: ActivityContext,
        request: FinalizeRequest,
    ) -> Result<(), ActivityError> {
        heartbeating(&ctx, self.pg.finalize(&request.job_id, &request.outcome))
            .await
            .map_err(EtlError::into_activity_error)
    }
}

/// A service that failed its start-up check; the message names the service, never a secret.
#[derive(Debug, thiserror::Error)]
#[error("{service}: {source}")]
pub struct StartupError {
    pub service: &'static str,
    #[source]
    pub source: EtlError,
}

impl StartupError {
    pub fn new(service: &'static str, source: EtlError) -> Self {
        Self { service, source }
    }
}
