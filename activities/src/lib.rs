//! Activities: all I/O of the ETL (S3 reads, parsing, validation, Postgres and ClickHouse
//! writes). Each activity body returns a typed [`EtlError`]; it becomes a retryable or
//! non-retryable Temporal failure with a type name in exactly one place,
//! [`EtlError::into_activity_error`].

pub mod audit;
pub mod ch;
pub mod chunk;
pub mod config;
pub mod contract;
pub mod error;
pub mod generator;
pub mod item_hash;
pub mod metrics;
pub mod model;
pub mod ops;
pub mod pause;
pub mod pg;
pub mod planner;
pub mod records;
pub mod s3;
pub mod sources;
pub mod temporal;
pub mod tls;
pub mod verify;
pub mod visibility;

use std::{
    collections::HashMap,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use temporalio_macros::activities;
use temporalio_sdk::activities::{ActivityContext, ActivityError};
use tracing::Instrument;

use crate::{
    ch::{ChStore, Observed, WrittenRow},
    chunk::{parse_chunk, parse_header},
    config::Config,
    error::EtlError,
    metrics::{CommittedChunk, Metrics, Phase},
    model::{
        ChunkOutcome, ChunkTask, DelistOutcome, FinalizeRequest, JobStatus, JobTotals,
        MAX_SUMMARY_RANGES, ObjectMeta, PlanInput, PlanResult, Reconciliation, RetentionBatch,
        RetentionBatchResult, SourceIngestRequest, SourceListing, object_version_id,
    },
    pause::PausePoint,
    pg::{Begun, ChunkWork, DelistStep, ObjectVersion, PgStore},
    planner::ChunkPlanner,
    s3::ObjectStore,
    verify::Verification,
};

/// Short activities heartbeat this often, whatever they wait on, so a worker that dies inside
/// one is noticed within the workflow's heartbeat timeout instead of the start-to-close timeout.
pub const SHORT_ACTIVITY_HEARTBEAT: Duration = Duration::from_secs(2);

/// Planned chunks are stored in batches of this many while the object is scanned.
const PLAN_BATCH: usize = 1000;

/// Runs `work` and heartbeats on a timer the whole time (whatever phase it is in: reading S3,
/// parsing, waiting on a store), so a slow but healthy attempt is never timed out. Pause
/// points freeze the heartbeats of the activity they hold.
async fn heartbeating<T>(ctx: &ActivityContext, work: impl Future<Output = T>) -> T {
    let every = ctx
        .info()
        .heartbeat_timeout
        .map_or(SHORT_ACTIVITY_HEARTBEAT, |timeout| timeout / 4)
        .clamp(Duration::from_millis(200), Duration::from_secs(10));
    let frozen = Arc::new(AtomicBool::new(false));
    let mut work = std::pin::pin!(pause::freezable(frozen.clone(), work));
    let mut ticker = tokio::time::interval(every);
    loop {
        tokio::select! {
            out = &mut work => return out,
            _ = ticker.tick() => {
                if !frozen.load(Ordering::SeqCst) {
                    ctx.record_heartbeat(()).await.ok();
                }
            }
        };
    }
}

/// The clients every activity shares.
pub struct EtlActivities {
    pub pg: PgStore,
    pub ch: ChStore,
    pub s3: ObjectStore,
    pub metrics: Metrics,
}

/// Log lines of an activity carry the job (and the chunk, and the source once known).
fn job_span(job_id: &str) -> tracing::Span {
    tracing::info_span!(
        "job",
        job_id = %job_id,
        source = tracing::field::Empty,
        chunk = tracing::field::Empty
    )
}

fn chunk_span(task: &ChunkTask) -> tracing::Span {
    let span = job_span(&task.job_id);
    span.record("chunk", task.chunk_index);
    span
}

fn source_span(source: &str) -> tracing::Span {
    tracing::info_span!("source", source = %source)
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
        let ch = ChStore::new(config)
            .map_err(|e| StartupError::new("ClickHouse (CLICKHOUSE_URL)", e))?;
        let checked = tokio::time::timeout(config::STARTUP_CHECK_TIMEOUT, ch.check_version())
            .await
            .map_err(|_| {
                StartupError::new(
                    "ClickHouse (CLICKHOUSE_URL)",
                    EtlError::ClickHouse(clickhouse::error::Error::TimedOut),
                )
            })?;
        checked.map_err(|e| StartupError::new("ClickHouse (CLICKHOUSE_URL)", e))?;
        ch.migrate()
            .await
            .map_err(|e| StartupError::new("ClickHouse migrations", e))?;
        let s3 = ObjectStore::new(config).map_err(|e| StartupError::new("S3 (S3_ENDPOINT)", e))?;
        Ok(Self {
            pg,
            ch,
            s3,
            metrics: Metrics::new(None),
        })
    }

    /// Records the metrics on `metrics` (the worker's Prometheus meter).
    pub fn with_metrics(self, metrics: Metrics) -> Self {
        Self { metrics, ..self }
    }

    /// An activity's body: heartbeats throughout, logs inside `span`, and its error, counted
    /// by failure type, becomes the Temporal failure.
    async fn run<T>(
        &self,
        ctx: &ActivityContext,
        span: tracing::Span,
        work: impl Future<Output = Result<T, EtlError>>,
    ) -> Result<T, ActivityError> {
        heartbeating(ctx, work.instrument(span))
            .await
            .map_err(|err| {
                self.metrics.activity_failed(
                    &ctx.info().activity_type,
                    err.failure_type(),
                    err.is_retryable(),
                );
                err.into_activity_error()
            })
    }

    async fn finalize_job(&self, request: &FinalizeRequest) -> Result<(), EtlError> {
        if let Some(source) = self.pg.finalize(&request.job_id, &request.outcome).await? {
            self.metrics.job_finished(&source, request.outcome.status());
        }
        Ok(())
    }

    async fn plan_job(
        &self,
        ctx: &ActivityContext,
        input: &PlanInput,
    ) -> Result<PlanResult, EtlError> {
        let request = &input.request;
        let workflow_id = ctx.info().workflow_id.clone().unwrap_or_default();
        let job = self.pg.open_job(request, &workflow_id).await?;
        if job.status != "running" {
            let (chunks, source_rows) = job.planned.unwrap_or((0, 0));
            return Ok(PlanResult {
                job_id: request.job_id.clone(),
                chunks,
                source_rows,
                object: job.object.unwrap_or_else(|| ObjectMeta {
                    bucket: request.bucket.clone(),
                    key: request.key.clone(),
                    etag: request.etag.clone(),
                    size: 0,
                    last_modified: String::new(),
                }),
                already_finished: true,
                chunk_ranges: Vec::new(),
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
        let deadline = pg::parse_time(&input.deadline_at).unwrap_or_else(chrono::Utc::now);
        self.pg
            .record_object(&request.job_id, &object, deadline)
            .await?;
        if let Some((chunks, source_rows)) = job.planned {
            return Ok(PlanResult {
                job_id: request.job_id.clone(),
                chunks,
                source_rows,
                object,
                already_finished: false,
                chunk_ranges: self
                    .pg
                    .chunk_ranges(&request.job_id, MAX_SUMMARY_RANGES)
                    .await?,
            });
        }
        if object.size == 0 {
            return Err(EtlError::EmptyObject {
                bucket: request.bucket.clone(),
                key: request.key.clone(),
            });
        }
        let version = ObjectVersion::of(&object)?;
        let record_too_large = |source| EtlError::RecordTooLarge {
            bucket: request.bucket.clone(),
            key: request.key.clone(),
            source,
        };
        let mut body = self
            .s3
            .open_range(&request.bucket, &request.key, &request.etag, 0, None)
            .await?;
        let options = &request.options;
        let mut planner = ChunkPlanner::new(options.chunk_bytes, options.max_record_bytes);
        let mut plan = self.pg.begin_plan(&request.job_id).await?;
        let mut ready = Vec::new();
        let mut chunks = 0u32;
        let mut scanned = 0u64;
        while let Some(bytes) = body.try_next().await.map_err(|err| {
            EtlError::S3(format!(
                "reading s3://{}/{}: {err}",
                request.bucket, request.key
            ))
        })? {
            planner.feed(&bytes).map_err(record_too_large)?;
            scanned += bytes.len() as u64;
            ready.extend(planner.take_chunks());
            if ready.len() >= PLAN_BATCH {
                plan.add_chunks(&ready).await?;
                chunks += ready.len() as u32;
                ready.clear();
            }
        }
        if scanned != object.size {
            return Err(EtlError::S3(format!(
                "short read of s3://{}/{}: {scanned} of {} bytes",
                request.bucket, request.key, object.size
            )));
        }
        pause::reached(PausePoint::Plan).await;
        let finished = planner.finish().map_err(record_too_large)?;
        let bad_header = |reason: String| EtlError::BadHeader {
            bucket: request.bucket.clone(),
            key: request.key.clone(),
            reason,
        };
        if finished.header.is_none() {
            return Err(bad_header("no header record (only blank lines)".to_owned()));
        }
        parse_header(&finished.header_bytes).map_err(|err| bad_header(err.to_string()))?;
        ready.extend(finished.chunks);
        plan.add_chunks(&ready).await?;
        chunks += ready.len() as u32;
        let snapshot = (!request.dry_run && !options.partial).then_some(&version);
        plan.finish(
            &request.source,
            &finished.header_bytes,
            chunks,
            finished.data_rows,
            snapshot,
        )
        .await?;
        Ok(PlanResult {
            job_id: request.job_id.clone(),
            chunks,
            source_rows: finished.data_rows,
            object,
            already_finished: false,
            chunk_ranges: self
                .pg
                .chunk_ranges(&request.job_id, MAX_SUMMARY_RANGES)
                .await?,
        })
    }

    async fn run_chunk(&self, task: &ChunkTask) -> Result<ChunkOutcome, EtlError> {
        let work = self
            .pg
            .start_chunk_attempt(&task.job_id, task.chunk_index)
            .await?;
        tracing::Span::current().record("source", work.source.as_str());
        if let Some(outcome) = work.committed {
            if !work.dry_run && !work.clickhouse_written {
                self.copy_chunk_to_clickhouse(&work.source, work.job_id, work.chunk_index)
                    .await?;
            }
            return Ok(outcome);
        }
        let started = Instant::now();
        let bytes = self
            .s3
            .read_range(
                &work.bucket,
                &work.version.key,
                &work.version.etag,
                work.byte_start,
                work.byte_end,
            )
            .await?;
        let read = started.elapsed();
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
        pause::reached(PausePoint::ChunkAfterRead).await;
        let postgres_started = Instant::now();
        let mut commit = match self.pg.begin_chunk_commit(&work).await {
            Ok(Begun::Open(commit)) => commit,
            Ok(Begun::AlreadyCommitted(outcome)) => {
                tracing::warn!(
                    job_id = %task.job_id,
                    chunk = task.chunk_index,
                    attempt = work.lease,
                    "stale attempt: another attempt committed the chunk; this one writes nothing"
                );
                return Ok(outcome);
            }
            Err(err @ EtlError::StaleAttempt { .. }) => {
                tracing::warn!(job_id = %task.job_id, chunk = task.chunk_index, "{err}");
                return Err(err);
            }
            Err(err) => return Err(err),
        };
        let written = if work.dry_run {
            Vec::new()
        } else {
            commit
                .write_catalog(&work.source, &work.version, &parsed)
                .await?
        };
        commit.record_invalid(&parsed).await?;
        let mut postgres = postgres_started.elapsed();
        let mut clickhouse = Duration::ZERO;
        if !work.dry_run {
            let observed = observed(&work);
            let inserting = Instant::now();
            self.ch
                .insert_observations(&observed, &parsed, &observation_token(&observed, &work))
                .await?;
            clickhouse += inserting.elapsed();
        }
        pause::reached(PausePoint::ChunkBeforeCommit).await;
        let outcome = ChunkOutcome {
            chunk_index: task.chunk_index,
            rows_total: parsed.rows_total,
            rows_valid: parsed.valid.len() as u64,
            rows_invalid: parsed.invalid.len() as u64,
        };
        let committing = Instant::now();
        commit
            .commit(&outcome, &parsed, &written, written.is_empty())
            .await?;
        postgres += committing.elapsed();
        self.metrics.chunk_committed(
            &work.source,
            CommittedChunk {
                rows_valid: outcome.rows_valid,
                rows_invalid: outcome.rows_invalid,
                bytes: work.byte_end - work.byte_start,
                relisted: written.iter().filter(|w| w.relisted).count() as u64,
            },
        );
        self.metrics.chunk_phase(Phase::Read, read);
        self.metrics.chunk_phase(Phase::Parse, parse);
        self.metrics.chunk_phase(Phase::Postgres, postgres);
        if !written.is_empty() {
            pause::reached(PausePoint::ChunkBeforeClickHouse).await;
            if !self.pg.holds_lease(&work).await? {
                tracing::warn!(
                    job_id = %task.job_id,
                    chunk = task.chunk_index,
                    attempt = work.lease,
                    "stale attempt: another attempt took the chunk over; it makes the copy"
                );
                return Ok(outcome);
            }
            let latest: HashMap<&str, &chunk::ValidRow> = parsed
                .latest_per_sku()
                .into_iter()
                .map(|row| (row.item.sku.as_str(), row))
                .collect();
            let rows: Vec<WrittenRow<'_>> = written
                .iter()
                .filter_map(|w| {
                    latest.get(w.sku.as_str()).map(|row| WrittenRow {
                        row,
                        revision: w.revision,
                        digest: &w.digest,
                    })
                })
                .collect();
            let copying = Instant::now();
            self.ch
                .insert_written_items(&work.source, &work.version, work.job_id, &rows)
                .await?;
            clickhouse += copying.elapsed();
            pause::reached(PausePoint::ChunkBeforeLedger).await;
            if !self.pg.holds_lease(&work).await? {
                tracing::warn!(
                    job_id = %task.job_id,
                    chunk = task.chunk_index,
                    attempt = work.lease,
                    "stale attempt: another attempt took the chunk over; it records the copy"
                );
                return Ok(outcome);
            }
            self.pg
                .mark_clickhouse_written(work.job_id, work.chunk_index)
                .await?;
        }
        if !work.dry_run {
            self.metrics.chunk_phase(Phase::ClickHouse, clickhouse);
        }
        tracing::info!(
            rows = outcome.rows_total,
            written = written.len(),
            read_ms = read.as_millis() as u64,
            parse_ms = parse.as_millis() as u64,
            postgres_ms = postgres.as_millis() as u64,
            clickhouse_ms = clickhouse.as_millis() as u64,
            "chunk done"
        );
        Ok(outcome)
    }

    /// Copies a committed chunk's catalog changes to ClickHouse again, from Postgres alone (the
    /// attempt that committed them died before its copy was confirmed).
    async fn copy_chunk_to_clickhouse(
        &self,
        source: &str,
        job_id: uuid::Uuid,
        chunk_index: u32,
    ) -> Result<(), EtlError> {
        let skus = self.pg.written_skus(job_id, chunk_index).await?;
        let rows = self.pg.rows_written_by(source, job_id, &skus).await?;
        self.ch.insert_catalog_rows(source, &rows).await?;
        self.pg.mark_clickhouse_written(job_id, chunk_index).await
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

    /// Every change of the job that Postgres committed and ClickHouse has not confirmed is
    /// copied: committed chunks' catalog rows and the delisting's rows.
    async fn flush_job(&self, job_id: &str) -> Result<(), EtlError> {
        let facts = self.pg.job_facts(job_id).await?;
        if facts.dry_run {
            return Ok(());
        }
        let id = pg::parse_job_id(job_id)?;
        for chunk in self.pg.chunks_pending_clickhouse(job_id).await? {
            self.copy_chunk_to_clickhouse(&facts.source, id, chunk)
                .await?;
        }
        if self.pg.delist_pending(job_id).await? {
            let rows = self.pg.rows_delisted_by(&facts.source, job_id).await?;
            self.ch.insert_catalog_rows(&facts.source, &rows).await?;
            self.pg.mark_delist_clickhouse_written(job_id).await?;
        }
        Ok(())
    }

    async fn reconcile_job(&self, job_id: &str) -> Result<Reconciliation, EtlError> {
        let facts = self.pg.job_facts(job_id).await?;
        let totals = self.pg.totals(job_id).await?;
        let (invalid_logged, invalid_pruned) = self.pg.invalid_logged(job_id).await?;
        let mut mismatches = Vec::new();
        if totals.rows_total != facts.source_rows {
            mismatches.push(format!(
                "chunks hold {} rows, the object has {}",
                totals.rows_total, facts.source_rows
            ));
        }
        if totals.rows_valid + totals.rows_invalid != totals.rows_total {
            mismatches.push(format!(
                "rows_valid {} + rows_invalid {} != rows_total {}",
                totals.rows_valid, totals.rows_invalid, totals.rows_total
            ));
        }
        if invalid_logged + invalid_pruned != totals.rows_invalid {
            mismatches.push(format!(
                "{invalid_logged} invalid rows logged (+{invalid_pruned} pruned), {} counted",
                totals.rows_invalid
            ));
        }
        let (mut pg_items, mut ch_items, mut ch_observations) = (None, None, None);
        if !facts.dry_run {
            let version_id =
                object_version_id(&facts.bucket, &facts.version.key, &facts.version.etag);
            let (counted, missing, stale) = tokio::try_join!(
                self.ch
                    .version_counts(&facts.source, &facts.version, version_id),
                self.pg
                    .job_items_missing_from_catalog(&facts.source, job_id),
                self.pg.snapshot_newer_than(&facts.source, &facts.version),
            )?;
            let (observations, skus) = counted;
            if observations != totals.rows_valid {
                mismatches.push(format!(
                    "ClickHouse has {observations} observations of the object, {} valid rows \
                     counted",
                    totals.rows_valid
                ));
            }
            if skus != totals.items {
                mismatches.push(format!(
                    "ClickHouse observes {skus} items of the object, the ledger {}",
                    totals.items
                ));
            }
            let in_catalog = totals.items.saturating_sub(missing);
            if !stale && in_catalog != totals.items {
                mismatches.push(format!(
                    "{in_catalog} of the object's {} items are in Postgres' catalog",
                    totals.items
                ));
            }
            pg_items = Some(in_catalog);
            ch_items = Some(skus);
            ch_observations = Some(observations);
        }
        let reconciliation = Reconciliation {
            source_rows: facts.source_rows,
            rows_total: totals.rows_total,
            rows_valid: totals.rows_valid,
            rows_invalid: totals.rows_invalid,
            invalid_logged,
            invalid_pruned,
            items: totals.items,
            pg_items,
            ch_items,
            ch_observations,
            catalog: None,
            ok: mismatches.is_empty(),
            mismatches,
        };
        self.pg
            .store_reconciliation(job_id, &reconciliation)
            .await?;
        Ok(reconciliation)
    }

    async fn delist_job(&self, job_id: &str) -> Result<DelistOutcome, EtlError> {
        let facts = self.pg.job_facts(job_id).await?;
        let delisting = match self.pg.begin_delisting(job_id).await? {
            DelistStep::Done(outcome) => {
                // An earlier attempt committed the step; its ClickHouse copy may be missing.
                self.flush_job(job_id).await?;
                return Ok(outcome);
            }
            DelistStep::Open(delisting) => delisting,
        };
        let rows = delisting.rows.clone();
        if !rows.is_empty() {
            let version_id =
                object_version_id(&facts.bucket, &facts.version.key, &facts.version.etag);
            let observed = Observed {
                source: &facts.source,
                version: &facts.version,
                version_id,
            };
            let token = delisting_token(version_id, &rows);
            self.ch.insert_delistings(&observed, &rows, &token).await?;
        }
        let outcome = delisting.commit().await?;
        self.metrics.items_delisted(&facts.source, outcome.delisted);
        if !rows.is_empty() {
            pause::reached(PausePoint::Delist).await;
            self.ch.insert_catalog_rows(&facts.source, &rows).await?;
            self.pg.mark_delist_clickhouse_written(job_id).await?;
        }
        Ok(outcome)
    }

    /// Compares the source's current catalog between Postgres and ClickHouse, once no other job
    /// of the source has changes in flight, and adds the result to the job's reconciliation.
    async fn check_catalog(&self, job_id: &str) -> Result<Reconciliation, EtlError> {
        let facts = self.pg.job_facts(job_id).await?;
        let mut reconciliation = self.pg.stored_reconciliation(job_id).await?;
        if facts.dry_run {
            return Ok(reconciliation);
        }
        let check = verify::compare_catalog(&self.pg, &self.ch, &facts.source, job_id).await?;
        if !check.ok {
            reconciliation
                .mismatches
                .extend(verify::catalog_mismatches(&check));
            reconciliation.ok = false;
        }
        reconciliation.catalog = Some(check);
        self.pg
            .store_reconciliation(job_id, &reconciliation)
            .await?;
        Ok(reconciliation)
    }
}

fn observed(work: &ChunkWork) -> Observed<'_> {
    Observed {
        source: &work.source,
        version: &work.version,
        version_id: object_version_id(&work.bucket, &work.version.key, &work.version.etag),
    }
}

/// The same for every attempt and every job that inserts this chunk of this object version.
fn observation_token(observed: &Observed<'_>, work: &ChunkWork) -> String {
    format!(
        "obs:{}:{}:{}-{}",
        observed.source, observed.version_id, work.byte_start, work.byte_end
    )
}

/// A replayed delisting inserts the same set under the same token; a different set (other
/// items changed in between) is a different block.
fn delisting_token(version_id: uuid::Uuid, rows: &[pg::CatalogItemRow]) -> String {
    use sha2::{Digest, Sha256};
    let mut hasher = Sha256::new();
    let mut skus: Vec<&str> = rows.iter().map(|r| r.sku.as_str()).collect();
    skus.sort_unstable();
    for sku in skus {
        hasher.update(sku.as_bytes());
        hasher.update([0u8]);
    }
    format!("delist:{version_id}:{:x}", hasher.finalize())
}

#[activities]
impl EtlActivities {
    /// HEAD the object, create the job row, check the header and store row-aligned chunks.
    #[activity]
    pub async fn plan(
        self: Arc<Self>,
        ctx: ActivityContext,
        input: PlanInput,
    ) -> Result<PlanResult, ActivityError> {
        self.run(
            &ctx,
            job_span(&input.request.job_id),
            self.plan_job(&ctx, &input),
        )
        .await
    }

    /// Read, parse, validate and write one chunk, exactly once in effect.
    #[activity]
    pub async fn ingest_chunk(
        self: Arc<Self>,
        ctx: ActivityContext,
        task: ChunkTask,
    ) -> Result<ChunkOutcome, ActivityError> {
        self.run(&ctx, chunk_span(&task), self.run_chunk(&task))
            .await
    }

    /// Job totals from the chunk ledger.
    #[activity]
    pub async fn aggregate(
        self: Arc<Self>,
        ctx: ActivityContext,
        job_id: String,
    ) -> Result<JobTotals, ActivityError> {
        self.run(&ctx, job_span(&job_id), self.job_totals(&job_id))
            .await
    }

    /// Copies to ClickHouse whatever of the job Postgres has and ClickHouse does not.
    #[activity]
    pub async fn flush_clickhouse(
        self: Arc<Self>,
        ctx: ActivityContext,
        job_id: String,
    ) -> Result<(), ActivityError> {
        self.run(&ctx, job_span(&job_id), self.flush_job(&job_id))
            .await
    }

    /// Source rows vs ledger vs Postgres vs ClickHouse; stored on the job.
    #[activity]
    pub async fn reconcile(
        self: Arc<Self>,
        ctx: ActivityContext,
        job_id: String,
    ) -> Result<Reconciliation, ActivityError> {
        self.run(&ctx, job_span(&job_id), self.reconcile_job(&job_id))
            .await
    }

    /// Delists what a completed full snapshot no longer mentions (or records why not).
    #[activity]
    pub async fn delist(
        self: Arc<Self>,
        ctx: ActivityContext,
        job_id: String,
    ) -> Result<DelistOutcome, ActivityError> {
        self.run(&ctx, job_span(&job_id), self.delist_job(&job_id))
            .await
    }

    /// The source's catalog in Postgres against ClickHouse; added to the job's reconciliation.
    #[activity]
    pub async fn reconcile_catalog(
        self: Arc<Self>,
        ctx: ActivityContext,
        job_id: String,
    ) -> Result<Reconciliation, ActivityError> {
        self.run(&ctx, job_span(&job_id), self.check_catalog(&job_id))
            .await
    }

    /// No chunk of the job commits after this.
    #[activity]
    pub async fn seal(
        self: Arc<Self>,
        ctx: ActivityContext,
        job_id: String,
    ) -> Result<(), ActivityError> {
        self.run(&ctx, job_span(&job_id), self.pg.seal(&job_id))
            .await
    }

    /// Final status (and error) on the job row.
    #[activity]
    pub async fn finalize(
        self: Arc<Self>,
        ctx: ActivityContext,
        request: FinalizeRequest,
    ) -> Result<(), ActivityError> {
        self.run(&ctx, job_span(&request.job_id), self.finalize_job(&request))
            .await
    }

    /// Lists the source's prefix page by page and splits it against the manifest: what this
    /// run ingests (bounded), the rest counted.
    #[activity]
    pub async fn list_source_objects(
        self: Arc<Self>,
        ctx: ActivityContext,
        request: SourceIngestRequest,
    ) -> Result<SourceListing, ActivityError> {
        self.run(
            &ctx,
            source_span(&request.source),
            sources::list_source(&self.pg, &self.s3, &request),
        )
        .await
    }

    /// Status and error of each job, from the job rows.
    #[activity]
    pub async fn job_outcomes(
        self: Arc<Self>,
        ctx: ActivityContext,
        job_ids: Vec<String>,
    ) -> Result<Vec<JobStatus>, ActivityError> {
        self.run(&ctx, tracing::Span::none(), self.pg.job_statuses(&job_ids))
            .await
    }

    /// One bounded DELETE of expired invalid rows.
    #[activity]
    pub async fn delete_expired_invalid_rows(
        self: Arc<Self>,
        ctx: ActivityContext,
        batch: RetentionBatch,
    ) -> Result<RetentionBatchResult, ActivityError> {
        self.run(
            &ctx,
            tracing::Span::none(),
            self.pg.delete_expired_invalid_rows(&batch),
        )
        .await
    }

    /// `etlctl reconcile`: recounts a job from the live object and both stores.
    #[activity]
    pub async fn verify(
        self: Arc<Self>,
        ctx: ActivityContext,
        job_id: String,
    ) -> Result<Verification, ActivityError> {
        self.run(&ctx, job_span(&job_id), self.verify_job(&job_id))
            .await
    }
}
