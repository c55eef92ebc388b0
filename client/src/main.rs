//! `etlctl`: starts ingests, cancels and reads jobs, manages schedules. Operators run it from a
//! shell or cron; its `--json` output is an interface for their scripts. It never writes a
//! job's state: the workflow owns the job.

use std::{path::PathBuf, process::ExitCode};

use activities::{
    config::{Config, Needs},
    pg::PgStore,
};
use anyhow::Context;
use clap::{Parser, Subcommand};

mod generate;
mod jobs;
mod options;
mod print;
mod schedules;
mod setup;
mod sources;
mod start;
mod watch;
mod watchdog;

use print::{exit_code, print_summary};

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
    Ingest(start::IngestArgs),
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
    /// Prepare the Temporal namespace (idempotent): register the project's search attributes
    /// (the worker refuses to start without them) and schedule the watchdog.
    Setup {
        #[arg(long)]
        json: bool,
        /// How often the watchdog looks for running jobs whose workflow was closed without
        /// ending them (units s, m, h).
        #[arg(long, default_value = "5m", value_parser = options::parse_duration)]
        watchdog_every: std::time::Duration,
    },
    /// End, now, the running jobs whose workflow was closed without ending them (terminated,
    /// timed out, deleted): what the scheduled watchdog does every few minutes.
    Watchdog {
        /// This job only.
        #[arg(long = "job")]
        job_id: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Apply Postgres and ClickHouse migrations (idempotent).
    Migrate,
    /// Write a deterministic synthetic catalog CSV, to a file or to S3.
    Generate(generate::GenerateArgs),
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
            | Command::Setup { .. }
            | Command::Watchdog { .. } => Needs {
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
            // `jobs show` also asks Temporal how a running job's workflow stands, when it can.
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
        Command::Ingest(args) => start::ingest(&config, args).await,
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
            summary.workflow_status = watchdog::workflow_status(&config, &summary).await;
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
        Command::Setup {
            json,
            watchdog_every,
        } => setup::setup(&config, json, watchdog_every).await,
        Command::Watchdog { job_id, json } => watchdog::run(&config, job_id, json).await,
        Command::Migrate => setup::migrate(&config).await,
        Command::Generate(args) => generate::generate(&config, args).await,
        Command::Upload { file, uri } => generate::upload(&config, &file, &uri).await,
    }
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
