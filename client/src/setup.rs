//! `etlctl setup` (the Temporal namespace: search attributes, the watchdog's schedule) and
//! `etlctl migrate` (Postgres and ClickHouse schemas).

use std::{process::ExitCode, time::Duration};

use activities::{config::Config, pg::PgStore, temporal::Patience, watchdog::WatchdogRequest};
use anyhow::Context;
use serde_json::json;
use temporalio_client::{
    Client,
    schedules::{
        CreateScheduleOptions, ScheduleAction, ScheduleError, ScheduleOverlapPolicy, ScheduleSpec,
    },
    tonic::Code,
};
use workflows::JobWatchdog;

use crate::watchdog;

pub async fn setup(
    config: &Config,
    json: bool,
    watchdog_every: Duration,
) -> anyhow::Result<ExitCode> {
    let client = activities::temporal::connect(config, "etlctl", Patience::Command).await?;
    let namespace = config.temporal.namespace();
    let registered = activities::temporal::register_search_attributes(&client, namespace).await?;
    let watchdog = schedule_watchdog(config, &client, watchdog_every).await?;
    let present: Vec<&str> = activities::visibility::registrations()
        .iter()
        .map(|(name, _)| *name)
        .filter(|name| !registered.contains(name))
        .collect();
    if json {
        println!(
            "{}",
            json!({
                "namespace": namespace,
                "registered": registered,
                "present": present,
                "watchdog": watchdog::schedule_json(watchdog, watchdog_every),
            })
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
    if !json {
        println!(
            "watchdog schedule {} {watchdog}: every {} s on task queue {}",
            watchdog::SCHEDULE_ID,
            watchdog_every.as_secs(),
            config.task_queue
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Creates the watchdog's schedule, or brings it to `every` and this task queue; a run that is
/// still going when the next is due makes the next one skip.
async fn schedule_watchdog(
    config: &Config,
    client: &Client,
    every: Duration,
) -> anyhow::Result<&'static str> {
    let action = ScheduleAction::start_workflow(
        JobWatchdog::run,
        WatchdogRequest::default(),
        config.task_queue.clone(),
        "watchdog",
    );
    let spec = ScheduleSpec::from_interval(every);
    let options = CreateScheduleOptions::builder()
        .action(action.clone())
        .spec(spec.clone())
        .overlap_policy(ScheduleOverlapPolicy::Skip)
        .build();
    match client.create_schedule(watchdog::SCHEDULE_ID, options).await {
        Ok(_) => Ok("created"),
        Err(ScheduleError::Rpc(status)) if status.code() == Code::AlreadyExists => {
            client
                .get_schedule_handle(watchdog::SCHEDULE_ID)
                .update(
                    move |update| {
                        update
                            .set_spec(spec)
                            .set_action(action)
                            .set_overlap_policy(ScheduleOverlapPolicy::Skip);
                    },
                    Default::default(),
                )
                .await
                .with_context(|| format!("updating the schedule {}", watchdog::SCHEDULE_ID))?;
            Ok("updated")
        }
        Err(err) => Err(anyhow::Error::from(err)
            .context(format!("creating the schedule {}", watchdog::SCHEDULE_ID))),
    }
}

pub async fn migrate(config: &Config) -> anyhow::Result<ExitCode> {
    let pg = PgStore::connect(config)
        .await
        .context("Postgres (DATABASE_URL)")?;
    pg.migrate().await.context("Postgres migrations")?;
    let ch = activities::ch::ChStore::new(config).context("ClickHouse (CLICKHOUSE_URL)")?;
    ch.check_version()
        .await
        .context("ClickHouse (CLICKHOUSE_URL)")?;
    ch.migrate().await.context("ClickHouse migrations")?;
    println!("migrations applied (Postgres and ClickHouse)");
    Ok(ExitCode::SUCCESS)
}
