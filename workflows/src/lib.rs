//! Workflows: deterministic orchestration only. All I/O happens in `activities`.
//!
//! One `CatalogIngest` workflow per object version: plan, chunks with bounded parallelism,
//! aggregate, reconcile, finalize. The workflow keeps only counters and the next chunk index;
//! the plan and all results live in Postgres, so history grows with the number of chunks alone,
//! and a run whose history passes `history_event_budget` continues as new from the next chunk.

mod retention;
mod source;

pub use retention::Retention;
pub use source::SourceIngest;

use std::{
    cell::{Cell, RefCell},
    time::Duration,
};

use activities::{
    EtlActivities, SHORT_ACTIVITY_HEARTBEAT,
    model::{
        ChunkOutcome, ChunkTask, FinalizeRequest, IngestRequest, JobOutcome, JobTotals, PlanResult,
        Progress, Reconciliation,
    },
};
use serde::{Deserialize, Serialize};
use temporalio_macros::{workflow, workflow_methods};
use temporalio_sdk::{
    ActivityExecutionError, ActivityOptions, ApplicationFailure, ContinueAsNewOptions,
    WorkflowCancellationToken, WorkflowContext, WorkflowContextView, WorkflowResult,
    WorkflowTermination,
};
use temporalio_workflow::{
    RetryPolicy, common::protos::temporal::api::failure::v1::Failure, workflows::join_all,
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
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IngestResult {
    pub job_id: String,
    pub chunks: u32,
    pub totals: Option<JobTotals>,
    pub reconciliation: Option<Reconciliation>,
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
    Failed(String),
    /// The workflow was cancelled; the reason is the operator's, if any.
    Cancelled(Option<String>),
}

fn retry_policy(maximum_attempts: u32) -> RetryPolicy {
    RetryPolicy::builder()
        .initial_interval(Duration::from_secs(1))
        .backoff_coefficient(2.0)
        .maximum_interval(Duration::from_secs(30))
        .maximum_attempts(maximum_attempts)
        .build()
}

/// Activities run on a token detached from workflow cancellation: a cancelled job lets the
/// activity in flight finish (a chunk is never cut between its Postgres commit and its
/// ClickHouse write) and stops at the next step. Short activities heartbeat every
/// `SHORT_ACTIVITY_HEARTBEAT`: a worker killed inside one costs seconds, not the 5 minutes of
/// the start-to-close timeout.
pub(crate) fn short_activity() -> ActivityOptions {
    ActivityOptions::with_start_to_close_timeout(Duration::from_secs(300))
        .heartbeat_timeout(SHORT_ACTIVITY_HEARTBEAT * 5)
        .retry_policy(retry_policy(10))
        .cancellation_token(WorkflowCancellationToken::new())
        .build()
}

fn heartbeat_timeout(request: &IngestRequest) -> Duration {
    Duration::from_secs(request.heartbeat_timeout_secs.max(1))
}

/// The innermost failure message: the activity's own error, not the "activity task failed"
/// wrapper around it.
pub(crate) fn failure_message(err: &ActivityExecutionError) -> String {
    fn innermost(failure: &Failure) -> &Failure {
        match &failure.cause {
            Some(cause) => innermost(cause),
            None => failure,
        }
    }
    match err.failure() {
        Some(failure) => innermost(failure).message.clone(),
        None => err.to_string(),
    }
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

    async fn ingest(
        ctx: &mut WorkflowContext<Self>,
        input: IngestInput,
    ) -> Result<IngestResult, Stop> {
        let request = input.request.clone();
        let (plan, first_chunk) = match input.resume {
            Some(resume) => {
                let progress = resume.progress.clone();
                Self::publish(ctx, |p| *p = progress);
                (resume.plan, resume.next_chunk)
            }
            None => {
                Self::publish(ctx, |p| p.phase = "planning".to_owned());
                let options =
                    ActivityOptions::with_start_to_close_timeout(Duration::from_secs(3600))
                        .heartbeat_timeout(heartbeat_timeout(&request))
                        .retry_policy(retry_policy(10))
                        .cancellation_token(WorkflowCancellationToken::new())
                        .build();
                let plan = ctx
                    .execute_activity(EtlActivities::plan, request.clone(), options)
                    .await
                    .map_err(|err| Stop::Failed(failure_message(&err)))?;
                (plan, 0)
            }
        };
        Self::check_cancelled(ctx)?;
        if plan.already_finished {
            Self::publish(ctx, |p| p.phase = "already ingested".to_owned());
            return Ok(IngestResult {
                job_id: plan.job_id,
                chunks: plan.chunks,
                totals: None,
                reconciliation: None,
                already_finished: true,
            });
        }
        Self::publish(ctx, |p| {
            p.phase = "ingesting".to_owned();
            p.chunks_total = plan.chunks;
        });

        let chunk_options = ActivityOptions::with_start_to_close_timeout(Duration::from_secs(600))
            .heartbeat_timeout(heartbeat_timeout(&request))
            .retry_policy(retry_policy(20))
            .cancellation_token(WorkflowCancellationToken::new())
            .build();
        // A sliding window of `parallel` lanes: each lane takes the next chunk index when its
        // previous chunk ends, so a chunk waiting out a retry stalls only its own lane. The
        // SDK's `join_all` keeps polling order deterministic.
        let parallel = request.max_parallel_chunks.max(1);
        let next = Cell::new(first_chunk);
        let failure: RefCell<Option<String>> = RefCell::new(None);
        let shared: &WorkflowContext<Self> = ctx;
        let lane = |_| async {
            loop {
                let history_full = shared.continue_as_new_suggested()
                    || shared.history_length() > request.history_event_budget;
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
                match shared
                    .execute_activity(EtlActivities::ingest_chunk, task, chunk_options.clone())
                    .await
                {
                    Ok(outcome) => Self::record_chunk(shared, outcome),
                    Err(err) => {
                        failure.borrow_mut().get_or_insert_with(|| {
                            format!("chunk {index}: {}", failure_message(&err))
                        });
                        return;
                    }
                }
            }
        };
        join_all((0..parallel).map(lane)).await;
        if let Some(error) = failure.into_inner() {
            return Err(Stop::Failed(error));
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
                }),
            };
            return match ctx.continue_as_new(resume, ContinueAsNewOptions::default()) {
                Err(termination) => Err(Stop::ContinueAsNew(termination)),
                Ok(never) => match never {},
            };
        }

        Self::publish(ctx, |p| p.phase = "aggregating".to_owned());
        let totals = ctx
            .execute_activity(
                EtlActivities::aggregate,
                request.job_id.clone(),
                short_activity(),
            )
            .await
            .map_err(|err| Stop::Failed(failure_message(&err)))?;
        Self::check_cancelled(ctx)?;
        Self::publish(ctx, |p| p.phase = "reconciling".to_owned());
        let reconciliation = ctx
            .execute_activity(
                EtlActivities::reconcile,
                request.job_id.clone(),
                short_activity(),
            )
            .await
            .map_err(|err| Stop::Failed(failure_message(&err)))?;
        if !reconciliation.ok {
            return Err(Stop::Failed(format!(
                "reconciliation failed: {}",
                reconciliation.mismatches.join("; ")
            )));
        }
        Self::check_cancelled(ctx)?;
        Self::publish(ctx, |p| p.phase = "finalizing".to_owned());
        ctx.execute_activity(
            EtlActivities::finalize,
            FinalizeRequest {
                job_id: request.job_id.clone(),
                outcome: JobOutcome::Completed,
            },
            short_activity(),
        )
        .await
        .map_err(|err| Stop::Failed(failure_message(&err)))?;
        Self::publish(ctx, |p| p.phase = "completed".to_owned());
        Ok(IngestResult {
            job_id: request.job_id,
            chunks: plan.chunks,
            totals: Some(totals),
            reconciliation: Some(reconciliation),
            already_finished: false,
        })
    }

    fn record_chunk(ctx: &WorkflowContext<Self>, outcome: ChunkOutcome) {
        Self::publish(ctx, |p| {
            p.chunks_done += 1;
            p.rows_done += outcome.rows_total;
            p.rows_valid += outcome.rows_valid;
            p.rows_invalid += outcome.rows_invalid;
        });
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
        match Self::ingest(ctx, input).await {
            Ok(result) => Ok(result),
            Err(Stop::ContinueAsNew(termination)) => Err(termination),
            Err(Stop::Cancelled(reason)) => {
                let chunks_done = ctx.state(|s| s.progress.chunks_done);
                Self::publish(ctx, |p| p.phase = "cancelled".to_owned());
                let reason = format!(
                    "cancelled{} after {chunks_done} chunks; committed chunks stay \
                     committed",
                    reason
                        .filter(|r| !r.is_empty())
                        .map(|r| format!(" ({r})"))
                        .unwrap_or_default()
                );
                let _ = ctx
                    .execute_activity(
                        EtlActivities::finalize,
                        FinalizeRequest {
                            job_id,
                            outcome: JobOutcome::Cancelled { reason },
                        },
                        short_activity(),
                    )
                    .await;
                Err(WorkflowTermination::cancelled())
            }
            Err(Stop::Failed(error)) => {
                Self::publish(ctx, |p| p.phase = "failed".to_owned());
                // The job row must say why before the workflow fails; if even that fails, the
                // workflow still fails with the original error.
                let _ = ctx
                    .execute_activity(
                        EtlActivities::finalize,
                        FinalizeRequest {
                            job_id,
                            outcome: JobOutcome::Failed {
                                error: error.clone(),
                            },
                        },
                        short_activity(),
                    )
                    .await;
                Err(ApplicationFailure::non_retryable(error).into())
            }
        }
    }

    #[query]
    pub fn progress(&self, _ctx: &WorkflowContextView) -> Progress {
        self.progress.clone()
    }
}
