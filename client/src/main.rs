//! `etlctl`: starts ingests and reads job results. Operators run it from a shell or cron; its
//! `--json` output is an interface for their scripts.

use std::{io::Write, path::PathBuf, process::ExitCode};

use activities::ops::Rerun;
use activities::{
    config::Config,
    generator::{GeneratorConfig, write_catalog},
    model::{
        DEFAULT_CHUNK_BYTES, DEFAULT_HEARTBEAT_TIMEOUT_SECS, DEFAULT_HISTORY_EVENT_BUDGET,
        DEFAULT_MAX_PARALLEL_CHUNKS, IngestRequest, JobOutcome, JobSummary,
    },
    pg::PgStore,
    s3::{ObjectStore, parse_s3_uri},
};
use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};
use serde_json::json;
use temporalio_client::{
    WorkflowGetResultOptions, WorkflowIdConflictPolicy, WorkflowIdReusePolicy, WorkflowStartOptions,
};
use workflows::{CatalogIngest, IngestInput};

mod jobs;
mod schedules;
mod sources;

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
    /// Target chunk size in bytes (chunks end on record boundaries, so they may be longer).
    #[arg(long, default_value_t = DEFAULT_CHUNK_BYTES, value_parser = clap::value_parser!(u64).range(1..))]
    chunk_bytes: u64,
    /// Chunks processed in parallel.
    #[arg(long, default_value_t = DEFAULT_MAX_PARALLEL_CHUNKS, value_parser = clap::value_parser!(u32).range(1..=1000))]
    parallel: u32,
    /// Validate and count only: no writes to the catalog tables.
    #[arg(long)]
    dry_run: bool,
    /// Workflow ID to use instead of the one derived from (source, bucket, key, ETag).
    #[arg(long)]
    workflow_id: Option<String>,
    /// Seconds a chunk may go without heartbeat before it is retried elsewhere.
    #[arg(long, default_value_t = DEFAULT_HEARTBEAT_TIMEOUT_SECS, value_parser = clap::value_parser!(u64).range(1..))]
    heartbeat_timeout: u64,
    /// History events after which a workflow run continues as new.
    #[arg(long, default_value_t = DEFAULT_HISTORY_EVENT_BUDGET, value_parser = clap::value_parser!(u32).range(20..=10_000))]
    history_event_budget: u32,
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

#[tokio::main]
async fn main() -> ExitCode {
    match run(Cli::parse()).await {
        Ok(code) => code,
        Err(err) => {
            eprintln!("etlctl: {}", activities::error::error_chain(err.as_ref()));
            ExitCode::from(2)
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let config = Config::from_env().context("configuration")?;
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
        Command::Retry(args) => jobs::rerun(&config, Rerun::Retry, args).await,
        Command::Repair(args) => jobs::rerun(&config, Rerun::Repair, args).await,
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
        Command::Migrate => {
            let activities = activities::EtlActivities::connect(&config).await?;
            drop(activities);
            println!("migrations applied (Postgres and ClickHouse)");
            Ok(ExitCode::SUCCESS)
        }
        Command::Generate(args) => generate(&config, args).await,
        Command::Upload { file, uri } => {
            let (bucket, key) = parse_object_uri(&uri)?;
            let body =
                std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
            let s3 = ObjectStore::new(&config);
            s3.ensure_bucket(&bucket).await?;
            let meta = s3.put(&bucket, &key, body.into()).await?;
            println!("{}", serde_json::to_string(&meta)?);
            Ok(ExitCode::SUCCESS)
        }
    }
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
    let s3 = ObjectStore::new(config);
    let object = s3.head(&bucket, &key).await?;
    let workflow_id = args.workflow_id.clone().unwrap_or_else(|| {
        activities::model::ingest_workflow_id(
            &args.source,
            &bucket,
            &key,
            &object.etag,
            args.dry_run,
        )
    });
    let request = IngestRequest {
        job_id: activities::model::job_id_for_workflow(&workflow_id),
        source: args.source.clone(),
        bucket,
        key,
        etag: object.etag.clone(),
        chunk_bytes: args.chunk_bytes,
        max_parallel_chunks: args.parallel,
        dry_run: args.dry_run,
        heartbeat_timeout_secs: args.heartbeat_timeout,
        history_event_budget: args.history_event_budget,
    };
    let pg = PgStore::connect(config).await.context("Postgres")?;
    // The job row exists before the workflow starts, so `jobs show` answers at once; an
    // existing final job (same object version, same source) is returned as is.
    let job = pg.open_job(&request, &workflow_id).await?;
    if job.status == "running" {
        run_job(config, &pg, &request, &workflow_id, args.wait).await?;
    }
    let summary = pg.job_summary(&request.job_id).await?;
    print_summary(config, &summary, args.json)?;
    Ok(exit_code(&summary))
}

/// Starts (or finds) the workflow of a job whose row exists, and with `wait` waits for it.
/// A workflow that cannot start fails its job, so no job is left `running` without one.
pub(crate) async fn run_job(
    config: &Config,
    pg: &PgStore,
    request: &IngestRequest,
    workflow_id: &str,
    wait: bool,
) -> anyhow::Result<()> {
    let client = activities::temporal::connect(config, "etlctl").await?;
    let options = WorkflowStartOptions::new(config.task_queue.clone(), workflow_id.to_owned())
        .id_conflict_policy(WorkflowIdConflictPolicy::UseExisting)
        .id_reuse_policy(WorkflowIdReusePolicy::AllowDuplicate)
        .build();
    let input = IngestInput {
        request: request.clone(),
        resume: None,
    };
    let handle = match client
        .start_workflow(CatalogIngest::run, input, options)
        .await
    {
        Ok(handle) => handle,
        Err(err) => {
            let error = format!("could not start workflow {workflow_id}: {err:#}");
            pg.finalize(
                &request.job_id,
                &JobOutcome::Failed {
                    error: error.clone(),
                },
            )
            .await?;
            bail!(error);
        }
    };
    if wait && let Err(err) = handle.get_result(WorkflowGetResultOptions::default()).await {
        // The workflow records its failure on the job row before failing; this only shows
        // when it could not (Postgres down at that moment, or the run was terminated).
        let summary = pg.job_summary(&request.job_id).await?;
        if summary.status == "running" {
            pg.finalize(
                &request.job_id,
                &JobOutcome::Failed {
                    error: format!("workflow {workflow_id} ended without a result: {err}"),
                },
            )
            .await?;
        }
    }
    Ok(())
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
    let mut out = std::io::stdout().lock();
    if json {
        let mut value = serde_json::to_value(summary)?;
        value["web_ui_url"] = json!(web_ui);
        writeln!(out, "{}", serde_json::to_string(&value)?)?;
        return Ok(());
    }
    let o = &summary.object;
    writeln!(
        out,
        "job            {}  ({})",
        summary.job_id, summary.status
    )?;
    if let Some(error) = &summary.error {
        writeln!(out, "error          {error}")?;
    }
    writeln!(
        out,
        "source         {}{}",
        summary.source,
        if summary.dry_run { "  (dry run)" } else { "" }
    )?;
    writeln!(
        out,
        "object         s3://{}/{}  etag {}  size {}  modified {}",
        o.bucket,
        o.key,
        o.etag,
        o.size.map_or("?".to_owned(), |s| s.to_string()),
        o.last_modified.as_deref().unwrap_or("?")
    )?;
    writeln!(
        out,
        "rows           total {}  valid {}  invalid {}  items {}",
        summary.rows_total,
        summary.rows_valid,
        summary.rows_invalid,
        summary.items.map_or("-".to_owned(), |n| n.to_string())
    )?;
    writeln!(
        out,
        "chunks         {} committed of {}",
        summary.chunks_committed, summary.chunks
    )?;
    if let Some(r) = &summary.reconciliation {
        writeln!(
            out,
            "reconciliation {}  source rows {}  pg items {}  ch items {}",
            if r.ok { "ok" } else { "MISMATCH" },
            r.source_rows,
            r.pg_items.map_or("-".to_owned(), |n| n.to_string()),
            r.ch_items.map_or("-".to_owned(), |n| n.to_string())
        )?;
    }
    if summary.chunks_clickhouse_pending > 0 {
        writeln!(
            out,
            "clickhouse     {} committed chunks not yet written to ClickHouse",
            summary.chunks_clickhouse_pending
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
    writeln!(out, "workflow       {}", summary.workflow_id)?;
    writeln!(out, "web ui         {web_ui}")?;
    if let Some(chunks) = &summary.chunk_details {
        writeln!(
            out,
            "\n{:>6} {:>12} {:>12} {:>8} {:>8} {:>8} {:>9} {:>4} {:>9}",
            "chunk", "bytes from", "to", "rows", "valid", "invalid", "status", "att", "ms"
        )?;
        let count = |n: Option<u64>| n.map_or("-".to_owned(), |n| n.to_string());
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
            let s3 = ObjectStore::new(config);
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
