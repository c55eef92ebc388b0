//! Activities: all I/O of the ETL (S3 reads, parsing, validation, Postgres and ClickHouse
//! writes). Each activity body returns a typed [`EtlError`]; it becomes a retryable or
//! non-retryable Temporal failure with a type name in exactly one place,
//! [`EtlError::into_activity_error`].
//!
//! The order of the effects across the stores lives in two modules, each stating its states,
//! locks and invariants: [`chunk_protocol`] (a chunk's commit and copy) and [`job_protocol`]
//! (a job's end, its delisting and its final status). The activities here only call them.

pub mod audit;
pub mod ch;
pub mod chunk;
pub mod chunk_protocol;
pub mod config;
pub mod contract;
pub mod error;
pub mod hash_lanes;
pub mod item_hash;
pub mod job_protocol;
pub mod metrics;
pub mod model;
pub mod native;
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
pub mod watchdog;

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use temporalio_macros::activities;
use temporalio_sdk::activities::{ActivityContext, ActivityError};
use tracing::Instrument;

use crate::{
    ch::ChStore,
    chunk::parse_header,
    chunk_protocol::ChunkStores,
    config::Config,
    error::EtlError,
    metrics::Metrics,
    model::{
        ChunkOutcome, ChunkTask, CompletedJob, DelistOutcome, FinalizeRequest, JobOutcome,
        JobStatus, JobTotals, LedgerBatch, LedgerBatchResult, MAX_SUMMARY_RANGES, ObjectMeta,
        PlanInput, PlanResult, Reconciliation, RetentionBatch, RetentionBatchResult, SettledJob,
        SourceIngestRequest, SourceListing,
    },
    pause::PausePoint,
    pg::{ObjectVersion, PgStore, SharedMentions},
    planner::{ChunkPlanner, HeldChunks, LastChunks},
    s3::ObjectStore,
    verify::Verification,
    watchdog::{WatchdogReport, WatchdogRequest},
};

/// Short activities heartbeat this often, whatever they wait on, so a worker that dies inside
/// one is noticed within the workflow's heartbeat timeout instead of the start-to-close timeout.
pub const SHORT_ACTIVITY_HEARTBEAT: Duration = Duration::from_secs(2);

/// `ETL_PLAN_MENTIONS_IN_MEMORY`'s default: 16 MiB of hashes, twice (the chunks' and a sorted
/// copy); about 2 million rows, a 1.4 GB object of the benchmark's rows.
pub const DEFAULT_PLAN_MENTIONS_IN_MEMORY: usize = 1 << 21;

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
    // The first beat is due one period in: Temporal times the heartbeat from the activity's
    // start, and a beat at once cost the server an RPC for every chunk (most end sooner).
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
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
    /// The worker's own Temporal client: the watchdog asks it how a job's workflow stands.
    pub temporal: Option<temporalio_client::Client>,
    /// How many mention hashes a plan keeps in memory to find the shared ones itself
    /// (`ETL_PLAN_MENTIONS_IN_MEMORY`).
    pub plan_mentions_in_memory: usize,
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
            temporal: None,
            plan_mentions_in_memory: config.plan_mentions_in_memory,
        })
    }

    /// Records the metrics on `metrics` (the worker's Prometheus meter).
    pub fn with_metrics(self, metrics: Metrics) -> Self {
        Self { metrics, ..self }
    }

    /// The Temporal client the watchdog describes workflows with.
    pub fn with_temporal(self, client: temporalio_client::Client) -> Self {
        Self {
            temporal: Some(client),
            ..self
        }
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

    /// The clients a chunk or a job's end uses.
    fn stores(&self) -> ChunkStores<'_> {
        ChunkStores {
            pg: &self.pg,
            ch: &self.ch,
            s3: &self.s3,
            metrics: &self.metrics,
            temporal: self.temporal.as_ref(),
        }
    }

    /// The `finalize` of runs started before `job-end-v2`: a completed run's job was completed
    /// by its `delist` step; any other outcome ends the job as [`ChunkStores::end_unfinished`]
    /// does.
    async fn finalize_job(&self, request: &FinalizeRequest) -> Result<(), EtlError> {
        match &request.outcome {
            JobOutcome::Completed => self.stores().complete(&request.job_id).await.map(|_| ()),
            outcome => self.stores().end_unfinished(&request.job_id, outcome).await,
        }
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
                finished_status: Some(job.status),
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
                finished_status: None,
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
        let mut planner =
            ChunkPlanner::new(options.chunk_bytes, options.max_record_bytes).collecting_mentions();
        let mut plan = self.pg.plan_writer(&request.job_id)?;
        let mut held = HeldChunks::new(self.plan_mentions_in_memory);
        let mut scanned = 0u64;
        while let Some(bytes) = body.try_next().await.map_err(|err| {
            EtlError::S3(format!(
                "reading s3://{}/{}: {err}",
                request.bucket, request.key
            ))
        })? {
            planner.feed(&bytes).map_err(record_too_large)?;
            scanned += bytes.len() as u64;
            held.hold(planner.take_chunks());
            if let Some(batch) = held.full_batch() {
                plan.add_chunks(&batch).await?;
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
        held.hold(finished.chunks);
        let (last, chunks) = held.finish();
        let mentions = match &last {
            LastChunks::ForPostgres(rest) => {
                plan.add_chunks(rest).await?;
                SharedMentions::InPostgres
            }
            LastChunks::SharedFound(all) => SharedMentions::Found(all),
        };
        let snapshot = (!request.dry_run && !options.partial).then_some(&version);
        plan.finish(
            &request.source,
            &finished.header_bytes,
            chunks,
            finished.data_rows,
            snapshot,
            mentions,
        )
        .await?;
        Ok(PlanResult {
            finished_status: None,
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
        self.run(&ctx, chunk_span(&task), self.stores().run(&task))
            .await
    }

    /// Every chunk committed: totals stored, the job sealed, its copies made, its counts
    /// reconciled.
    #[activity]
    pub async fn settle(
        self: Arc<Self>,
        ctx: ActivityContext,
        job_id: String,
    ) -> Result<SettledJob, ActivityError> {
        let work = async {
            let settled = self.stores().settle(&job_id).await?;
            Ok(SettledJob {
                totals: settled.totals,
                reconciliation: settled.reconciliation,
            })
        };
        self.run(&ctx, job_span(&job_id), work).await
    }

    /// The source's catalog compared between the stores, then the delisting and the status
    /// `completed` in one transaction.
    #[activity]
    pub async fn complete(
        self: Arc<Self>,
        ctx: ActivityContext,
        job_id: String,
    ) -> Result<CompletedJob, ActivityError> {
        let work = async {
            let completed = self.stores().complete(&job_id).await?;
            Ok(CompletedJob {
                status: completed.status,
                reconciliation: completed.reconciliation,
                delisting: completed.delisting,
            })
        };
        self.run(&ctx, job_span(&job_id), work).await
    }

    /// A completed job's delisting copied to ClickHouse.
    #[activity]
    pub async fn publish_delisting(
        self: Arc<Self>,
        ctx: ActivityContext,
        job_id: String,
    ) -> Result<(), ActivityError> {
        self.run(
            &ctx,
            job_span(&job_id),
            self.stores().publish_delisting(&job_id),
        )
        .await
    }

    /// A job that did not complete ends `failed` or `cancelled`, whatever ClickHouse's state.
    #[activity]
    pub async fn end_job(
        self: Arc<Self>,
        ctx: ActivityContext,
        request: FinalizeRequest,
    ) -> Result<(), ActivityError> {
        self.run(&ctx, job_span(&request.job_id), self.finalize_job(&request))
            .await
    }

    /// Runs started before `job-end-v2`: job totals from the chunk ledger, and the seal.
    #[activity]
    pub async fn aggregate(
        self: Arc<Self>,
        ctx: ActivityContext,
        job_id: String,
    ) -> Result<JobTotals, ActivityError> {
        let work = async { Ok(self.stores().settle(&job_id).await?.totals) };
        self.run(&ctx, job_span(&job_id), work).await
    }

    /// Runs started before `job-end-v2`: the copies were made by `aggregate`.
    #[activity]
    pub async fn flush_clickhouse(
        self: Arc<Self>,
        ctx: ActivityContext,
        job_id: String,
    ) -> Result<(), ActivityError> {
        self.run(&ctx, job_span(&job_id), async { Ok(()) }).await
    }

    /// Runs started before `job-end-v2`: the reconciliation `aggregate` stored.
    #[activity]
    pub async fn reconcile(
        self: Arc<Self>,
        ctx: ActivityContext,
        job_id: String,
    ) -> Result<Reconciliation, ActivityError> {
        self.run(
            &ctx,
            job_span(&job_id),
            self.pg.stored_reconciliation(&job_id),
        )
        .await
    }

    /// Runs started before `job-end-v2`: the completing step (comparison, delisting and status
    /// at once), then the delisting's copy.
    #[activity]
    pub async fn delist(
        self: Arc<Self>,
        ctx: ActivityContext,
        job_id: String,
    ) -> Result<DelistOutcome, ActivityError> {
        let work = async {
            let completed = self.stores().complete(&job_id).await?;
            self.stores().publish_delisting(&job_id).await?;
            Ok(completed.delisting)
        };
        self.run(&ctx, job_span(&job_id), work).await
    }

    /// Runs started before `job-end-v2`: the comparison `delist` stored.
    #[activity]
    pub async fn reconcile_catalog(
        self: Arc<Self>,
        ctx: ActivityContext,
        job_id: String,
    ) -> Result<Reconciliation, ActivityError> {
        self.run(
            &ctx,
            job_span(&job_id),
            self.pg.stored_reconciliation(&job_id),
        )
        .await
    }

    /// Runs started before `job-end-v2`: no chunk of the job commits after this.
    #[activity]
    pub async fn seal(
        self: Arc<Self>,
        ctx: ActivityContext,
        job_id: String,
    ) -> Result<(), ActivityError> {
        self.run(&ctx, job_span(&job_id), self.pg.seal(&job_id))
            .await
    }

    /// Runs started before `job-end-v2`: the final status.
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

    /// One bounded deletion of the chunk ledgers of long-ended jobs.
    #[activity]
    pub async fn prune_chunk_ledgers(
        self: Arc<Self>,
        ctx: ActivityContext,
        batch: LedgerBatch,
    ) -> Result<LedgerBatchResult, ActivityError> {
        self.run(
            &ctx,
            tracing::Span::none(),
            self.pg.prune_chunk_ledgers(&batch),
        )
        .await
    }

    /// Ends the running jobs whose workflow was closed without ending them.
    #[activity]
    pub async fn close_orphaned_jobs(
        self: Arc<Self>,
        ctx: ActivityContext,
        request: WatchdogRequest,
    ) -> Result<WatchdogReport, ActivityError> {
        self.run(
            &ctx,
            tracing::Span::none(),
            self.stores().close_orphaned_jobs(&request),
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
