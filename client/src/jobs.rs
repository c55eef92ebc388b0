//! Jobs: list, retry / repair (the supersession chain), reconcile, cancel.

use std::{io::Write, process::ExitCode};

use activities::{
    EtlActivities,
    config::Config,
    model::{
        DEFAULT_HEARTBEAT_TIMEOUT_SECS, DEFAULT_HISTORY_EVENT_BUDGET, DEFAULT_MAX_PARALLEL_CHUNKS,
        IngestRequest, job_id_for_workflow,
    },
    ops::{JOB_STATUSES, JobFilter, Rerun},
    pg::PgStore,
    s3::ObjectStore,
};
use anyhow::{Context, bail};
use clap::Args;
use serde_json::json;
use temporalio_client::{UntypedWorkflow, WorkflowCancelOptions, WorkflowGetResultOptions};

use crate::{check_source, exit_code, print_summary, run_job};

#[derive(Args)]
pub struct ListArgs {
    #[arg(long)]
    source: Option<String>,
    /// running, completed, failed or cancelled.
    #[arg(long)]
    status: Option<String>,
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    limit: u32,
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub struct RerunArgs {
    job_id: String,
    /// Re-run even though the object's ETag changed since the job: the new job ingests the
    /// object as it is now.
    #[arg(long)]
    force: bool,
    #[arg(long)]
    wait: bool,
    #[arg(long)]
    json: bool,
    #[arg(long, default_value_t = DEFAULT_MAX_PARALLEL_CHUNKS, value_parser = clap::value_parser!(u32).range(1..=1000))]
    parallel: u32,
}

pub async fn list(config: &Config, args: ListArgs) -> anyhow::Result<ExitCode> {
    if let Some(source) = &args.source {
        check_source(source)?;
    }
    if let Some(status) = &args.status
        && !JOB_STATUSES.contains(&status.as_str())
    {
        bail!(
            "--status must be one of {}, got {status:?}",
            JOB_STATUSES.join(", ")
        );
    }
    let pg = PgStore::connect(config).await.context("Postgres")?;
    let jobs = pg
        .list_jobs(&JobFilter {
            source: args.source,
            status: args.status,
            limit: args.limit,
        })
        .await?;
    let mut out = std::io::stdout().lock();
    if args.json {
        writeln!(out, "{}", serde_json::to_string(&jobs)?)?;
        return Ok(ExitCode::SUCCESS);
    }
    writeln!(
        out,
        "{:<36}  {:<10} {:<12} {:>9} {:>9} {:>8}  {:<24}  object",
        "job", "status", "source", "rows", "valid", "invalid", "created"
    )?;
    let count = |n: Option<u64>| n.map_or("-".to_owned(), |n| n.to_string());
    for job in &jobs {
        writeln!(
            out,
            "{:<36}  {:<10} {:<12} {:>9} {:>9} {:>8}  {:<24}  s3://{}/{}{}{}",
            job.job_id,
            job.status,
            job.source,
            count(job.rows_total),
            count(job.rows_valid),
            count(job.rows_invalid),
            job.created_at,
            job.bucket,
            job.key,
            if job.dry_run { "  (dry run)" } else { "" },
            job.superseded_by_job_id
                .as_deref()
                .map(|id| format!("  superseded by {id}"))
                .unwrap_or_default()
        )?;
    }
    Ok(ExitCode::SUCCESS)
}

/// `retry` and `repair`: a new job for the same object, linked to the old one both ways.
/// The object is checked first: a changed ETag means the old job's object version is gone,
/// and re-running would ingest different data under the old job's name unless `--force`.
pub async fn rerun(config: &Config, rerun: Rerun, args: RerunArgs) -> anyhow::Result<ExitCode> {
    let pg = PgStore::connect(config).await.context("Postgres")?;
    let origin = pg.rerun_origin(&args.job_id).await?;
    if origin.dry_run {
        bail!(
            "job {} is a dry run: start a new dry run with `etlctl ingest --dry-run` instead",
            origin.job_id
        );
    }
    let successor_id = match &origin.superseded_by_job_id {
        Some(successor) => successor.clone(),
        None => {
            let s3 = ObjectStore::new(config);
            let object = s3.head(&origin.bucket, &origin.key).await?;
            if object.etag != origin.etag && !args.force {
                eprintln!(
                    "etlctl: refusing to {} job {}: s3://{}/{} changed since the job \
                     (ETag {} then, {} now). Re-run with --force to ingest the current version.",
                    rerun.verb(),
                    origin.job_id,
                    origin.bucket,
                    origin.key,
                    origin.etag,
                    object.etag
                );
                return Ok(ExitCode::from(3));
            }
            let workflow_id = rerun.workflow_id(&origin.job_id);
            let request = IngestRequest {
                job_id: job_id_for_workflow(&workflow_id),
                source: origin.source.clone(),
                bucket: origin.bucket.clone(),
                key: origin.key.clone(),
                etag: object.etag,
                chunk_bytes: origin.chunk_bytes,
                max_parallel_chunks: args.parallel,
                dry_run: false,
                heartbeat_timeout_secs: DEFAULT_HEARTBEAT_TIMEOUT_SECS,
                history_event_budget: DEFAULT_HISTORY_EVENT_BUDGET,
            };
            let successor = pg
                .open_successor_job(rerun, &origin.job_id, &request, &workflow_id)
                .await?;
            if successor == request.job_id {
                run_job(config, &pg, &request, &workflow_id, args.wait).await?;
            }
            successor
        }
    };
    let summary = pg.job_summary(&successor_id).await?;
    print_summary(config, &summary, args.json)?;
    Ok(exit_code(&summary))
}

pub async fn reconcile(config: &Config, job_id: &str, json: bool) -> anyhow::Result<ExitCode> {
    let activities = EtlActivities::connect(config).await?;
    let verification = activities.verify_job(job_id).await?;
    let mut out = std::io::stdout().lock();
    if json {
        writeln!(out, "{}", serde_json::to_string(&verification)?)?;
    } else {
        let count = |n: Option<u64>| n.map_or("-".to_owned(), |n| n.to_string());
        writeln!(
            out,
            "job {} ({}), ETag {}",
            verification.job_id, verification.status, verification.etag
        )?;
        writeln!(
            out,
            "{:<12} {:>10} {:>10} {:>10} {:>10}",
            "", "rows", "valid", "invalid", "items"
        )?;
        for (name, c) in [
            ("object", &verification.object),
            ("ledger", &verification.ledger),
            ("postgres", &verification.postgres),
            ("clickhouse", &verification.clickhouse),
        ] {
            writeln!(
                out,
                "{name:<12} {:>10} {:>10} {:>10} {:>10}",
                count(c.rows_total),
                count(c.rows_valid),
                count(c.rows_invalid),
                count(c.items)
            )?;
        }
        if verification.ok {
            writeln!(out, "ok: every count matches")?;
        }
        for delta in &verification.deltas {
            writeln!(out, "MISMATCH {delta}")?;
        }
    }
    Ok(if verification.ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

pub async fn cancel(
    config: &Config,
    job_id: &str,
    reason: &str,
    wait: bool,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let pg = PgStore::connect(config).await.context("Postgres")?;
    let summary = pg.job_summary(job_id).await?;
    if summary.status != "running" {
        bail!(
            "job {job_id} is {}, not running: nothing to cancel",
            summary.status
        );
    }
    let client = activities::temporal::connect(config, "etlctl").await?;
    let handle = client.get_workflow_handle::<UntypedWorkflow>(summary.workflow_id.clone());
    handle
        .cancel(
            WorkflowCancelOptions::builder()
                .reason(reason.to_owned())
                .build(),
        )
        .await
        .with_context(|| format!("cancelling workflow {}", summary.workflow_id))?;
    if wait {
        // The workflow lets chunks in flight finish, then marks the job; its own outcome is
        // `cancelled`, which is what we asked for.
        let _ = handle.get_result(WorkflowGetResultOptions::default()).await;
    }
    let summary = pg.job_summary(job_id).await?;
    if json {
        let mut value = serde_json::to_value(&summary)?;
        value["cancel_requested"] = json!(true);
        println!("{}", serde_json::to_string(&value)?);
    } else {
        print_summary(config, &summary, false)?;
    }
    Ok(match summary.status.as_str() {
        "cancelled" => ExitCode::SUCCESS,
        "running" if !wait => ExitCode::SUCCESS,
        // The job ended another way before the cancellation reached it.
        _ => ExitCode::FAILURE,
    })
}
