//! The watchdog: a job whose workflow was closed without ending it (terminated from the Web UI,
//! reset away, timed out, deleted, dropped by the namespace's retention) would stay `running`
//! forever. The `JobWatchdog` workflow (scheduled by `etlctl setup`, run at once by
//! `etlctl watchdog`, `etlctl retry` and `etlctl cancel`) finds such jobs and ends them the way
//! every unfinished job ends ([`crate::job_protocol`]): sealed, its copies tried once, then
//! `failed` with a typed `error_type` naming what happened to the workflow (or `cancelled`, when
//! an operator asked to cancel). `etlctl retry <job>` then runs the object again.
//!
//! A workflow that is reset keeps running under a new run: its job is left alone.

use serde::{Deserialize, Serialize};
use temporalio_client::Client;

use crate::{
    chunk_protocol::ChunkStores,
    error::EtlError,
    model::JobOutcome,
    temporal::{WorkflowState, workflow_state},
};

/// What a watchdog run looks at.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatchdogRequest {
    /// One job only (`etlctl retry` / `cancel` of a job whose workflow is gone); all running
    /// jobs otherwise.
    pub job_id: Option<String>,
    /// An operator's cancellation: the job ends `cancelled` with this reason, not `failed`.
    pub cancel_reason: Option<String>,
}

/// One job the watchdog ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClosedJob {
    pub job_id: String,
    pub workflow_id: String,
    /// `terminated`, `timed_out`, `closed` or `not_found`.
    pub workflow_status: String,
    /// The job's final status: `failed` or `cancelled`.
    pub status: String,
    pub error: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatchdogReport {
    /// Running jobs whose workflow was looked at.
    pub checked: u64,
    pub closed: Vec<ClosedJob>,
}

/// What ends a job whose workflow is gone.
pub fn outcome_for(
    job_id: &str,
    workflow_id: &str,
    state: WorkflowState,
    cancel_reason: Option<&str>,
) -> JobOutcome {
    let what = match state {
        WorkflowState::Open => "is running",
        WorkflowState::Terminated => "was terminated",
        WorkflowState::TimedOut => "timed out",
        WorkflowState::Closed => "closed",
        WorkflowState::Lost => {
            "no longer exists (deleted, or dropped by the namespace's retention)"
        }
    };
    match cancel_reason {
        Some(reason) => JobOutcome::Cancelled {
            reason: format!(
                "cancelled{} after its workflow {workflow_id} {what}; committed chunks stay \
                 committed",
                if reason.is_empty() {
                    String::new()
                } else {
                    format!(" ({reason})")
                }
            ),
        },
        None => JobOutcome::Failed {
            error: format!(
                "the workflow {workflow_id} {what} before it ended the job; the watchdog closed \
                 it: `etlctl retry {job_id}` runs the object again"
            ),
            error_type: state.failure_type().to_owned(),
        },
    }
}

impl ChunkStores<'_> {
    fn temporal(&self) -> Result<&Client, EtlError> {
        self.temporal
            .ok_or_else(|| EtlError::NotAllowed("this worker has no Temporal client".to_owned()))
    }

    /// Ends every running job (or the one asked for) whose workflow is no longer open.
    pub async fn close_orphaned_jobs(
        &self,
        request: &WatchdogRequest,
    ) -> Result<WatchdogReport, EtlError> {
        let temporal = self.temporal()?;
        let mut report = WatchdogReport::default();
        for (job_id, workflow_id) in self.pg.running_jobs(request.job_id.as_deref()).await? {
            report.checked += 1;
            let state = workflow_state(temporal, &workflow_id).await?;
            if state == WorkflowState::Open {
                continue;
            }
            let outcome = outcome_for(
                &job_id,
                &workflow_id,
                state,
                request.cancel_reason.as_deref(),
            );
            tracing::warn!(
                job_id,
                workflow_id,
                state = state.as_str(),
                "closing an orphaned job"
            );
            self.end_unfinished(&job_id, &outcome).await?;
            let error = match &outcome {
                JobOutcome::Failed { error, .. } => error.clone(),
                JobOutcome::Cancelled { reason } => reason.clone(),
                JobOutcome::Completed => String::new(),
            };
            report.closed.push(ClosedJob {
                job_id,
                workflow_id,
                workflow_status: state.as_str().to_owned(),
                status: outcome.status().to_owned(),
                error,
            });
        }
        Ok(report)
    }

    /// Ends those of `jobs` (other jobs of a source, which a job waits for) whose workflow is
    /// gone: a job never waits on a job nobody will end. True when one was ended.
    pub async fn close_if_orphaned(&self, jobs: &[String]) -> Result<bool, EtlError> {
        let mut closed = false;
        for job in jobs {
            let report = self
                .close_orphaned_jobs(&WatchdogRequest {
                    job_id: Some(job.clone()),
                    cancel_reason: None,
                })
                .await?;
            closed |= !report.closed.is_empty();
        }
        Ok(closed)
    }
}
