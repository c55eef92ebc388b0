//! Per-source ingest runs, retention runs and the data-quality audit.

use std::{io::Write, process::ExitCode};

use activities::{
    audit::Thresholds,
    config::Config,
    model::{
        DEFAULT_LEDGER_DAYS, DEFAULT_LIST_PAGE_SIZE, DEFAULT_MAX_OBJECTS_PER_RUN,
        DEFAULT_MAX_PARALLEL_OBJECTS, DEFAULT_RETENTION_BATCH, DEFAULT_RETENTION_DAYS,
        DEFAULT_RETENTION_MAX_ROWS, RetentionReport, RetentionRequest, SourceIngestRequest,
        SourceReport,
    },
    pg::PgStore,
    s3::parse_s3_uri,
    temporal::Patience,
    visibility,
};
use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use serde_json::json;
use temporalio_client::{
    WorkflowGetResultOptions, WorkflowIdConflictPolicy, WorkflowIdReusePolicy, WorkflowStartOptions,
};
use workflows::{Retention, SourceIngest};

use crate::{
    options::IngestOptionArgs,
    start::{check_source, start_failed},
    watch::{Watch, wait_for_workflow},
};

/// What a source run needs besides the source and its prefix; shared by `ingest-source` and
/// `schedule create`.
#[derive(Args, Clone)]
pub struct SourceRunArgs {
    /// Source (scraper) name.
    #[arg(long)]
    pub source: String,
    /// The source's prefix, `s3://bucket/prefix/`.
    #[arg(long)]
    pub uri: String,
    /// Objects ingested at once (child workflows).
    #[arg(long, default_value_t = DEFAULT_MAX_PARALLEL_OBJECTS, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub parallel_objects: u32,
    /// New objects per run, oldest first; the rest is left for the next run.
    #[arg(long, default_value_t = DEFAULT_MAX_OBJECTS_PER_RUN, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub max_objects: u32,
    /// Objects per S3 listing request.
    #[arg(long, default_value_t = DEFAULT_LIST_PAGE_SIZE, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub list_page_size: u32,
    /// Applied to every object of the run (`--partial`: the source's objects are not full
    /// snapshots and never delist).
    #[command(flatten)]
    pub options: IngestOptionArgs,
}

impl SourceRunArgs {
    pub fn request(&self) -> anyhow::Result<SourceIngestRequest> {
        check_source(&self.source)?;
        let Some((bucket, prefix)) = parse_s3_uri(&self.uri) else {
            bail!(
                "--uri must be a prefix like s3://bucket/source/, got {:?}",
                self.uri
            );
        };
        Ok(SourceIngestRequest {
            source: self.source.clone(),
            bucket,
            prefix,
            max_parallel_objects: self.parallel_objects,
            max_objects: self.max_objects,
            list_page_size: self.list_page_size,
            options: self.options.options(),
        })
    }
}

#[derive(Args)]
pub struct IngestSourceArgs {
    #[command(flatten)]
    run: SourceRunArgs,
    /// Wait for the run and print every object's outcome.
    #[arg(long)]
    wait: bool,
    #[arg(long)]
    json: bool,
}

/// The workflow id of a manual source run: one at a time per source (a second start while
/// one runs attaches to it). Scheduled runs get the schedule's own ids.
pub fn manual_source_workflow_id(source: &str) -> String {
    format!("source-{source}-manual")
}

pub async fn ingest_source(config: &Config, args: IngestSourceArgs) -> anyhow::Result<ExitCode> {
    let request = args.run.request()?;
    let workflow_id = manual_source_workflow_id(&request.source);
    let client = activities::temporal::connect(config, "etlctl", Patience::Command).await?;
    let options = WorkflowStartOptions::new(config.task_queue.clone(), workflow_id.clone())
        .id_conflict_policy(WorkflowIdConflictPolicy::UseExisting)
        .id_reuse_policy(WorkflowIdReusePolicy::AllowDuplicate)
        .search_attributes(visibility::source_start_attributes(&request.source))
        .static_summary(visibility::source_summary(&request))
        .static_details(visibility::source_details(&request))
        .build();
    client
        .start_workflow(SourceIngest::run, request, options)
        .await
        .map_err(|err| start_failed(err, &workflow_id))?;
    let web_ui = config.workflow_ui_link(&workflow_id);
    if !args.wait {
        if args.json {
            println!(
                "{}",
                json!({"workflow_id": workflow_id, "status": "running", "web_ui_url": web_ui})
            );
        } else {
            println!("source run {workflow_id} started");
            if let Some(web_ui) = &web_ui {
                println!("web ui  {web_ui}");
            }
        }
        return Ok(ExitCode::SUCCESS);
    }
    wait_for_workflow(config, &workflow_id, Watch::Source.progress(args.json)).await;
    let report = client
        .get_workflow_handle::<SourceIngest>(workflow_id.clone())
        .get_result(WorkflowGetResultOptions::default())
        .await
        .with_context(|| format!("source run {workflow_id} failed"))?;
    print_source_report(&report, &workflow_id, &web_ui, args.json)?;
    Ok(if report.failed > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

fn print_source_report(
    report: &SourceReport,
    workflow_id: &str,
    web_ui: &Option<String>,
    json: bool,
) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    if json {
        let mut value = serde_json::to_value(report)?;
        value["workflow_id"] = json!(workflow_id);
        value["web_ui_url"] = json!(web_ui);
        writeln!(out, "{}", serde_json::to_string(&value)?)?;
        return Ok(());
    }
    writeln!(
        out,
        "source {} (s3://{}/{}): {} listed, {} started, {} completed, {} failed, {} already \
         ingested, {} failed earlier (etlctl retry), {} left for the next run",
        report.source,
        report.bucket,
        report.prefix,
        report.listed,
        report.started,
        report.completed,
        report.failed,
        report.skipped,
        report.failed_earlier,
        report.remaining
    )?;
    for object in &report.objects {
        writeln!(
            out,
            "  {:<15} {}  {}  job {}{}",
            object.status,
            object.last_modified,
            object.key,
            object.job_id,
            object
                .error
                .as_deref()
                .map(|e| format!("\n                  error: {e}"))
                .unwrap_or_default()
        )?;
    }
    if let Some(web_ui) = web_ui {
        writeln!(out, "web ui  {web_ui}")?;
    }
    Ok(())
}

#[derive(Subcommand)]
pub enum RetentionCommand {
    /// Run the retention workflow now and wait for its report.
    Run {
        #[command(flatten)]
        retention: RetentionArgs,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Args, Clone)]
pub struct RetentionArgs {
    /// Delete invalid-row logs older than this many days.
    #[arg(long, default_value_t = DEFAULT_RETENTION_DAYS, value_parser = clap::value_parser!(u32).range(0..=36_500))]
    pub days: u32,
    /// Rows per DELETE statement.
    #[arg(long, default_value_t = DEFAULT_RETENTION_BATCH, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub batch_size: u32,
    /// Rows per run at most (the rest is left for the next run).
    #[arg(long, default_value_t = DEFAULT_RETENTION_MAX_ROWS, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_rows: u64,
    /// Delete the chunk ledgers (per-chunk rows and sku lists) of jobs that completed more than
    /// this many days ago with nothing left to copy; their totals stay on the job.
    #[arg(long, default_value_t = DEFAULT_LEDGER_DAYS, value_parser = clap::value_parser!(u32).range(0..=36_500))]
    pub ledger_days: u32,
}

impl RetentionArgs {
    pub fn request(&self) -> anyhow::Result<RetentionRequest> {
        // One activity per batch: keep a run's history far from Temporal's limits.
        let batches = self.max_rows.div_ceil(u64::from(self.batch_size));
        if batches > 1_000 {
            bail!(
                "--max-rows {} / --batch-size {} is {batches} batches; at most 1000 per run",
                self.max_rows,
                self.batch_size
            );
        }
        Ok(RetentionRequest {
            days: self.days,
            batch_size: self.batch_size,
            max_rows: self.max_rows,
            ledger_days: Some(self.ledger_days),
        })
    }
}

pub async fn retention(config: &Config, command: RetentionCommand) -> anyhow::Result<ExitCode> {
    let RetentionCommand::Run {
        retention: args,
        json,
    } = command;
    let request = args.request()?;
    let client = activities::temporal::connect(config, "etlctl", Patience::Command).await?;
    let workflow_id = "retention-manual".to_owned();
    let options = WorkflowStartOptions::new(config.task_queue.clone(), workflow_id.clone())
        .id_conflict_policy(WorkflowIdConflictPolicy::UseExisting)
        .id_reuse_policy(WorkflowIdReusePolicy::AllowDuplicate)
        .static_summary(format!(
            "retention: delete invalid-row logs older than {} days",
            request.days
        ))
        .static_details(format!(
            "- **Batches** of {} rows\n- **At most** {} rows this run",
            request.batch_size, request.max_rows
        ))
        .build();
    client
        .start_workflow(Retention::run, request, options)
        .await
        .map_err(|err| start_failed(err, &workflow_id))?;
    wait_for_workflow(config, &workflow_id, Watch::Quiet).await;
    let report: RetentionReport = client
        .get_workflow_handle::<Retention>(workflow_id.clone())
        .get_result(WorkflowGetResultOptions::default())
        .await
        .with_context(|| format!("retention run {workflow_id} failed"))?;
    if json {
        let mut value = serde_json::to_value(&report)?;
        value["workflow_id"] = json!(workflow_id);
        println!("{}", serde_json::to_string(&value)?);
    } else {
        println!(
            "deleted {} invalid-row logs older than {} days (before {}) in {} batches{}",
            report.deleted,
            report.days,
            report.cutoff,
            report.batches,
            if report.capped {
                "; stopped at --max-rows: older rows remain for the next run"
            } else {
                ""
            }
        );
        println!(
            "deleted the chunk ledgers of {} completed jobs ({} chunk rows)",
            report.ledgers_pruned, report.ledger_rows_deleted
        );
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(Args)]
pub struct AuditArgs {
    #[arg(long)]
    source: Option<String>,
    #[arg(long)]
    json: bool,
    /// Exit 1 when any source is flagged (for cron and CI).
    #[arg(long)]
    strict: bool,
}

pub async fn audit(config: &Config, args: AuditArgs) -> anyhow::Result<ExitCode> {
    if let Some(source) = &args.source {
        check_source(source)?;
    }
    let pg = PgStore::connect(config).await.context("Postgres")?;
    let report = pg
        .audit(args.source.as_deref(), &Thresholds::default())
        .await?;
    let mut out = std::io::stdout().lock();
    if args.json {
        writeln!(out, "{}", serde_json::to_string(&report)?)?;
    } else {
        for s in &report.sources {
            writeln!(
                out,
                "{}: {} listed items ({} delisted), median price {}, last ingest {}",
                s.source,
                s.items,
                s.delisted,
                s.median_price.map_or("-".to_owned(), |p| format!("{p:.2}")),
                s.days_since_last_ingest
                    .map_or("never".to_owned(), |d| format!("{d:.1} days ago"))
            )?;
            let nulls: Vec<String> = s
                .null_shares
                .iter()
                .map(|n| format!("{} {:.1}%", n.field, n.share * 100.0))
                .collect();
            writeln!(out, "  null: {}", nulls.join(", "))?;
            writeln!(
                out,
                "  suspicious prices {}, weights out of range {}, empty names {}, last job invalid {}",
                s.suspicious_prices,
                s.weights_out_of_range,
                s.empty_names,
                s.last_job_invalid_rate
                    .map_or("-".to_owned(), |r| format!("{:.2}%", r * 100.0))
            )?;
            for flag in &s.flags {
                writeln!(out, "  FLAG {}: {}", flag.check, flag.message)?;
            }
        }
        if report.sources.is_empty() {
            writeln!(out, "no sources")?;
        }
    }
    Ok(if args.strict && report.flagged_sources > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}
