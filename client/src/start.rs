//! Starting jobs: `etlctl ingest`, and the start (or attach) every command that starts an
//! ingest shares. A job's id follows from its workflow id; a workflow or job under the same id
//! for another object, ETag or mode is refused.

use activities::{
    config::Config,
    model::{
        IngestRequest, JobMode, JobObject, JobSummary, ObjectMeta, ingest_workflow_id,
        job_id_for_workflow,
    },
    pg::{PgStore, mode_words},
    s3::{ObjectStore, parse_s3_uri},
    temporal::Patience,
    visibility,
};
use anyhow::{Context, bail};
use clap::Args;
use std::process::ExitCode;
use temporalio_client::{
    Client, UntypedWorkflow, WorkflowFetchHistoryOptions, WorkflowIdConflictPolicy,
    WorkflowIdReusePolicy, WorkflowStartOptions, errors::WorkflowStartError,
};
use temporalio_common::protos::temporal::api::history::v1::history_event::Attributes;
use workflows::{CatalogIngest, IngestInput};

use crate::{
    options::IngestOptionArgs,
    print::{exit_code, print_summary},
    watch::{Watch, wait_for_workflow},
};

#[derive(Args)]
pub struct IngestArgs {
    /// The object, `s3://bucket/key`.
    uri: String,
    /// Source (scraper) name the items belong to.
    #[arg(long)]
    source: String,
    /// Wait for the job to end and print its summary.
    #[arg(long)]
    wait: bool,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
    /// Validate and count only: no writes to the catalog tables.
    #[arg(long)]
    dry_run: bool,
    /// Workflow ID to use instead of the one derived from (source, bucket, key, ETag).
    #[arg(long)]
    workflow_id: Option<String>,
    #[command(flatten)]
    options: IngestOptionArgs,
}

pub(crate) fn parse_object_uri(uri: &str) -> anyhow::Result<(String, String)> {
    match parse_s3_uri(uri) {
        Some((bucket, key)) if !key.is_empty() && !key.ends_with('/') => Ok((bucket, key)),
        _ => bail!("expected an object URI like s3://bucket/path/file.csv, got {uri:?}"),
    }
}

/// Source names end up in workflow IDs, keys and reports: keep them plain.
pub(crate) fn check_source(source: &str) -> anyhow::Result<()> {
    let ok = !source.is_empty()
        && source.len() <= 100
        && source
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
    if !ok {
        bail!("--source must be 1..100 characters of [A-Za-z0-9_.-], got {source:?}");
    }
    Ok(())
}

pub async fn ingest(config: &Config, args: IngestArgs) -> anyhow::Result<ExitCode> {
    check_source(&args.source)?;
    let (bucket, key) = parse_object_uri(&args.uri)?;
    let s3 = ObjectStore::new(config)?;
    let object = s3.head(&bucket, &key).await?;
    let mut request = IngestRequest {
        job_id: String::new(),
        source: args.source.clone(),
        bucket,
        key,
        etag: object.etag.clone(),
        dry_run: args.dry_run,
        supersedes: None,
        options: args.options.options(),
    };
    let workflow_id = args.workflow_id.clone().unwrap_or_else(|| {
        ingest_workflow_id(
            &request.source,
            &request.bucket,
            &request.key,
            &request.etag,
            JobMode::of(&request),
        )
    });
    request.job_id = job_id_for_workflow(&workflow_id);
    let pg = PgStore::connect(config).await.context("Postgres")?;
    let wait = args.wait.then(|| Watch::Ingest.progress(args.json));
    let summary = start_job(config, &pg, &request, &workflow_id, &object, wait).await?;
    print_summary(config, &summary, args.json)?;
    Ok(exit_code(&summary))
}

/// Starts the job's workflow unless its job exists already, and with `wait` follows it to the
/// end. A job or workflow under the same id for another object, ETag or mode is refused.
pub(crate) async fn start_job(
    config: &Config,
    pg: &PgStore,
    request: &IngestRequest,
    workflow_id: &str,
    object: &ObjectMeta,
    wait: Option<Watch>,
) -> anyhow::Result<JobSummary> {
    let existing = match pg.job_summary(&request.job_id).await {
        Ok(summary) => Some(summary),
        Err(activities::error::EtlError::JobNotFound(_)) => None,
        Err(err) => return Err(err.into()),
    };
    if let Some(summary) = &existing {
        check_same_job(workflow_id, request, summary)?;
        if summary.status != "running" {
            // The same object version was ingested already: nothing is started again.
            return Ok(summary.clone());
        }
    }
    let client = activities::temporal::connect(config, "etlctl", Patience::Command).await?;
    start_or_attach(config, &client, request, workflow_id, object).await?;
    if let Some(watch) = wait {
        wait_for_workflow(config, workflow_id, watch).await;
    }
    match pg.job_summary(&request.job_id).await {
        Ok(summary) => {
            if wait.is_some() && summary.status == "running" {
                eprintln!(
                    "etlctl: workflow {workflow_id} ended but the job is still `running`: the \
                     workflow was terminated before it could finalize the job (see the Web UI)"
                );
            }
            Ok(summary)
        }
        Err(activities::error::EtlError::JobNotFound(_)) => {
            Ok(pending_summary(request, workflow_id, object))
        }
        Err(err) => Err(err.into()),
    }
}

fn check_same_job(
    workflow_id: &str,
    request: &IngestRequest,
    summary: &JobSummary,
) -> anyhow::Result<()> {
    let o = &summary.object;
    let mode = JobMode::of(request);
    if summary.source != request.source
        || o.bucket != request.bucket
        || o.key != request.key
        || o.etag != request.etag
        || summary.dry_run != mode.dry_run
        || summary.partial != mode.partial
        || summary.allow_mass_delist != mode.allow_mass_delist
    {
        bail!(
            "workflow id {workflow_id} belongs to job {} of {}{} s3://{}/{} ETag {}, not to this \
             request ({} s3://{}/{} ETag {}{}); choose another --workflow-id",
            summary.job_id,
            summary.source,
            mode_words(summary.dry_run, summary.partial, summary.allow_mass_delist),
            o.bucket,
            o.key,
            o.etag,
            request.source,
            request.bucket,
            request.key,
            request.etag,
            mode_words(mode.dry_run, mode.partial, mode.allow_mass_delist)
        );
    }
    Ok(())
}

/// Starts the workflow, or finds the one running under the id: then its input must name the
/// same object version and mode.
async fn start_or_attach(
    config: &Config,
    client: &Client,
    request: &IngestRequest,
    workflow_id: &str,
    object: &ObjectMeta,
) -> anyhow::Result<()> {
    let options = WorkflowStartOptions::new(config.task_queue.clone(), workflow_id.to_owned())
        .id_conflict_policy(WorkflowIdConflictPolicy::Fail)
        .id_reuse_policy(WorkflowIdReusePolicy::AllowDuplicate)
        .search_attributes(visibility::ingest_start_attributes(request))
        .static_summary(visibility::ingest_summary(request, object.size))
        .static_details(visibility::ingest_details(request, object.size))
        .build();
    let input = IngestInput {
        request: request.clone(),
        resume: None,
    };
    match client
        .start_workflow(CatalogIngest::run, input, options)
        .await
    {
        Ok(_) => Ok(()),
        Err(WorkflowStartError::AlreadyStarted { .. }) => {
            let running = running_request(client, workflow_id).await?;
            let same = running.source == request.source
                && running.bucket == request.bucket
                && running.key == request.key
                && running.etag == request.etag
                && JobMode::of(&running) == JobMode::of(request);
            if !same {
                bail!(
                    "workflow id {workflow_id} is running for {} s3://{}/{} ETag {}{}, not for \
                     this request; choose another --workflow-id",
                    running.source,
                    running.bucket,
                    running.key,
                    running.etag,
                    mode_words(
                        running.dry_run,
                        running.options.partial,
                        running.options.allow_mass_delist
                    )
                );
            }
            Ok(())
        }
        Err(err) => Err(start_failed(err, workflow_id)),
    }
}

/// A start the server refuses for an unknown search attribute says how to fix it.
pub(crate) fn start_failed(err: WorkflowStartError, workflow_id: &str) -> anyhow::Error {
    let text = err.to_string();
    let error = anyhow::Error::from(err).context(format!("starting workflow {workflow_id}"));
    if text.contains("search attribute") {
        error.context(
            "the Temporal namespace lacks the project's search attributes: run `etlctl setup`",
        )
    } else {
        error
    }
}

/// The request a running ingest workflow was started with (its latest run's input).
async fn running_request(client: &Client, workflow_id: &str) -> anyhow::Result<IngestRequest> {
    use futures::StreamExt;
    let mut history = client
        .get_workflow_handle::<UntypedWorkflow>(workflow_id.to_owned())
        .fetch_history(WorkflowFetchHistoryOptions::default());
    let first = history
        .next()
        .await
        .context("the running workflow has no history")??;
    let Some(Attributes::WorkflowExecutionStartedEventAttributes(started)) = first.attributes
    else {
        bail!("workflow {workflow_id}: its first event is not its start");
    };
    let payload = started
        .input
        .and_then(|p| p.payloads.into_iter().next())
        .context("the running workflow has no input")?;
    let input: IngestInput = serde_json::from_slice(&payload.data)
        .with_context(|| format!("workflow {workflow_id} is not an ingest"))?;
    Ok(input.request)
}

/// The summary of a job whose workflow has not created its row yet.
fn pending_summary(request: &IngestRequest, workflow_id: &str, object: &ObjectMeta) -> JobSummary {
    JobSummary {
        job_id: request.job_id.clone(),
        workflow_id: workflow_id.to_owned(),
        source: request.source.clone(),
        status: "running".to_owned(),
        error: None,
        error_type: None,
        dry_run: request.dry_run,
        partial: request.options.partial,
        allow_mass_delist: request.options.allow_mass_delist,
        rows_total: 0,
        rows_valid: 0,
        rows_invalid: 0,
        items: None,
        items_delisted: None,
        items_relisted: None,
        delist_refused: None,
        chunks: 0,
        chunks_committed: 0,
        object: JobObject {
            bucket: object.bucket.clone(),
            key: object.key.clone(),
            etag: object.etag.clone(),
            size: Some(object.size),
            last_modified: Some(object.last_modified.clone()),
        },
        reconciliation: None,
        deadline_at: None,
        created_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        finished_at: None,
        chunks_clickhouse_pending: 0,
        delisting_clickhouse_pending: false,
        supersedes_job_id: request.supersedes.as_ref().map(|s| s.job_id.clone()),
        superseded_by_job_id: None,
        superseded_at: None,
        verified_at: None,
        verified_ok: None,
        ledger_pruned_at: None,
        workflow_status: None,
        chunk_details: None,
    }
}
