//! `etlctl`: starts ingests, cancels and reads jobs, manages schedules. Operators run it from a
//! shell or cron; its `--json` output is an interface for their scripts. It never writes a
//! job's state: the workflow owns the job.

use std::{io::Write, path::PathBuf, process::ExitCode};

use activities::{
    config::{Config, Needs},
    generator::{GeneratorConfig, write_catalog},
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
use clap::{Args, Parser, Subcommand};
use serde_json::json;
use temporalio_client::{
    Client, UntypedWorkflow, WorkflowFetchHistoryOptions, WorkflowIdConflictPolicy,
    WorkflowIdReusePolicy, WorkflowStartOptions, errors::WorkflowStartError,
};
use temporalio_common::protos::temporal::api::history::v1::history_event::Attributes;
use workflows::{CatalogIngest, IngestInput};

mod jobs;
mod options;
mod schedules;
mod sources;
mod watch;

use options::IngestOptionArgs;
use watch::{Watch, wait_for_workflow};

#[derive(Parser)]
#[command(
    name = "etlctl",
    version,
    about = "Durable catalog ETL: start ingests, inspect jobs"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Ingest one CSV object (one job per source and object version).
    Ingest(IngestArgs),
    /// Ingest every object version under a source's prefix not ingested yet.
    IngestSource(sources::IngestSourceArgs),
    /// Inspect jobs.
    Jobs {
        #[command(subcommand)]
        command: JobsCommand,
    },
    /// Re-run a failed or cancelled job as a new job (same object, ETag checked first).
    Retry(jobs::RerunArgs),
    /// Re-ingest a completed job from scratch as a new job (ETag checked first).
    Repair(jobs::RerunArgs),
    /// Recount a job from the live object and both stores; exit 1 on any mismatch.
    Reconcile {
        job_id: String,
        #[arg(long)]
        json: bool,
    },
    /// Cancel a running job: chunks in flight finish, the job ends `cancelled`.
    Cancel {
        job_id: String,
        #[arg(long, default_value = "")]
        reason: String,
        /// Return once the request is sent instead of waiting for the job to stop.
        #[arg(long)]
        no_wait: bool,
        #[arg(long)]
        json: bool,
    },
    /// Temporal Schedules that run source ingests (and retention).
    Schedule {
        #[command(subcommand)]
        command: schedules::ScheduleCommand,
    },
    /// Delete expired invalid-row logs.
    Retention {
        #[command(subcommand)]
        command: sources::RetentionCommand,
    },
    /// Data-quality report of the current catalog, per source.
    Audit(sources::AuditArgs),
    /// Register the project's search attributes on the Temporal namespace (idempotent; the
    /// worker refuses to start without them).
    Setup {
        #[arg(long)]
        json: bool,
    },
    /// Apply Postgres and ClickHouse migrations (idempotent).
    Migrate,
    /// Write a deterministic synthetic catalog CSV, to a file or to S3.
    Generate(GenerateArgs),
    /// Upload a local file to S3 (creating the bucket if needed).
    Upload {
        file: PathBuf,
        /// Destination, `s3://bucket/key`.
        uri: String,
    },
}

#[derive(Subcommand)]
enum JobsCommand {
    /// Print a job's summary (the same object `ingest --wait --json` prints).
    Show {
        job_id: String,
        #[arg(long)]
        json: bool,
        /// Add per-chunk detail: byte range, rows, attempts, duration.
        #[arg(long)]
        chunks: bool,
    },
    /// Jobs, newest first.
    List(jobs::ListArgs),
}

#[derive(Args)]
struct IngestArgs {
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

#[derive(Args)]
struct GenerateArgs {
    #[arg(long, default_value_t = 1000)]
    rows: u64,
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Invalid rows per thousand.
    #[arg(long, default_value_t = 10)]
    invalid_per_mille: u32,
    /// Rows per thousand that repeat an earlier sku.
    #[arg(long, default_value_t = 20)]
    duplicate_per_mille: u32,
    #[arg(long)]
    crlf: bool,
    #[arg(long)]
    bom: bool,
    /// Write to this file (default: stdout), or upload with `--upload`.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Upload to `s3://bucket/key` instead of writing a file.
    #[arg(long)]
    upload: Option<String>,
    /// Print the generator's expected counts as JSON on stderr.
    #[arg(long)]
    stats: bool,
}

impl Command {
    /// The services the command talks to: only their settings are required.
    fn needs(&self) -> Needs {
        let all = Needs::ALL;
        let none = Needs::NONE;
        match self {
            Command::Ingest(_) | Command::Retry(_) | Command::Repair(_) => Needs {
                clickhouse: false,
                ..all
            },
            Command::IngestSource(_)
            | Command::Schedule { .. }
            | Command::Retention { .. }
            | Command::Setup { .. } => Needs {
                temporal: true,
                ..none
            },
            Command::Reconcile { .. } => Needs {
                temporal: true,
                postgres: true,
                ..none
            },
            Command::Cancel { .. } => Needs {
                temporal: true,
                postgres: true,
                ..none
            },
            Command::Jobs { .. } | Command::Audit(_) => Needs {
                postgres: true,
                ..none
            },
            Command::Migrate => Needs {
                postgres: true,
                clickhouse: true,
                ..none
            },
            Command::Generate(args) => Needs {
                s3: args.upload.is_some(),
                ..none
            },
            Command::Upload { .. } => Needs { s3: true, ..none },
        }
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    activities::tls::install_crypto_provider();
    match run(Cli::parse()).await {
        Ok(code) => code,
        Err(err) => {
            eprintln!("etlctl: {}", activities::error::error_chain(err.as_ref()));
            ExitCode::from(2)
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let config = Config::from_env(cli.command.needs()).context("configuration")?;
    match cli.command {
        Command::Ingest(args) => ingest(&config, args).await,
        Command::Jobs {
            command:
                JobsCommand::Show {
                    job_id,
                    json,
                    chunks,
                },
        } => {
            let pg = PgStore::connect(&config).await.context("Postgres")?;
            let mut summary = pg.job_summary(&job_id).await?;
            if chunks {
                summary.chunk_details = Some(pg.chunk_details(&job_id).await?);
            }
            print_summary(&config, &summary, json)?;
            Ok(exit_code(&summary))
        }
        Command::Jobs {
            command: JobsCommand::List(args),
        } => jobs::list(&config, args).await,
        Command::IngestSource(args) => sources::ingest_source(&config, args).await,
        Command::Retry(args) => jobs::rerun(&config, activities::model::Rerun::Retry, args).await,
        Command::Repair(args) => jobs::rerun(&config, activities::model::Rerun::Repair, args).await,
        Command::Reconcile { job_id, json } => jobs::reconcile(&config, &job_id, json).await,
        Command::Cancel {
            job_id,
            reason,
            no_wait,
            json,
        } => jobs::cancel(&config, &job_id, &reason, !no_wait, json).await,
        Command::Schedule { command } => schedules::run(&config, command).await,
        Command::Retention { command } => sources::retention(&config, command).await,
        Command::Audit(args) => sources::audit(&config, args).await,
        Command::Setup { json } => setup(&config, json).await,
        Command::Migrate => {
            let pg = PgStore::connect(&config)
                .await
                .context("Postgres (DATABASE_URL)")?;
            pg.migrate().await.context("Postgres migrations")?;
            let ch =
                activities::ch::ChStore::new(&config).context("ClickHouse (CLICKHOUSE_URL)")?;
            ch.check_version()
                .await
                .context("ClickHouse (CLICKHOUSE_URL)")?;
            ch.migrate().await.context("ClickHouse migrations")?;
            println!("migrations applied (Postgres and ClickHouse)");
            Ok(ExitCode::SUCCESS)
        }
        Command::Generate(args) => generate(&config, args).await,
        Command::Upload { file, uri } => {
            let (bucket, key) = parse_object_uri(&uri)?;
            let body =
                std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
            let s3 = ObjectStore::new(&config)?;
            s3.ensure_bucket(&bucket).await?;
            let meta = s3.put(&bucket, &key, body.into()).await?;
            println!("{}", serde_json::to_string(&meta)?);
            Ok(ExitCode::SUCCESS)
        }
    }
}

async fn setup(config: &Config, json: bool) -> anyhow::Result<ExitCode> {
    let client = activities::temporal::connect(config, "etlctl", Patience::Command).await?;
    let namespace = config.temporal.namespace();
    let registered = activities::temporal::register_search_attributes(&client, namespace).await?;
    let present: Vec<&str> = activities::visibility::registrations()
        .iter()
        .map(|(name, _)| *name)
        .filter(|name| !registered.contains(name))
        .collect();
    if json {
        println!(
            "{}",
            json!({"namespace": namespace, "registered": registered, "present": present})
        );
    } else if registered.is_empty() {
        println!(
            "namespace {namespace}: all {} search attributes were registered already",
            present.len()
        );
    } else {
        println!(
            "namespace {namespace}: registered {}{}",
            registered.join(", "),
            if present.is_empty() {
                String::new()
            } else {
                format!(" ({} present already)", present.len())
            }
        );
    }
    Ok(ExitCode::SUCCESS)
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

async fn ingest(config: &Config, args: IngestArgs) -> anyhow::Result<ExitCode> {
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
        chunk_details: None,
    }
}

/// The Web UI's workflow list filtered to a job: its runs (continued-as-new runs too) and the
/// `etlctl reconcile` recounts of it.
pub(crate) fn job_runs_ui_link(config: &Config, job_id: &str) -> Option<String> {
    config.workflow_list_ui_link(&format!("{} = \"{job_id}\"", visibility::JOB_ID.name()))
}

pub(crate) fn exit_code(summary: &JobSummary) -> ExitCode {
    match summary.status.as_str() {
        "completed" | "running" => ExitCode::SUCCESS,
        _ => ExitCode::FAILURE,
    }
}

pub(crate) fn print_summary(
    config: &Config,
    summary: &JobSummary,
    json: bool,
) -> anyhow::Result<()> {
    let web_ui = config.workflow_ui_link(&summary.workflow_id);
    let web_ui_runs = job_runs_ui_link(config, &summary.job_id);
    let mut out = std::io::stdout().lock();
    if json {
        let mut value = serde_json::to_value(summary)?;
        value["web_ui_url"] = json!(web_ui);
        value["web_ui_runs_url"] = json!(web_ui_runs);
        writeln!(out, "{}", serde_json::to_string(&value)?)?;
        return Ok(());
    }
    let o = &summary.object;
    let count = |n: Option<u64>| n.map_or("-".to_owned(), |n| n.to_string());
    writeln!(
        out,
        "job            {}  ({})",
        summary.job_id, summary.status
    )?;
    if let Some(error) = &summary.error {
        match &summary.error_type {
            Some(kind) => writeln!(out, "error          [{kind}] {error}")?,
            None => writeln!(out, "error          {error}")?,
        }
    }
    writeln!(
        out,
        "source         {}{}{}",
        summary.source,
        if summary.dry_run { "  (dry run)" } else { "" },
        if summary.partial { "  (partial)" } else { "" }
    )?;
    writeln!(
        out,
        "object         s3://{}/{}  etag {}  size {}  modified {}",
        o.bucket,
        o.key,
        o.etag,
        count(o.size),
        o.last_modified.as_deref().unwrap_or("?")
    )?;
    writeln!(
        out,
        "rows           total {}  valid {}  invalid {}  items {}",
        summary.rows_total,
        summary.rows_valid,
        summary.rows_invalid,
        count(summary.items)
    )?;
    writeln!(
        out,
        "chunks         {} committed of {}",
        summary.chunks_committed, summary.chunks
    )?;
    if summary.items_delisted.is_some() || summary.items_relisted.is_some() {
        writeln!(
            out,
            "catalog        delisted {}  relisted {}",
            count(summary.items_delisted),
            count(summary.items_relisted)
        )?;
    }
    if let Some(refused) = &summary.delist_refused {
        writeln!(
            out,
            "delisting      REFUSED by the mass-delist guard: would delist {} of {} listed \
             items (--allow-mass-delist overrides)",
            refused["would_delist"], refused["listed"]
        )?;
    }
    if let Some(r) = &summary.reconciliation {
        writeln!(
            out,
            "reconciliation {}  source rows {}  pg items {}  ch items {}  listed pg {} ch {}",
            if r.ok { "ok" } else { "MISMATCH" },
            r.source_rows,
            count(r.pg_items),
            count(r.ch_items),
            count(r.pg_listed),
            count(r.ch_listed)
        )?;
    }
    if summary.chunks_clickhouse_pending > 0 {
        writeln!(
            out,
            "clickhouse     {} committed chunks not yet copied to ClickHouse (the source's \
             next job, or `etlctl retry`/`repair`, copies them)",
            summary.chunks_clickhouse_pending
        )?;
    }
    if summary.delisting_clickhouse_pending {
        writeln!(
            out,
            "clickhouse     the delisting is not yet copied to ClickHouse (the source's next \
             job copies it)"
        )?;
    }
    if let Some(previous) = &summary.supersedes_job_id {
        writeln!(out, "supersedes     {previous}")?;
    }
    if let Some(next) = &summary.superseded_by_job_id {
        writeln!(
            out,
            "superseded by  {next}  at {}",
            summary.superseded_at.as_deref().unwrap_or("?")
        )?;
    }
    if let Some(verified_at) = &summary.verified_at {
        writeln!(
            out,
            "verified       {verified_at}  {}",
            match summary.verified_ok {
                Some(true) => "ok",
                _ => "MISMATCH (see etlctl reconcile)",
            }
        )?;
    }
    if summary.status == "running"
        && let Some(deadline) = &summary.deadline_at
    {
        writeln!(out, "deadline       {deadline}")?;
    }
    writeln!(out, "workflow       {}", summary.workflow_id)?;
    if let Some(web_ui) = &web_ui {
        writeln!(out, "web ui         {web_ui}")?;
    }
    if let Some(runs) = &web_ui_runs {
        writeln!(out, "all runs       {runs}")?;
    }
    if let Some(chunks) = &summary.chunk_details {
        writeln!(
            out,
            "\n{:>6} {:>12} {:>12} {:>8} {:>8} {:>8} {:>9} {:>4} {:>9}",
            "chunk", "bytes from", "to", "rows", "valid", "invalid", "status", "att", "ms"
        )?;
        for c in chunks {
            writeln!(
                out,
                "{:>6} {:>12} {:>12} {:>8} {:>8} {:>8} {:>9} {:>4} {:>9}",
                c.chunk_index,
                c.byte_start,
                c.byte_end,
                count(c.rows_total.or(Some(c.planned_rows))),
                count(c.rows_valid),
                count(c.rows_invalid),
                if c.status == "committed" && !c.clickhouse_written && !summary.dry_run {
                    "pg-only"
                } else {
                    c.status.as_str()
                },
                c.attempts,
                count(c.duration_ms)
            )?;
        }
    }
    Ok(())
}

async fn generate(config: &Config, args: GenerateArgs) -> anyhow::Result<ExitCode> {
    let generator = GeneratorConfig {
        rows: args.rows,
        seed: args.seed,
        invalid_per_mille: args.invalid_per_mille,
        duplicate_per_mille: args.duplicate_per_mille,
        crlf: args.crlf,
        bom: args.bom,
        ..GeneratorConfig::default()
    };
    let stats = match (&args.upload, &args.out) {
        (Some(uri), _) => {
            let (bucket, key) = parse_object_uri(uri)?;
            let mut body = Vec::new();
            let stats = write_catalog(&generator, &mut body)?;
            let s3 = ObjectStore::new(config)?;
            s3.ensure_bucket(&bucket).await?;
            s3.put(&bucket, &key, body.into()).await?;
            stats
        }
        (None, Some(path)) => {
            let file = std::fs::File::create(path)
                .with_context(|| format!("creating {}", path.display()))?;
            let mut out = std::io::BufWriter::new(file);
            let stats = write_catalog(&generator, &mut out)?;
            out.flush()?;
            stats
        }
        (None, None) => write_catalog(&generator, std::io::stdout().lock())?,
    };
    if args.stats {
        eprintln!("{}", serde_json::to_string(&stats)?);
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::Cli;

    /// Catches clashing flags (e.g. two flattened argument groups both declaring `--json`),
    /// which clap reports only when the command runs.
    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }
}
