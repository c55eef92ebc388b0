//! Jobs: list, retry / repair (the supersession chain), reconcile, cancel.

use std::{io::Write, process::ExitCode};

use activities::{
    config::Config,
    model::{
        DEFAULT_MAX_PARALLEL_CHUNKS, IngestOptions, IngestRequest, Rerun, Supersedes,
        job_id_for_workflow,
    },
    ops::{JOB_STATUSES, JobFilter},
    pg::PgStore,
    s3::ObjectStore,
    temporal::Patience,
    verify::Verification,
    visibility,
};
use anyhow::{Context, bail};
use clap::Args;
use serde_json::json;
use temporalio_client::{
    UntypedWorkflow, WorkflowCancelOptions, WorkflowGetResultOptions, WorkflowIdConflictPolicy,
    WorkflowIdReusePolicy, WorkflowStartOptions,
};
use workflows::Reconcile;

use crate::{
    print::{exit_code, job_runs_ui_link, print_summary},
    start::{check_source, start_failed, start_job},
    watch::{Watch, wait_for_workflow},
};

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
    /// Let the new job delist more than the mass-delist guard allows: `repair` of a job whose
    /// delisting the guard refused applies it.
    #[arg(long)]
    allow_mass_delist: bool,
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
        let mut entries = Vec::with_capacity(jobs.len());
        for job in &jobs {
            let mut value = serde_json::to_value(job)?;
            value["web_ui_runs_url"] = json!(job_runs_ui_link(config, &job.job_id));
            entries.push(value);
        }
        writeln!(out, "{}", serde_json::to_string(&entries)?)?;
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
        if let Some(link) = job_runs_ui_link(config, &job.job_id) {
            writeln!(out, "{:<38}{link}", "")?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `retry` and `repair`: a new job for the same object, linked to the old one both ways by its
/// workflow. The object is checked first: a changed ETag means the old job's object version is
/// gone, and re-running would ingest different data under the old job's name unless `--force`.
pub async fn rerun(config: &Config, rerun: Rerun, args: RerunArgs) -> anyhow::Result<ExitCode> {
    let pg = PgStore::connect(config).await.context("Postgres")?;
    let mut origin = pg.rerun_origin(&args.job_id).await?;
    if origin.status == "running" {
        // A job whose workflow was closed without ending it is ended first (by the watchdog
        // workflow, now), so it can be retried at once.
        let client = activities::temporal::connect(config, "etlctl", Patience::Command).await?;
        let summary = pg.job_summary(&args.job_id).await?;
        if crate::watchdog::close_if_orphaned(config, &client, &summary, None).await? {
            origin = pg.rerun_origin(&args.job_id).await?;
        }
    }
    if origin.dry_run {
        bail!(
            "job {} is a dry run: start a new dry run with `etlctl ingest --dry-run` instead",
            origin.job_id
        );
    }
    let workflow_id = rerun.workflow_id(&origin.job_id);
    let successor = job_id_for_workflow(&workflow_id);
    match &origin.superseded_by_job_id {
        Some(existing) if *existing != successor => bail!(
            "job {} was already superseded by job {existing}",
            origin.job_id
        ),
        Some(_) => {
            // Running the same command again returns the same successor.
            let summary = pg.job_summary(&successor).await?;
            print_summary(config, &summary, args.json)?;
            return Ok(exit_code(&summary));
        }
        None => {}
    }
    if !rerun.allowed(&origin.status) {
        bail!(
            "job {} is {}: `{}` is for {} jobs{}",
            origin.job_id,
            origin.status,
            rerun.verb(),
            match rerun {
                Rerun::Retry => "failed or cancelled",
                Rerun::Repair => "completed",
            },
            match (rerun, origin.status.as_str()) {
                (Rerun::Retry, "completed") => " (use `etlctl repair` to re-ingest it)",
                (Rerun::Repair, "failed" | "cancelled") => " (use `etlctl retry`)",
                (_, "running") => " (wait for it, or `etlctl cancel` it first)",
                _ => "",
            }
        );
    }
    let s3 = ObjectStore::new(config)?;
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
    let request = IngestRequest {
        job_id: successor,
        source: origin.source.clone(),
        bucket: origin.bucket.clone(),
        key: origin.key.clone(),
        etag: object.etag.clone(),
        dry_run: false,
        supersedes: Some(Supersedes {
            job_id: origin.job_id.clone(),
            rerun,
        }),
        options: IngestOptions {
            max_parallel_chunks: args.parallel,
            allow_mass_delist: origin.options.allow_mass_delist || args.allow_mass_delist,
            ..origin.options
        },
    };
    let wait = args.wait.then(|| Watch::Ingest.progress(args.json));
    let summary = start_job(config, &pg, &request, &workflow_id, &object, wait).await?;
    print_summary(config, &summary, args.json)?;
    Ok(exit_code(&summary))
}

/// Runs the `Reconcile` workflow (a worker recounts and stores the verification on the job).
pub async fn reconcile(config: &Config, job_id: &str, json: bool) -> anyhow::Result<ExitCode> {
    let pg = PgStore::connect(config).await.context("Postgres")?;
    let job = pg.job_summary(job_id).await?;
    let client = activities::temporal::connect(config, "etlctl", Patience::Command).await?;
    let workflow_id = format!("reconcile-{job_id}");
    let options = WorkflowStartOptions::new(config.task_queue.clone(), workflow_id.clone())
        .id_conflict_policy(WorkflowIdConflictPolicy::UseExisting)
        .id_reuse_policy(WorkflowIdReusePolicy::AllowDuplicate)
        .search_attributes(visibility::reconcile_start_attributes(&job))
        .static_summary(format!(
            "recount job {job_id}: {} s3://{}/{}",
            job.source, job.object.bucket, job.object.key
        ))
        .static_details(format!(
            "- **Job** `{job_id}` ({})\n- **ETag** `{}`\n- Reads the object again and counts \
             its rows in the ledger, Postgres and ClickHouse",
            job.status, job.object.etag
        ))
        .build();
    client
        .start_workflow(Reconcile::run, job_id.to_owned(), options)
        .await
        .map_err(|err| start_failed(err, &workflow_id))?;
    wait_for_workflow(config, &workflow_id, Watch::Quiet).await;
    let verification: Verification = client
        .get_workflow_handle::<Reconcile>(workflow_id.clone())
        .get_result(WorkflowGetResultOptions::default())
        .await
        .with_context(|| format!("reconcile of job {job_id} failed (workflow {workflow_id})"))?;
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
        if let Some(catalog) = &verification.catalog {
            writeln!(
                out,
                "catalog      listed: postgres {}  clickhouse {}  (delisted {} / {}); {} \
                 item(s) differ",
                catalog.postgres.listed,
                catalog.clickhouse.listed,
                catalog.postgres.delisted,
                catalog.clickhouse.delisted,
                catalog.differing_items
            )?;
        }
        if let Some(note) = &verification.catalog_note {
            writeln!(out, "catalog      not compared: {note}")?;
        }
        if verification.invalid_pruned > 0 {
            writeln!(
                out,
                "retention    {} invalid-row logs pruned (counted)",
                verification.invalid_pruned
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
    let client = activities::temporal::connect(config, "etlctl", Patience::Command).await?;
    // No workflow is left to cancel: the watchdog ends the job `cancelled` now.
    if crate::watchdog::close_if_orphaned(config, &client, &summary, Some(reason)).await? {
        let summary = pg.job_summary(job_id).await?;
        print_summary(config, &summary, json)?;
        return Ok(if summary.status == "cancelled" {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        });
    }
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
        wait_for_workflow(config, &summary.workflow_id, Watch::Quiet).await;
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
