//! `etl-worker`: hosts the workflows and their activities on one task queue.

use std::{process::ExitCode, time::Duration};

use activities::{
    EtlActivities,
    config::{Config, LogFormat, Needs},
    temporal::Patience,
};
use anyhow::Context;
use temporalio_sdk::{
    Runtime, Worker, WorkerOptions,
    runtime::worker_tuner::{FixedSizeSlotSupplier, TunerHolder},
};
use workflows::{CatalogIngest, Reconcile, Retention, SourceIngest};

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| "info,temporalio_sdk_core=warn".into());
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => logs.init(),
        LogFormat::Json => logs
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .init(),
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    activities::tls::install_crypto_provider();
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!(
                "etl-worker: {}",
                activities::error::error_chain(err.as_ref())
            );
            ExitCode::FAILURE
        }
    }
}

async fn run() -> anyhow::Result<()> {
    let config = Config::from_env(Needs::ALL).context("configuration")?;
    init_logging(config.log_format);
    activities::pause::arm(config.pause_at).context("ETL_PAUSE_AT")?;
    let activities = EtlActivities::connect(&config).await?;
    for bucket in &config.check_buckets {
        activities
            .s3
            .check_bucket(bucket)
            .await
            .with_context(|| format!("S3 (S3_ENDPOINT, ETL_CHECK_BUCKETS={bucket})"))?;
    }

    let client = activities::temporal::connect(&config, "etl-worker", Patience::Worker).await?;

    let runtime = Runtime::from_current_tokio(Default::default())?;
    let tuner = TunerHolder::builder()
        .workflow_task_slot_supplier(FixedSizeSlotSupplier::new(10))
        .activity_task_slot_supplier(FixedSizeSlotSupplier::new(config.max_concurrent_activities))
        .local_activity_task_slot_supplier(FixedSizeSlotSupplier::new(1))
        .nexus_task_slot_supplier(FixedSizeSlotSupplier::new(1))
        .build();
    let options = WorkerOptions::new(config.task_queue.clone())
        .register_activities(activities)
        .register_workflow::<CatalogIngest>()?
        .register_workflow::<SourceIngest>()?
        .register_workflow::<Retention>()?
        .register_workflow::<Reconcile>()?
        .tuner(tuner)
        .graceful_shutdown_period(Duration::from_secs(10))
        .build();
    let mut worker = Worker::new(&runtime, client, options)?;
    let shutdown = worker.shutdown_handle();
    tokio::spawn(async move {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        tracing::info!("shutting down: finishing running activities");
        shutdown();
    });
    tracing::info!(
        task_queue = %config.task_queue,
        namespace = %config.temporal.namespace(),
        temporal = %config.temporal.address(),
        max_concurrent_activities = config.max_concurrent_activities,
        "etl-worker ready"
    );
    worker.run().await?;
    Ok(())
}
