//! Temporal Schedules: one per source (running `SourceIngest`), and one for retention.

use std::{
    io::Write,
    process::ExitCode,
    time::{Duration, SystemTime},
};

use activities::config::Config;
use anyhow::{Context, bail};
use chrono::{DateTime, SecondsFormat, Utc};
use clap::{Args, Subcommand};
use futures::TryStreamExt;
use serde_json::{Value, json};
use temporalio_client::{
    Client,
    schedules::{
        BackfillScheduleOptions, CreateScheduleOptions, DeleteScheduleOptions,
        ListSchedulesOptions, PauseScheduleOptions, ScheduleAction, ScheduleBackfill,
        ScheduleDescriptionAction, ScheduleError, ScheduleOverlapPolicy, ScheduleRecentAction,
        ScheduleSpec, TriggerScheduleOptions, UnpauseScheduleOptions,
    },
    tonic::Code,
};
use workflows::{Retention, SourceIngest};

use crate::sources::{RetentionArgs, SourceRunArgs};

/// A worker outage shorter than this replays the ticks it missed (the latest one; overlap
/// policy skip keeps it to one run); a longer outage skips them, so a week down does not
/// replay a week of ticks. The next regular tick then picks up every new object anyway.
const DEFAULT_CATCHUP_WINDOW: &str = "1h";

#[derive(Subcommand)]
pub enum ScheduleCommand {
    /// Schedule a source's ingest (`SourceIngest` on each tick).
    Create(CreateArgs),
    /// Schedule the retention of invalid-row logs.
    CreateRetention(CreateRetentionArgs),
    List {
        #[arg(long)]
        json: bool,
    },
    Describe {
        schedule_id: String,
        #[arg(long)]
        json: bool,
    },
    /// Run the scheduled action now (skipped if a run of it is still going).
    Trigger {
        schedule_id: String,
    },
    Pause {
        schedule_id: String,
        #[arg(long, default_value = "paused with etlctl")]
        note: String,
    },
    Unpause {
        schedule_id: String,
        #[arg(long, default_value = "unpaused with etlctl")]
        note: String,
    },
    /// Run the ticks of a past time range (one after the other).
    Backfill {
        schedule_id: String,
        /// RFC 3339, e.g. 2026-11-01T00:00:00Z.
        #[arg(long)]
        from: String,
        #[arg(long)]
        to: String,
    },
    Delete {
        schedule_id: String,
    },
}

#[derive(Args)]
pub struct TimingArgs {
    /// Cron expression (5 fields: minute hour day-of-month month day-of-week).
    #[arg(long)]
    cron: String,
    #[arg(long, default_value = "UTC")]
    timezone: String,
    /// Missed ticks older than this are skipped (units s, m, h, d).
    #[arg(long, default_value = DEFAULT_CATCHUP_WINDOW, value_parser = parse_catchup_window)]
    catchup_window: Duration,
    /// Pause the schedule when a run fails, until an operator unpauses it.
    #[arg(long)]
    pause_on_failure: bool,
    /// Replace the definition of an existing schedule instead of failing.
    #[arg(long)]
    update: bool,
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub struct CreateArgs {
    #[command(flatten)]
    run: SourceRunArgs,
    #[command(flatten)]
    timing: TimingArgs,
    /// Default: `ingest-<source>`.
    #[arg(long)]
    schedule_id: Option<String>,
}

#[derive(Args)]
pub struct CreateRetentionArgs {
    #[command(flatten)]
    retention: RetentionArgs,
    #[command(flatten)]
    timing: TimingArgs,
    #[arg(long, default_value = "retention")]
    schedule_id: String,
}

/// Temporal's minimum catch-up window is ten seconds.
fn parse_catchup_window(text: &str) -> Result<Duration, String> {
    let duration = crate::options::parse_duration(text)?;
    if duration < Duration::from_secs(10) {
        return Err("the catch-up window is at least 10s".to_owned());
    }
    Ok(duration)
}

fn time(t: SystemTime) -> String {
    DateTime::<Utc>::from(t).to_rfc3339_opts(SecondsFormat::Secs, true)
}

fn parse_time(text: &str, flag: &str) -> anyhow::Result<SystemTime> {
    let t = DateTime::parse_from_rfc3339(text)
        .with_context(|| format!("{flag} must be RFC 3339 (e.g. 2026-11-01T00:00:00Z)"))?;
    Ok(t.with_timezone(&Utc).into())
}

/// The server's message, without the transport's wrapping.
fn schedule_error(err: ScheduleError, what: &str) -> anyhow::Error {
    match err {
        ScheduleError::Rpc(status) if status.code() == Code::NotFound => {
            anyhow::anyhow!("{what}: no such schedule")
        }
        ScheduleError::Rpc(status) => anyhow::anyhow!("{what}: {}", status.message()),
        other => anyhow::anyhow!("{what}: {other}"),
    }
}

pub async fn run(config: &Config, command: ScheduleCommand) -> anyhow::Result<ExitCode> {
    let client =
        activities::temporal::connect(config, "etlctl", activities::temporal::Patience::Command)
            .await?;
    match command {
        ScheduleCommand::Create(args) => {
            let request = args.run.request()?;
            let schedule_id = args
                .schedule_id
                .clone()
                .unwrap_or_else(|| format!("ingest-{}", request.source));
            let action = ScheduleAction::start_workflow(
                SourceIngest::run,
                request.clone(),
                config.task_queue.clone(),
                format!("source-{}", request.source),
            );
            create(config, &client, &schedule_id, action, &args.timing).await
        }
        ScheduleCommand::CreateRetention(args) => {
            let request = args.retention.request()?;
            let action = ScheduleAction::start_workflow(
                Retention::run,
                request,
                config.task_queue.clone(),
                "retention",
            );
            create(config, &client, &args.schedule_id, action, &args.timing).await
        }
        ScheduleCommand::List { json } => list(&client, json).await,
        ScheduleCommand::Describe { schedule_id, json } => {
            describe(config, &client, &schedule_id, json).await
        }
        ScheduleCommand::Trigger { schedule_id } => {
            client
                .get_schedule_handle(&schedule_id)
                .trigger(
                    ScheduleOverlapPolicy::Unspecified,
                    TriggerScheduleOptions::default(),
                )
                .await
                .map_err(|e| schedule_error(e, &format!("triggering {schedule_id}")))?;
            println!(
                "schedule {schedule_id} triggered (skipped if its previous run is still going)"
            );
            Ok(ExitCode::SUCCESS)
        }
        ScheduleCommand::Pause { schedule_id, note } => {
            client
                .get_schedule_handle(&schedule_id)
                .pause(Some(note), PauseScheduleOptions::default())
                .await
                .map_err(|e| schedule_error(e, &format!("pausing {schedule_id}")))?;
            println!("schedule {schedule_id} paused");
            Ok(ExitCode::SUCCESS)
        }
        ScheduleCommand::Unpause { schedule_id, note } => {
            client
                .get_schedule_handle(&schedule_id)
                .unpause(Some(note), UnpauseScheduleOptions::default())
                .await
                .map_err(|e| schedule_error(e, &format!("unpausing {schedule_id}")))?;
            println!("schedule {schedule_id} unpaused");
            Ok(ExitCode::SUCCESS)
        }
        ScheduleCommand::Backfill {
            schedule_id,
            from,
            to,
        } => {
            let (from, to) = (parse_time(&from, "--from")?, parse_time(&to, "--to")?);
            if to <= from {
                bail!("--to must be after --from");
            }
            // Buffer-all: each backfilled tick runs after the previous one ends.
            let backfill = ScheduleBackfill::new(from, to)
                .overlap_policy(ScheduleOverlapPolicy::BufferAll)
                .build();
            client
                .get_schedule_handle(&schedule_id)
                .backfill([backfill], BackfillScheduleOptions::default())
                .await
                .map_err(|e| schedule_error(e, &format!("backfilling {schedule_id}")))?;
            println!(
                "schedule {schedule_id}: backfill of {} .. {} requested",
                time(from),
                time(to)
            );
            Ok(ExitCode::SUCCESS)
        }
        ScheduleCommand::Delete { schedule_id } => {
            client
                .get_schedule_handle(&schedule_id)
                .delete(DeleteScheduleOptions::default())
                .await
                .map_err(|e| schedule_error(e, &format!("deleting {schedule_id}")))?;
            println!("schedule {schedule_id} deleted (runs already started keep running)");
            Ok(ExitCode::SUCCESS)
        }
    }
}

async fn create(
    config: &Config,
    client: &Client,
    schedule_id: &str,
    action: ScheduleAction,
    timing: &TimingArgs,
) -> anyhow::Result<ExitCode> {
    let spec = ScheduleSpec::builder()
        .cron_strings(vec![timing.cron.clone()])
        .timezone_name(timing.timezone.clone())
        .build();
    let (catchup, pause_on_failure) = (timing.catchup_window, timing.pause_on_failure);
    let options = CreateScheduleOptions::builder()
        .action(action.clone())
        .spec(spec.clone())
        // Skip a tick while the previous run of this schedule is still going: a slow day
        // never stacks up runs of the same source.
        .overlap_policy(ScheduleOverlapPolicy::Skip)
        .build();
    let handle = client.get_schedule_handle(schedule_id);
    let outcome = match client.create_schedule(schedule_id, options).await {
        Ok(_) => "created",
        Err(ScheduleError::Rpc(status)) if status.code() == Code::AlreadyExists => {
            if !timing.update {
                bail!(
                    "schedule {schedule_id} already exists; pass --update to replace its \
                     definition, or `etlctl schedule delete {schedule_id}` first"
                );
            }
            "updated"
        }
        Err(err) => return Err(schedule_error(err, &format!("creating {schedule_id}"))),
    };
    // The create call takes the overlap policy only; the rest of the policies (and, on
    // --update, the whole definition) go in one update.
    let replace = outcome == "updated";
    handle
        .update(
            move |update| {
                if replace {
                    update
                        .set_spec(spec)
                        .set_action(action)
                        .set_overlap_policy(ScheduleOverlapPolicy::Skip);
                }
                update
                    .set_catchup_window(catchup)
                    .set_pause_on_failure(pause_on_failure);
            },
            Default::default(),
        )
        .await
        .map_err(|e| schedule_error(e, &format!("setting the policies of {schedule_id}")))?;
    let web_ui = config.schedule_ui_link(schedule_id);
    if timing.json {
        println!(
            "{}",
            json!({"schedule_id": schedule_id, "outcome": outcome, "web_ui_url": web_ui})
        );
    } else {
        println!("schedule {schedule_id} {outcome}");
        if let Some(web_ui) = &web_ui {
            println!("web ui  {web_ui}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// One compiled calendar as cron-like text: `minute hour day-of-month month day-of-week`.
fn calendar_text(
    calendar: &temporalio_common::protos::temporal::api::schedule::v1::StructuredCalendarSpec,
) -> String {
    fn field(
        ranges: &[temporalio_common::protos::temporal::api::schedule::v1::Range],
        full: (i32, i32),
    ) -> String {
        if ranges.is_empty() {
            return "*".to_owned();
        }
        ranges
            .iter()
            .map(|r| {
                let end = r.end.max(r.start);
                let step = if r.step > 1 {
                    format!("/{}", r.step)
                } else {
                    String::new()
                };
                if (r.start, end) == full {
                    format!("*{step}")
                } else if end == r.start {
                    r.start.to_string()
                } else {
                    format!("{}-{end}{step}", r.start)
                }
            })
            .collect::<Vec<_>>()
            .join(",")
    }
    [
        field(&calendar.minute, (0, 59)),
        field(&calendar.hour, (0, 23)),
        field(&calendar.day_of_month, (1, 31)),
        field(&calendar.month, (1, 12)),
        field(&calendar.day_of_week, (0, 6)),
    ]
    .join(" ")
}

fn recent_json(actions: &[ScheduleRecentAction]) -> Vec<Value> {
    actions
        .iter()
        .map(|a| {
            json!({
                "scheduled_at": a.schedule_time.map(time),
                "started_at": a.actual_time.map(time),
                "workflow_id": a.workflow_id,
                "run_id": a.run_id,
            })
        })
        .collect()
}

async fn list(client: &Client, json: bool) -> anyhow::Result<ExitCode> {
    let schedules: Vec<_> = client
        .list_schedules(ListSchedulesOptions::default())
        .try_collect()
        .await
        .map_err(|e| schedule_error(e, "listing schedules"))?;
    let entries: Vec<Value> = schedules
        .iter()
        .map(|s| {
            json!({
                "schedule_id": s.schedule_id(),
                "workflow_type": s.workflow_type(),
                "paused": s.paused(),
                "note": s.note(),
                "next_run_times": s.future_action_times().into_iter().map(time).collect::<Vec<_>>(),
                "recent_actions": recent_json(&s.recent_actions()),
            })
        })
        .collect();
    let mut out = std::io::stdout().lock();
    if json {
        writeln!(out, "{}", serde_json::to_string(&entries)?)?;
        return Ok(ExitCode::SUCCESS);
    }
    writeln!(
        out,
        "{:<32} {:<14} {:<7} next run",
        "schedule", "workflow", "paused"
    )?;
    for s in &schedules {
        writeln!(
            out,
            "{:<32} {:<14} {:<7} {}",
            s.schedule_id(),
            s.workflow_type().unwrap_or("-"),
            if s.paused() { "yes" } else { "no" },
            s.future_action_times()
                .first()
                .map_or("-".to_owned(), |t| time(*t))
        )?;
    }
    Ok(ExitCode::SUCCESS)
}

async fn describe(
    config: &Config,
    client: &Client,
    schedule_id: &str,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let description = client
        .get_schedule_handle(schedule_id)
        .describe(Default::default())
        .await
        .map_err(|e| schedule_error(e, &format!("describing {schedule_id}")))?;
    let schedule = description.raw().schedule.clone().unwrap_or_default();
    let policies = schedule.policies.unwrap_or_default();
    let spec = schedule.spec.unwrap_or_default();
    let ScheduleDescriptionAction::StartWorkflow(action) = description.action() else {
        bail!("schedule {schedule_id} does not start a workflow: not one of etlctl's");
    };
    let input: Option<Value> = action.args::<Value>().await.unwrap_or(None);
    let overlap = match policies.overlap_policy {
        0 | 1 => "skip: a tick is skipped while the previous run of this schedule is still running",
        2 => "buffer one",
        3 => "buffer all",
        4 => "cancel other",
        5 => "terminate other",
        _ => "allow all",
    };
    let value = json!({
        "schedule_id": schedule_id,
        "paused": description.paused(),
        "note": description.note(),
        "workflow_type": action.workflow_type(),
        "workflow_id": action.workflow_id(),
        "task_queue": action.task_queue(),
        "input": input,
        // The server keeps a cron expression in its compiled form: rendered back here.
        "calendar": spec.structured_calendar.iter().map(calendar_text).collect::<Vec<_>>(),
        "timezone": spec.timezone_name,
        "overlap_policy": overlap,
        "catchup_window_secs": policies.catchup_window.map(|d| d.seconds),
        "pause_on_failure": policies.pause_on_failure,
        "actions_taken": description.action_count(),
        "overlap_skipped": description.overlap_skipped(),
        "missed_catchup_window": description.missed_catchup_window(),
        "running": description.running_actions().iter().map(|a| json!({"workflow_id": a.workflow_id, "run_id": a.run_id})).collect::<Vec<_>>(),
        "recent_actions": recent_json(&description.recent_actions()),
        "next_run_times": description.future_action_times().into_iter().map(time).collect::<Vec<_>>(),
        "web_ui_url": config.schedule_ui_link(schedule_id),
    });
    let mut out = std::io::stdout().lock();
    if json {
        writeln!(out, "{}", serde_json::to_string(&value)?)?;
        return Ok(ExitCode::SUCCESS);
    }
    for (key, v) in value.as_object().into_iter().flatten() {
        let text = match v {
            Value::String(s) => s.clone(),
            Value::Null => "-".to_owned(),
            other => other.to_string(),
        };
        writeln!(out, "{key:<22} {text}")?;
    }
    Ok(ExitCode::SUCCESS)
}
