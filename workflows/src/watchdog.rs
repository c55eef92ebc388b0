//! `JobWatchdog`: ends the jobs whose workflow was closed without ending them
//! (`activities::watchdog`). `etlctl setup` schedules it; `etlctl watchdog`, `retry` and
//! `cancel` run it at once.

use std::time::Duration;

use activities::{
    EtlActivities,
    model::DEFAULT_RETRY_MAX_INTERVAL_SECS,
    watchdog::{WatchdogReport, WatchdogRequest},
};
use temporalio_macros::{workflow, workflow_methods};
use temporalio_sdk::{WorkflowContext, WorkflowResult};

use crate::{failed_for_good, short_activity, summarized};

/// A run that cannot reach its stores for this long gives up; the next run tries again.
const WITHIN: Duration = Duration::from_secs(600);

#[workflow]
#[derive(Default)]
pub struct JobWatchdog;

#[workflow_methods]
impl JobWatchdog {
    #[run(name = "JobWatchdog")]
    pub async fn run(
        ctx: &mut WorkflowContext<Self>,
        request: WatchdogRequest,
    ) -> WorkflowResult<WatchdogReport> {
        let options = summarized(
            short_activity(
                Duration::from_secs(DEFAULT_RETRY_MAX_INTERVAL_SECS),
                Some(WITHIN),
            ),
            "end the running jobs whose workflow was closed without ending them",
        );
        let report = ctx
            .execute_activity(EtlActivities::close_orphaned_jobs, request, options)
            .await
            .map_err(|err| failed_for_good(&err))?;
        ctx.set_current_details(format!(
            "**{} running job(s) checked**, {} closed",
            report.checked,
            report.closed.len()
        ));
        Ok(report)
    }
}
