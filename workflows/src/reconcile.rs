//! `Reconcile`: `etlctl reconcile <job>` as a workflow, so the verification it stores on the
//! job is written by a workflow-driven activity like every other change of a job.

use std::time::Duration;

use activities::{EtlActivities, model::DEFAULT_RETRY_MAX_INTERVAL_SECS, verify::Verification};
use temporalio_macros::{workflow, workflow_methods};
use temporalio_sdk::{WorkflowContext, WorkflowResult};

use crate::{failed_for_good, short_activity};

/// A recount of a large object reads it twice; an outage longer than this fails the command
/// instead of leaving the operator waiting.
const VERIFY_WITHIN: Duration = Duration::from_secs(3600);

#[workflow]
#[derive(Default)]
pub struct Reconcile;

#[workflow_methods]
impl Reconcile {
    #[run(name = "Reconcile")]
    pub async fn run(
        ctx: &mut WorkflowContext<Self>,
        job_id: String,
    ) -> WorkflowResult<Verification> {
        ctx.set_current_details(format!("**recounting** job {job_id}"));
        let options = short_activity(
            Duration::from_secs(DEFAULT_RETRY_MAX_INTERVAL_SECS),
            Some(VERIFY_WITHIN),
        );
        let verification = ctx
            .execute_activity(EtlActivities::verify, job_id, options)
            .await
            .map_err(|err| failed_for_good(&err))?;
        ctx.set_current_details(format!(
            "**{}**: {} difference(s)",
            if verification.ok { "ok" } else { "mismatch" },
            verification.deltas.len()
        ));
        Ok(verification)
    }
}
