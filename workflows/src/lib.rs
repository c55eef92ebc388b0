//! Workflows: deterministic orchestration only. All I/O happens in `activities`.
//!
//! One `CatalogIngest` workflow per object version and mode: plan, chunks with bounded
//! parallelism, then the job's end as `activities::job_protocol` states it: settle (totals,
//! seal, copies, counts), complete (catalog comparison, then delisting and status in one
//! transaction), publish the delisting. The workflow keeps only counters and the next chunk
//! index; the plan and all results live in Postgres, so history grows with the number of chunks
//! alone, and a run whose history passes `history_event_budget` continues as new from the next
//! chunk.
//!
//! Failures: every activity retries transient errors without an attempt cap, backing off up to
//! `retry_max_interval_secs`, until the job's deadline (`max_job_duration_secs` after it
//! started); an outage makes the job wait. A permanent error, or the deadline, fails the job:
//! `end_job` seals it and records the outcome, retrying past the deadline only while Postgres
//! is unreachable; ClickHouse's state never keeps a job from ending.

mod reconcile;
mod retention;
mod source;
mod watchdog;

pub use reconcile::Reconcile;
pub use retention::Retention;
pub use source::SourceIngest;
pub use watchdog::JobWatchdog;

use std::{
    cell::{Cell, RefCell},
    time::{Duration, SystemTime},
};

use activities::{
    EtlActivities, SHORT_ACTIVITY_HEARTBEAT,
    error::failure_type,
    model::{
        ChunkOutcome, ChunkTask, DelistOutcome, FinalizeRequest, IngestOptions, IngestRequest,
        JobOutcome, JobTotals, PlanInput, PlanResult, Progress, Reconciliation,
    },
    visibility::{self, RunOutcome},
};
use serde::{Deserialize, Serialize};
use temporalio_common::search_attributes::SearchAttributeUpdate;
use temporalio_macros::{workflow, workflow_methods};
use temporalio_sdk::{
    ActivityCloseTimeouts, ActivityExecutionError, ActivityOptions, ApplicationFailure,
    ContinueAsNewOptions, TimeoutType, WorkflowCancellationToken, WorkflowContext,
    WorkflowContextView, WorkflowResult, WorkflowTermination,
};
use temporalio_workflow::{
    RetryPolicy,
    common::protos::temporal::api::failure::v1::{Failure, failure::FailureInfo},
    workflows::join_all,
};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IngestInput {
    pub request: IngestRequest,
    /// Set when a previous run of the same job continued as new.
    pub resume: Option<Resume>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resume {
    pub plan: PlanResult,
    pub next_chunk: u32,
    pub progress: Progress,
    /// The job's deadline, fixed by its first run (RFC 3339).
    pub deadline_at: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IngestResult {
    pub job_id: String,
    pub chunks: u32,
    pub totals: Option<JobTotals>,
    pub reconciliation: Option<Reconciliation>,
    pub delisting: Option<DelistOutcome>,
    /// The same object version had been ingested before: nothing was done again.
    pub already_finished: bool,
}

#[workflow]
#[derive(Default)]
pub struct CatalogIngest {
    progress: Progress,
}

enum Stop {
    ContinueAsNew(WorkflowTermination),
    Failed {
        error: String,
        error_type: String,
    },
    /// The workflow was cancelled; the reason is the operator's, if any.
    Cancelled(Option<String>),
    /// The job had ended before this run (`failed` or `cancelled`): nothing is done again, and
    /// the run ends as the job did.
    Ended(String),
}

/// Unlimited attempts: transient failures end only with the job's deadline.
pub(crate) fn retry_policy(max_interval: Duration) -> RetryPolicy {
    RetryPolicy::builder()
        .initial_interval(Duration::from_secs(1).min(max_interval))
        .backoff_coefficient(2.0)
        .maximum_interval(max_interval)
        .maximum_attempts(0)
        .build()
}

/// Activities run on a token detached from workflow cancellation: a cancelled job lets the
/// activity in flight finish (a chunk is never cut inside its commit) and stops at the next
/// step.
pub(crate) fn activity(
    close: ActivityCloseTimeouts,
    heartbeat: Duration,
    max_interval: Duration,
) -> ActivityOptions {
    ActivityOptions::with_close_timeouts(close)
        .heartbeat_timeout(heartbeat)
        .retry_policy(retry_policy(max_interval))
        .cancellation_token(WorkflowCancellationToken::new())
        .build()
}

/// Short activities heartbeat every `SHORT_ACTIVITY_HEARTBEAT`: a worker killed inside one
/// costs seconds, not the start-to-close timeout. Without a deadline they retry until they
/// succeed (used where a job must not end before the step is done).
pub(crate) fn short_activity(
    max_interval: Duration,
    schedule_to_close: Option<Duration>,
) -> ActivityOptions {
    let start_to_close = Duration::from_secs(1800);
    let close = match schedule_to_close {
        Some(total) => ActivityCloseTimeouts::ScheduleAndStartToClose {
            schedule_to_close: total,
            start_to_close: start_to_close.min(total),
        },
        None => ActivityCloseTimeouts::StartToClose(start_to_close),
    };
    activity(close, SHORT_ACTIVITY_HEARTBEAT * 5, max_interval)
}

/// The line the Web UI shows for the activity in the workflow's timeline and history.
pub(crate) fn summarized(
    mut options: ActivityOptions,
    summary: impl Into<String>,
) -> ActivityOptions {
    options.summary = Some(summary.into());
    options
}

/// Runs that started before the workflows set search attributes have no upsert in their
/// history: they replay without one, and so do the rest of their steps.
const SEARCH_ATTRIBUTES_PATCH: &str = "search-attributes";

/// Runs started before the job protocol's `settle` / `complete` / `publish_delisting` /
/// `end_job` steps replay their own sequence of steps (whose activities now run the same
/// protocol underneath).
const JOB_END_PATCH: &str = "job-end-v2";

pub(crate) fn upsert_search_attributes<W>(
    ctx: &WorkflowContext<W>,
    updates: impl IntoIterator<Item = SearchAttributeUpdate>,
) {
    if ctx.patched(SEARCH_ATTRIBUTES_PATCH) {
        ctx.upsert_search_attributes(updates);
    }
}

fn innermost(failure: &Failure) -> &Failure {
    match &failure.cause {
        Some(cause) => innermost(cause),
        None => failure,
    }
}

/// The workflow's failure for an activity that failed for good: the activity's own message
/// and type, non-retryable (Temporal already retried the activity as its policy allows).
pub(crate) fn failed_for_good(err: &ActivityExecutionError) -> ApplicationFailure {
    let (message, kind) = failure_of(err);
    ApplicationFailure::builder(message)
        .type_name(kind)
        .non_retryable(true)
        .build()
}

/// The activity's own error and its type name, not the wrappers around them. A schedule-to-
/// close timeout is the job's deadline passing while the activity was still being retried.
pub(crate) fn failure_of(err: &ActivityExecutionError) -> (String, String) {
    let Some(failure) = err.failure() else {
        return (err.to_string(), failure_type::INTERNAL.to_owned());
    };
    let cause = innermost(failure);
    let kind = match &cause.failure_info {
        Some(FailureInfo::ApplicationFailureInfo(info)) if !info.r#type.is_empty() => {
            info.r#type.clone()
        }
        _ => failure_type::INTERNAL.to_owned(),
    };
    match err.as_timeout() {
        Some(timeout) if timeout.timeout_type() == TimeoutType::ScheduleToClose => (
            format!(
                "deadline exceeded (--max-job-duration) while retrying: {}",
                cause.message
            ),
            failure_type::DEADLINE_EXCEEDED.to_owned(),
        ),
        _ => (cause.message.clone(), kind),
    }
}

fn rfc3339(time: SystemTime) -> String {
    chrono::DateTime::<chrono::Utc>::from(time).to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

fn parse_rfc3339(text: &str) -> Option<SystemTime> {
    chrono::DateTime::parse_from_rfc3339(text)
        .ok()
        .map(SystemTime::from)
}

/// The job's deadline and the retry settings of its activities.
struct Limits {
    deadline: SystemTime,
    max_interval: Duration,
    heartbeat: Duration,
}

impl Limits {
    fn new(options: &IngestOptions, deadline: SystemTime) -> Self {
        Self {
            deadline,
            max_interval: Duration::from_secs(options.retry_max_interval_secs.max(1)),
            heartbeat: Duration::from_secs(options.heartbeat_timeout_secs.max(1)),
        }
    }

    /// Time left until the deadline, or the failure once it has passed.
    fn remaining(&self, ctx: &WorkflowContext<CatalogIngest>) -> Result<Duration, Stop> {
        let now = ctx.workflow_time().unwrap_or(self.deadline);
        match self.deadline.duration_since(now) {
            Ok(left) if left >= Duration::from_secs(1) => Ok(left),
            _ => Err(Stop::Failed {
                error: "deadline exceeded (--max-job-duration): the job did not end in time"
                    .to_owned(),
                error_type: failure_type::DEADLINE_EXCEEDED.to_owned(),
            }),
        }
    }

    /// A long activity (plan, chunk) that heartbeats, bounded by the deadline.
    fn long(
        &self,
        ctx: &WorkflowContext<CatalogIngest>,
        start_to_close: Duration,
    ) -> Result<ActivityOptions, Stop> {
        let left = self.remaining(ctx)?;
        Ok(activity(
            ActivityCloseTimeouts::ScheduleAndStartToClose {
                schedule_to_close: left,
                start_to_close: start_to_close.min(left),
            },
            self.heartbeat,
            self.max_interval,
        ))
    }

    fn short(&self, ctx: &WorkflowContext<CatalogIngest>) -> Result<ActivityOptions, Stop> {
        Ok(short_activity(
            self.max_interval,
            Some(self.remaining(ctx)?),
        ))
    }

    /// Steps that must be done before the job ends, whatever the deadline.
    fn until_done(&self) -> ActivityOptions {
        short_activity(self.max_interval, None)
    }
}

fn failed(err: &ActivityExecutionError) -> Stop {
    let (error, error_type) = failure_of(err);
    Stop::Failed { error, error_type }
}

impl CatalogIngest {
    fn check_cancelled(ctx: &WorkflowContext<Self>) -> Result<(), Stop> {
        let token = ctx.cancellation_token();
        if token.is_cancelled() {
            return Err(Stop::Cancelled(token.reason()));
        }
        Ok(())
    }

    fn publish(ctx: &WorkflowContext<Self>, update: impl FnOnce(&mut Progress)) {
        let details = ctx.state_mut(|state| {
            update(&mut state.progress);
            state.progress.details()
        });
        ctx.set_current_details(details);
    }

    fn limits(ctx: &WorkflowContext<Self>, input: &IngestInput) -> Limits {
        let options = &input.request.options;
        let deadline = input
            .resume
            .as_ref()
            .and_then(|resume| parse_rfc3339(&resume.deadline_at))
            .unwrap_or_else(|| {
                ctx.workflow_time().unwrap_or(SystemTime::UNIX_EPOCH)
                    + Duration::from_secs(options.max_job_duration_secs)
            });
        Limits::new(options, deadline)
    }

    async fn ingest(
        ctx: &mut WorkflowContext<Self>,
        input: IngestInput,
        limits: &Limits,
    ) -> Result<IngestResult, Stop> {
        let request = input.request.clone();
        let options = &request.options;
        let (plan, first_chunk) = match input.resume {
            Some(resume) => {
                let progress = resume.progress.clone();
                Self::publish(ctx, |p| *p = progress);
                (resume.plan, resume.next_chunk)
            }
            None => {
                Self::publish(ctx, |p| p.phase = "planning".to_owned());
                let plan_input = PlanInput {
                    request: request.clone(),
                    deadline_at: rfc3339(limits.deadline),
                };
                let plan = ctx
                    .execute_activity(
                        EtlActivities::plan,
                        plan_input,
                        summarized(
                            limits.long(ctx, Duration::from_secs(6 * 3600))?,
                            format!(
                                "plan: split s3://{}/{} into chunks on record boundaries",
                                request.bucket, request.key
                            ),
                        ),
                    )
                    .await
                    .map_err(|err| failed(&err))?;
                (plan, 0)
            }
        };
        Self::check_cancelled(ctx)?;
        if plan.already_finished {
            let status = plan
                .finished_status
                .clone()
                .unwrap_or_else(|| "completed".to_owned());
            Self::publish(ctx, |p| p.phase = format!("already {status}"));
            if status != "completed" {
                return Err(Stop::Ended(status));
            }
            return Ok(IngestResult {
                job_id: plan.job_id,
                chunks: plan.chunks,
                totals: None,
                reconciliation: None,
                delisting: None,
                already_finished: true,
            });
        }
        Self::publish(ctx, |p| {
            p.phase = "ingesting".to_owned();
            p.chunks_total = plan.chunks;
        });

        // A sliding window of `parallel` lanes: each lane takes the next chunk index when its
        // previous chunk ends, so a chunk waiting out a retry stalls only its own lane. The
        // SDK's `join_all` keeps polling order deterministic.
        let parallel = options.max_parallel_chunks.max(1);
        let next = Cell::new(first_chunk);
        let failure: RefCell<Option<Stop>> = RefCell::new(None);
        let shared: &WorkflowContext<Self> = ctx;
        let lane = |_| async {
            loop {
                let history_full = shared.continue_as_new_suggested()
                    || shared.history_length() > options.history_event_budget;
                let index = next.get();
                let cancelled = shared.cancellation_token().is_cancelled();
                if failure.borrow().is_some() || history_full || cancelled || index >= plan.chunks {
                    return;
                }
                next.set(index + 1);
                let task = ChunkTask {
                    job_id: request.job_id.clone(),
                    chunk_index: index,
                };
                let chunk_options = match limits.long(shared, Duration::from_secs(3600)) {
                    Ok(options) => summarized(
                        options,
                        visibility::chunk_summary(
                            index,
                            plan.chunks,
                            plan.chunk_ranges.get(index as usize).copied(),
                        ),
                    ),
                    Err(stop) => {
                        failure.borrow_mut().get_or_insert(stop);
                        return;
                    }
                };
                match shared
                    .execute_activity(EtlActivities::ingest_chunk, task, chunk_options)
                    .await
                {
                    Ok(outcome) => Self::record_chunk(shared, outcome),
                    Err(err) => {
                        let (error, error_type) = failure_of(&err);
                        failure.borrow_mut().get_or_insert(Stop::Failed {
                            error: format!("chunk {index}: {error}"),
                            error_type,
                        });
                        return;
                    }
                }
            }
        };
        join_all((0..parallel).map(lane)).await;
        if let Some(stop) = failure.into_inner() {
            return Err(stop);
        }
        Self::check_cancelled(ctx)?;
        let next_chunk = next.get();
        if next_chunk < plan.chunks {
            let progress = ctx.state(|s| s.progress.clone());
            let resume = IngestInput {
                request,
                resume: Some(Resume {
                    plan,
                    next_chunk,
                    progress,
                    deadline_at: rfc3339(limits.deadline),
                }),
            };
            return match ctx.continue_as_new(resume, ContinueAsNewOptions::default()) {
                Err(termination) => Err(Stop::ContinueAsNew(termination)),
                Ok(never) => match never {},
            };
        }

        if ctx.patched(JOB_END_PATCH) {
            return Self::end_completing(ctx, &request, limits, plan.chunks).await;
        }
        let job_id = request.job_id.clone();
        Self::publish(ctx, |p| p.phase = "aggregating".to_owned());
        let totals = ctx
            .execute_activity(
                EtlActivities::aggregate,
                job_id.clone(),
                summarized(limits.short(ctx)?, "aggregate the chunks' totals"),
            )
            .await
            .map_err(|err| failed(&err))?;
        if !request.dry_run {
            Self::publish(ctx, |p| p.phase = "copying to ClickHouse".to_owned());
            ctx.execute_activity(
                EtlActivities::flush_clickhouse,
                job_id.clone(),
                summarized(
                    limits.until_done(),
                    "copy what Postgres committed and ClickHouse lacks",
                ),
            )
            .await
            .map_err(|err| failed(&err))?;
        }
        Self::check_cancelled(ctx)?;
        Self::publish(ctx, |p| p.phase = "reconciling".to_owned());
        let mut reconciliation = ctx
            .execute_activity(
                EtlActivities::reconcile,
                job_id.clone(),
                summarized(
                    limits.short(ctx)?,
                    "reconcile the source's rows with Postgres and ClickHouse",
                ),
            )
            .await
            .map_err(|err| failed(&err))?;
        if !reconciliation.ok {
            return Err(reconciliation_failed(&reconciliation));
        }
        let mut delisting = None;
        if !request.dry_run {
            Self::check_cancelled(ctx)?;
            Self::publish(ctx, |p| p.phase = "delisting".to_owned());
            delisting = Some(
                ctx.execute_activity(
                    EtlActivities::delist,
                    job_id.clone(),
                    summarized(
                        limits.short(ctx)?,
                        "delist the source's items this snapshot does not mention",
                    ),
                )
                .await
                .map_err(|err| failed(&err))?,
            );
            Self::publish(ctx, |p| p.phase = "comparing the catalog".to_owned());
            reconciliation = ctx
                .execute_activity(
                    EtlActivities::reconcile_catalog,
                    job_id.clone(),
                    summarized(
                        limits.short(ctx)?,
                        "compare the source's catalog in Postgres and ClickHouse",
                    ),
                )
                .await
                .map_err(|err| failed(&err))?;
            if !reconciliation.ok {
                return Err(reconciliation_failed(&reconciliation));
            }
        }
        Self::publish(ctx, |p| p.phase = "finalizing".to_owned());
        ctx.execute_activity(
            EtlActivities::finalize,
            FinalizeRequest {
                job_id: job_id.clone(),
                outcome: JobOutcome::Completed,
            },
            summarized(limits.until_done(), "finalize: completed"),
        )
        .await
        .map_err(|err| failed(&err))?;
        Self::publish(ctx, |p| p.phase = "completed".to_owned());
        Ok(IngestResult {
            job_id,
            chunks: plan.chunks,
            totals: Some(totals),
            reconciliation: Some(reconciliation),
            delisting,
            already_finished: false,
        })
    }

    /// The job's end once every chunk is committed (`activities::job_protocol`).
    async fn end_completing(
        ctx: &mut WorkflowContext<Self>,
        request: &IngestRequest,
        limits: &Limits,
        chunks: u32,
    ) -> Result<IngestResult, Stop> {
        let job_id = request.job_id.clone();
        Self::publish(ctx, |p| p.phase = "settling".to_owned());
        let settled = ctx
            .execute_activity(
                EtlActivities::settle,
                job_id.clone(),
                summarized(
                    limits.short(ctx)?,
                    "settle: seal the job, copy its chunks to ClickHouse, reconcile the counts",
                ),
            )
            .await
            .map_err(|err| failed(&err))?;
        if !settled.reconciliation.ok {
            return Err(reconciliation_failed(&settled.reconciliation));
        }
        Self::check_cancelled(ctx)?;
        Self::publish(ctx, |p| p.phase = "completing".to_owned());
        let completed = ctx
            .execute_activity(
                EtlActivities::complete,
                job_id.clone(),
                summarized(
                    limits.short(ctx)?,
                    if request.dry_run {
                        "complete the dry run"
                    } else {
                        "complete: compare the catalog in both stores, then delist and complete \
                         in one transaction"
                    },
                ),
            )
            .await
            .map_err(|err| failed(&err))?;
        if completed.status != "completed" {
            return Err(Stop::Ended(completed.status));
        }
        let delisting = (!request.dry_run).then_some(completed.delisting);
        if delisting.as_ref().is_some_and(|d| d.delisted > 0) {
            Self::publish(ctx, |p| p.phase = "publishing the delisting".to_owned());
            // The job is completed: a copy that cannot be made now is the next job's to make.
            let published = ctx
                .execute_activity(
                    EtlActivities::publish_delisting,
                    job_id.clone(),
                    summarized(limits.until_done(), "copy the delisting to ClickHouse"),
                )
                .await;
            if let Err(err) = published {
                let (error, _) = failure_of(&err);
                Self::publish(ctx, |p| {
                    p.phase = format!("completed; the delisting's copy waits: {error}")
                });
                return Ok(Self::completed(
                    job_id,
                    chunks,
                    settled.totals,
                    completed.reconciliation,
                    delisting,
                ));
            }
        }
        Self::publish(ctx, |p| p.phase = "completed".to_owned());
        Ok(Self::completed(
            job_id,
            chunks,
            settled.totals,
            completed.reconciliation,
            delisting,
        ))
    }

    fn completed(
        job_id: String,
        chunks: u32,
        totals: JobTotals,
        reconciliation: Reconciliation,
        delisting: Option<DelistOutcome>,
    ) -> IngestResult {
        IngestResult {
            job_id,
            chunks,
            totals: Some(totals),
            reconciliation: Some(reconciliation),
            delisting,
            already_finished: false,
        }
    }

    /// A job that did not complete reports the rows of the chunks it committed.
    fn upsert_ended(ctx: &WorkflowContext<Self>, outcome: RunOutcome) {
        let (rows, invalid) = ctx.state(|s| (s.progress.rows_done, s.progress.rows_invalid));
        upsert_search_attributes(ctx, visibility::ingest_ended(outcome, rows, invalid));
    }

    fn record_chunk(ctx: &WorkflowContext<Self>, outcome: ChunkOutcome) {
        Self::publish(ctx, |p| {
            p.chunks_done += 1;
            p.rows_done += outcome.rows_total;
            p.rows_valid += outcome.rows_valid;
            p.rows_invalid += outcome.rows_invalid;
        });
    }

    /// Ends a job that did not complete: seals it (an attempt still running somewhere commits
    /// nothing more), copies to ClickHouse what Postgres committed, then records the outcome.
    /// These steps retry until they succeed, past the deadline: a job never ends with a
    /// change ClickHouse lacks.
    async fn end_unfinished(
        ctx: &mut WorkflowContext<Self>,
        limits: &Limits,
        job_id: &str,
        dry_run: bool,
        outcome: JobOutcome,
    ) {
        let summary = format!("finalize: {}", outcome.status());
        if ctx.patched(JOB_END_PATCH) {
            let _ = ctx
                .execute_activity(
                    EtlActivities::end_job,
                    FinalizeRequest {
                        job_id: job_id.to_owned(),
                        outcome,
                    },
                    summarized(limits.until_done(), format!("end the job: {}", summary)),
                )
                .await;
            return;
        }
        let _ = ctx
            .execute_activity(
                EtlActivities::seal,
                job_id.to_owned(),
                summarized(limits.until_done(), "seal: no chunk commits after this"),
            )
            .await;
        if !dry_run {
            let _ = ctx
                .execute_activity(
                    EtlActivities::flush_clickhouse,
                    job_id.to_owned(),
                    summarized(
                        limits.until_done(),
                        "copy what Postgres committed and ClickHouse lacks",
                    ),
                )
                .await;
        }
        let _ = ctx
            .execute_activity(
                EtlActivities::finalize,
                FinalizeRequest {
                    job_id: job_id.to_owned(),
                    outcome,
                },
                summarized(limits.until_done(), summary),
            )
            .await;
    }
}

fn reconciliation_failed(reconciliation: &Reconciliation) -> Stop {
    Stop::Failed {
        error: format!(
            "reconciliation failed: {}",
            reconciliation.mismatches.join("; ")
        ),
        error_type: failure_type::RECONCILIATION_FAILED.to_owned(),
    }
}

#[workflow_methods]
impl CatalogIngest {
    #[run(name = "CatalogIngest")]
    pub async fn run(
        ctx: &mut WorkflowContext<Self>,
        input: IngestInput,
    ) -> WorkflowResult<IngestResult> {
        let job_id = input.request.job_id.clone();
        let dry_run = input.request.dry_run;
        // Every run sets them: a schedule's or a parent's start may not have.
        upsert_search_attributes(ctx, visibility::ingest_started(&input.request));
        let limits = Self::limits(ctx, &input);
        match Self::ingest(ctx, input, &limits).await {
            Ok(result) => {
                let (rows_total, rows_invalid) = result
                    .totals
                    .map_or((0, 0), |t| (t.rows_total, t.rows_invalid));
                upsert_search_attributes(
                    ctx,
                    visibility::ingest_ended(RunOutcome::Completed, rows_total, rows_invalid),
                );
                Ok(result)
            }
            Err(Stop::ContinueAsNew(termination)) => Err(termination),
            Err(Stop::Ended(status)) => {
                let outcome = if status == "cancelled" {
                    RunOutcome::Cancelled
                } else {
                    RunOutcome::Failed
                };
                Self::upsert_ended(ctx, outcome);
                Err(ApplicationFailure::builder(format!(
                    "job {job_id} had ended {status}; nothing was ingested again (`etlctl retry \
                     {job_id}` runs it again as a new job)"
                ))
                .type_name(failure_type::JOB_ENDED.to_owned())
                .non_retryable(true)
                .build()
                .into())
            }
            Err(Stop::Cancelled(reason)) => {
                let chunks_done = ctx.state(|s| s.progress.chunks_done);
                Self::publish(ctx, |p| p.phase = "cancelled".to_owned());
                Self::upsert_ended(ctx, RunOutcome::Cancelled);
                let reason = format!(
                    "cancelled{} after {chunks_done} chunks; committed chunks stay \
                     committed",
                    reason
                        .filter(|r| !r.is_empty())
                        .map(|r| format!(" ({r})"))
                        .unwrap_or_default()
                );
                Self::end_unfinished(
                    ctx,
                    &limits,
                    &job_id,
                    dry_run,
                    JobOutcome::Cancelled { reason },
                )
                .await;
                Err(WorkflowTermination::cancelled())
            }
            Err(Stop::Failed { error, error_type }) => {
                Self::publish(ctx, |p| p.phase = "failed".to_owned());
                Self::upsert_ended(ctx, RunOutcome::Failed);
                Self::end_unfinished(
                    ctx,
                    &limits,
                    &job_id,
                    dry_run,
                    JobOutcome::Failed {
                        error: error.clone(),
                        error_type: error_type.clone(),
                    },
                )
                .await;
                Err(ApplicationFailure::builder(error)
                    .type_name(error_type)
                    .non_retryable(true)
                    .build()
                    .into())
            }
        }
    }

    #[query]
    pub fn progress(&self, _ctx: &WorkflowContextView) -> Progress {
        self.progress.clone()
    }
}
