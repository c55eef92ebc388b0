//! `etl-worker`: hosts the workflows and their activities on one task queue.

use std::{collections::HashMap, net::SocketAddr, process::ExitCode, sync::Arc, time::Duration};

use activities::{
    EtlActivities,
    config::{Config, Needs},
    metrics::{Metrics, PHASE_BUCKETS, PHASE_HISTOGRAM},
    temporal::Patience,
};
use anyhow::Context;
use temporalio_common::telemetry::{
    HistogramBucketOverrides, PrometheusExporterOptions, TelemetryOptions, metrics::CoreMeter,
    start_prometheus_metric_exporter,
};
use temporalio_sdk::{
    Runtime, Worker, WorkerOptions,
    runtime::{
        RuntimeOptions,
        worker_tuner::{FixedSizeSlotSupplier, TunerHolder},
    },
};
use workflows::{CatalogIngest, JobWatchdog, Reconcile, Retention, SourceIngest};

/// A chunk parses into about 160,000 small allocations that are all freed together when it is
/// done; glibc's allocator spent 7-10% of the worker's CPU in `malloc`, `free` and
/// `malloc_consolidate`. With jemalloc, paired runs measured the worker's CPU 10% lower and
/// its peak RSS 5-8 MiB higher (mimalloc, tried before, raised it by 100 MiB).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

mod logging;

/// The SDK's metrics and the project's on one Prometheus endpoint. Counters keep the names
/// they are given (the project's end in `_total`), durations are in seconds.
fn serve_metrics(addr: SocketAddr) -> anyhow::Result<Arc<dyn CoreMeter>> {
    let buckets = HistogramBucketOverrides {
        overrides: HashMap::from([(PHASE_HISTOGRAM.to_owned(), PHASE_BUCKETS.to_vec())]),
    };
    let options = PrometheusExporterOptions::builder()
        .socket_addr(addr)
        .counters_total_suffix(false)
        .use_seconds_for_durations(true)
        .histogram_bucket_overrides(buckets)
        .build();
    let server = start_prometheus_metric_exporter(options)
        .with_context(|| format!("ETL_METRICS_ADDR: cannot serve metrics on {addr}"))?;
    tracing::info!(
        metrics = %format!("http://{}/metrics", server.bound_addr),
        "serving Prometheus metrics"
    );
    Ok(server.meter)
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
    logging::init(config.log_format);
    activities::pause::arm(config.pause_at, config.pause_gate.clone()).context("ETL_PAUSE_AT")?;
    let meter = config.metrics_addr.map(serve_metrics).transpose()?;
    let activities = EtlActivities::connect(&config)
        .await?
        .with_metrics(Metrics::new(meter.clone()));
    for bucket in &config.check_buckets {
        activities
            .s3
            .check_bucket(bucket)
            .await
            .with_context(|| format!("S3 (S3_ENDPOINT, ETL_CHECK_BUCKETS={bucket})"))?;
    }

    let client = activities::temporal::connect(&config, "etl-worker", Patience::Worker).await?;
    activities::temporal::check_search_attributes(&client, config.temporal.namespace())
        .await
        .context("Temporal search attributes")?;
    let activities = activities.with_temporal(client.clone());

    let telemetry = TelemetryOptions::builder().maybe_metrics(meter).build();
    let runtime = Runtime::from_current_tokio(
        RuntimeOptions::builder()
            .telemetry_options(telemetry)
            .build()
            .map_err(anyhow::Error::msg)?,
    )?;
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
        .register_workflow::<JobWatchdog>()?
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
