//! `etlctl watchdog`: ends, now, the running jobs whose workflow was closed without ending them
//! (the scheduled `JobWatchdog` does it every few minutes). `retry`, `cancel` and `jobs show`
//! use it for one job. The client never ends a job itself: it starts the workflow that does.

use std::process::ExitCode;

use activities::{
    config::Config,
    model::JobSummary,
    temporal::{Patience, WorkflowState, workflow_state},
    watchdog::{WatchdogReport, WatchdogRequest},
};
use anyhow::Context;
use serde_json::json;
use temporalio_client::{
    Client, WorkflowGetResultOptions, WorkflowIdConflictPolicy, WorkflowIdReusePolicy,
    WorkflowStartOptions,
};
use workflows::JobWatchdog;

use crate::start::start_failed;

/// The schedule `etlctl setup` creates.
pub const SCHEDULE_ID: &str = "catalog-etl-watchdog";

pub async fn run(config: &Config, job_id: Option<String>, json: bool) -> anyhow::Result<ExitCode> {
    let client = activities::temporal::connect(config, "etlctl", Patience::Command).await?;
    let report = watch(
        config,
        &client,
        WatchdogRequest {
            job_id,
            cancel_reason: None,
        },
    )
    .await?;
    if json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!(
            "{} running job(s) checked, {} closed",
            report.checked,
            report.closed.len()
        );
        for closed in &report.closed {
            println!(
                "{}  {}  workflow {} {}: {}",
                closed.job_id,
                closed.status,
                closed.workflow_id,
                closed.workflow_status,
                closed.error
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Runs the watchdog workflow now and waits for its report.
pub async fn watch(
    config: &Config,
    client: &Client,
    request: WatchdogRequest,
) -> anyhow::Result<WatchdogReport> {
    let workflow_id = match &request.job_id {
        Some(job) => format!("watchdog-{job}"),
        None => format!(
            "watchdog-now-{}",
            chrono::Utc::now().format("%Y%m%dT%H%M%S%.3f")
        ),
    };
    let options = WorkflowStartOptions::new(config.task_queue.clone(), workflow_id.clone())
        .id_conflict_policy(WorkflowIdConflictPolicy::UseExisting)
        .id_reuse_policy(WorkflowIdReusePolicy::AllowDuplicate)
        .static_summary("end the running jobs whose workflow was closed without ending them")
        .build();
    let handle = client
        .start_workflow(JobWatchdog::run, request, options)
        .await
        .map_err(|err| start_failed(err, &workflow_id))?;
    handle
        .get_result(WorkflowGetResultOptions::default())
        .await
        .with_context(|| format!("the watchdog workflow {workflow_id}"))
}

/// For `jobs show`: how a running job's workflow stands, when Temporal answers.
pub async fn workflow_status(config: &Config, summary: &JobSummary) -> Option<String> {
    if summary.status != "running" {
        return None;
    }
    let client = activities::temporal::connect(config, "etlctl", Patience::Command)
        .await
        .ok()?;
    let state = workflow_of(&client, summary).await.ok()??;
    Some(state.as_str().to_owned())
}

/// How the job's workflow stands, for a job the database calls running (`None` otherwise).
pub async fn workflow_of(
    client: &Client,
    summary: &JobSummary,
) -> anyhow::Result<Option<WorkflowState>> {
    if summary.status != "running" {
        return Ok(None);
    }
    Ok(Some(workflow_state(client, &summary.workflow_id).await?))
}

/// Ends the job now if its workflow is gone (`failed`, or `cancelled` with `cancel_reason`);
/// true when it did.
pub async fn close_if_orphaned(
    config: &Config,
    client: &Client,
    summary: &JobSummary,
    cancel_reason: Option<&str>,
) -> anyhow::Result<bool> {
    match workflow_of(client, summary).await? {
        Some(state) if state != WorkflowState::Open => {
            let report = watch(
                config,
                client,
                WatchdogRequest {
                    job_id: Some(summary.job_id.clone()),
                    cancel_reason: cancel_reason.map(str::to_owned),
                },
            )
            .await?;
            Ok(!report.closed.is_empty())
        }
        _ => Ok(false),
    }
}

/// What `setup` reports about the watchdog's schedule.
pub fn schedule_json(outcome: &str, every: std::time::Duration) -> serde_json::Value {
    json!({"schedule_id": SCHEDULE_ID, "outcome": outcome, "every_secs": every.as_secs()})
}
