//! `make bench-fleet`: a morning's fleet against one big job, on the same stack and workers.
//!
//! - one job: one source's 200,000-row catalog (`--rows`), `etlctl ingest --wait`;
//! - fleet: 12 sources dropping their files at once: 10 catalogs of `--rows / 10` rows and 2
//!   hostile ones of the same size (a fifth of their rows invalid, many duplicate skus, CRLF
//!   inside quoted fields, a byte-order mark), all started together.
//!
//! Both run on two workers. The figure is the fleet's rows per second over the one job's
//! (target ≥ 0.85); every job must be exact: its counts equal the generator's and its
//! reconciliation is ok. CPU seconds per service for each, from `/proc`.

use std::{
    collections::BTreeMap,
    path::Path,
    process::Command,
    time::{Duration, Instant},
};

use activities::{config::Config, s3::ObjectStore};
use anyhow::{Context, ensure};
use generator::{GeneratedStats, GeneratorConfig, write_catalog};
use serde::Serialize;
use serde_json::Value;

use crate::{
    Args, BENCH_DATABASE, Table, cpu_by_service, cpu_spent, execution_flags, fresh_clickhouse,
    fresh_postgres, idle_cpu_per_second, peak_rss_kib,
    runs::{Bound, Spread, TargetCheck, cpu_spreads, services},
    start_worker,
};

const FLEET_SOURCES: u64 = 12;
const HOSTILE_SOURCES: u64 = 2;
const WORKERS: usize = 2;
/// Issue 18's target: the fleet's rows per second over the one job's, at least.
const TARGET_RATIO: f64 = 0.85;

#[derive(Serialize)]
struct Run {
    name: &'static str,
    jobs: usize,
    rows: u64,
    seconds: f64,
    rows_per_sec: f64,
    cpu_seconds: BTreeMap<String, f64>,
    cpu_ms_per_1k_rows: f64,
    /// Less what the services spend idle over the same wall time.
    cpu_ms_per_1k_rows_above_idle: f64,
}

#[derive(Serialize)]
struct FleetRun {
    one_job: Run,
    fleet: Run,
    /// Fleet rows/s over one job's rows/s.
    ratio: f64,
    /// The larger of the two workers' peak resident memory over both runs (the fleet keeps
    /// every activity slot of both busy: the most chunks in flight per worker).
    workers_peak_rss_mib: f64,
}

#[derive(Serialize)]
struct FleetReport<'a> {
    /// The last run's figures.
    #[serde(flatten)]
    last: &'a FleetRun,
    /// Every run, in the order they ran.
    runs: &'a [FleetRun],
    summary: FleetSummary,
}

/// The runs' min / median / max, and the target judged on the median ratio.
#[derive(Serialize)]
struct FleetSummary {
    runs: usize,
    ratio: Spread,
    one_job_seconds: Spread,
    fleet_seconds: Spread,
    one_job_cpu_ms_per_1k_rows: Spread,
    fleet_cpu_ms_per_1k_rows: Spread,
    one_job_cpu_seconds: BTreeMap<String, Spread>,
    fleet_cpu_seconds: BTreeMap<String, Spread>,
    workers_peak_rss_mib: Spread,
    target: TargetCheck,
}

impl FleetSummary {
    fn of(runs: &[FleetRun]) -> Option<Self> {
        let spread = |figure: fn(&FleetRun) -> f64| Spread::of(runs.iter().map(figure));
        let ratio = spread(|r| r.ratio)?;
        Some(Self {
            runs: runs.len(),
            ratio,
            one_job_seconds: spread(|r| r.one_job.seconds)?,
            fleet_seconds: spread(|r| r.fleet.seconds)?,
            one_job_cpu_ms_per_1k_rows: spread(|r| r.one_job.cpu_ms_per_1k_rows)?,
            fleet_cpu_ms_per_1k_rows: spread(|r| r.fleet.cpu_ms_per_1k_rows)?,
            one_job_cpu_seconds: cpu_spreads(runs.iter().map(|r| &r.one_job.cpu_seconds)),
            fleet_cpu_seconds: cpu_spreads(runs.iter().map(|r| &r.fleet.cpu_seconds)),
            workers_peak_rss_mib: spread(|r| r.workers_peak_rss_mib)?,
            target: TargetCheck::judge(
                "fleet / one job, rows per second",
                Bound::AtLeast,
                TARGET_RATIO,
                ratio,
            ),
        })
    }
}

struct Object {
    source: String,
    uri: String,
    stats: GeneratedStats,
}

pub async fn run(args: &Args, base: &Config) -> anyhow::Result<()> {
    let work_dir = args.out.parent().unwrap_or(Path::new(".")).to_path_buf();
    std::fs::create_dir_all(&work_dir)?;
    let s3 = ObjectStore::new(base)?;
    s3.ensure_bucket("catalog").await?;
    let stamp = std::process::id();
    let upload = |source: String, config: GeneratorConfig| {
        let s3 = &s3;
        let work_dir = &work_dir;
        async move {
            let file = work_dir.join(format!("fleet-{source}.csv"));
            let stats = write_catalog(
                &config,
                std::io::BufWriter::new(std::fs::File::create(&file)?),
            )?;
            let key = format!("bench-fleet/{stamp}/{source}.csv");
            s3.put_path("catalog", &key, &file).await?;
            std::fs::remove_file(&file).ok();
            anyhow::Ok(Object {
                uri: format!("s3://catalog/{key}"),
                source,
                stats,
            })
        }
    };
    eprintln!(
        "fleet: generating one {}-row catalog and {FLEET_SOURCES} smaller ones",
        args.rows
    );
    let big = upload(
        "fleet-one-job".to_owned(),
        GeneratorConfig {
            rows: args.rows,
            seed: args.seed,
            ..GeneratorConfig::default()
        },
    )
    .await?;
    let mut fleet = Vec::new();
    for n in 0..FLEET_SOURCES {
        let hostile = n >= FLEET_SOURCES - HOSTILE_SOURCES;
        let config = GeneratorConfig {
            rows: args.rows / 10,
            seed: args.seed + 1 + n,
            invalid_per_mille: if hostile { 200 } else { 20 },
            duplicate_per_mille: if hostile { 100 } else { 0 },
            crlf: hostile,
            bom: hostile,
            ..GeneratorConfig::default()
        };
        let kind = if hostile { "hostile" } else { "source" };
        fleet.push(upload(format!("fleet-{kind}-{n:02}"), config).await?);
    }

    let mut runs = Vec::new();
    for run in 1..=args.runs {
        if args.runs > 1 {
            eprintln!("fleet: run {run} of {}", args.runs);
        }
        let run = measure(args, base, &work_dir, stamp, &big, &fleet).await?;
        print_fleet(&run);
        runs.push(run);
    }
    let summary = FleetSummary::of(&runs).context("no run")?;
    print_summary(&summary);
    let report = FleetReport {
        last: runs.last().context("no run")?,
        runs: &runs,
        summary,
    };
    let out = work_dir.join("fleet.json");
    std::fs::write(&out, serde_json::to_vec_pretty(&report)?)?;
    eprintln!("written to {}", out.display());
    Ok(())
}

/// One run: fresh databases, two workers, the one job, then the fleet.
async fn measure(
    args: &Args,
    base: &Config,
    work_dir: &Path,
    stamp: u32,
    big: &Object,
    fleet: &[Object],
) -> anyhow::Result<FleetRun> {
    let database_url = fresh_postgres(base).await?;
    fresh_clickhouse(base).await?;
    let env = vec![
        ("DATABASE_URL".to_owned(), database_url),
        ("CLICKHOUSE_DATABASE".to_owned(), BENCH_DATABASE.to_owned()),
        ("ETL_TASK_QUEUE".to_owned(), format!("bench-fleet-{stamp}")),
        ("ETL_METRICS_ADDR".to_owned(), String::new()),
    ];
    let mut workers = Vec::new();
    for n in 0..WORKERS {
        let log_dir = work_dir.join(format!("fleet-worker-{n}"));
        std::fs::create_dir_all(&log_dir)?;
        workers.push(start_worker(&args.bin_dir, &env, &log_dir)?);
    }
    let one_job = ingest_all(args, &env, "one job", std::slice::from_ref(big))?;
    let fleet = ingest_all(args, &env, "fleet", fleet)?;
    let mut workers_peak_rss_kib = 0;
    for mut worker in workers {
        workers_peak_rss_kib = workers_peak_rss_kib.max(peak_rss_kib(worker.id())?);
        worker.kill().ok();
        worker.wait().ok();
    }
    Ok(FleetRun {
        ratio: fleet.rows_per_sec / one_job.rows_per_sec,
        one_job,
        fleet,
        workers_peak_rss_mib: workers_peak_rss_kib as f64 / 1024.0,
    })
}

/// Starts an `etlctl ingest --wait` of every object at once and waits for all; checks each.
fn ingest_all(
    args: &Args,
    env: &[(String, String)],
    name: &'static str,
    objects: &[Object],
) -> anyhow::Result<Run> {
    eprintln!("fleet: {name}: {} job(s) at once", objects.len());
    let idle = idle_cpu_per_second();
    let cpu_before = cpu_by_service();
    let started = Instant::now();
    let children = objects
        .iter()
        .map(|object| {
            Command::new(args.bin_dir.join("etlctl"))
                .args([
                    "ingest",
                    &object.uri,
                    "--source",
                    &object.source,
                    "--wait",
                    "--json",
                ])
                .args(execution_flags(args))
                .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .context("running etlctl")
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let outputs = children
        .into_iter()
        .map(|child| child.wait_with_output().context("etlctl"))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let elapsed = started.elapsed();
    let cpu_after = cpu_by_service();
    for (object, output) in objects.iter().zip(&outputs) {
        let summary: Value = serde_json::from_slice(&output.stdout).with_context(|| {
            format!(
                "{}: etlctl printed no JSON: {}",
                object.source,
                String::from_utf8_lossy(&output.stderr)
            )
        })?;
        let stats = &object.stats;
        ensure!(
            summary["status"] == "completed"
                && summary["rows_total"] == stats.rows_total
                && summary["rows_valid"] == stats.rows_valid
                && summary["rows_invalid"] == stats.rows_invalid
                && summary["items"] == stats.distinct_valid_skus
                && summary["reconciliation"]["ok"] == true,
            "{}: not exact: {summary}",
            object.source
        );
    }
    let rows: u64 = objects.iter().map(|o| o.stats.rows_total).sum();
    Ok(run_figures(
        name,
        objects.len(),
        rows,
        elapsed,
        &idle,
        (&cpu_before, &cpu_after),
    ))
}

fn run_figures(
    name: &'static str,
    jobs: usize,
    rows: u64,
    elapsed: Duration,
    idle: &BTreeMap<String, f64>,
    (cpu_before, cpu_after): (&BTreeMap<String, f64>, &BTreeMap<String, f64>),
) -> Run {
    let cpu_seconds = cpu_spent(cpu_before, cpu_after);
    let cpu_total: f64 = cpu_seconds.values().sum();
    let idle_total: f64 = idle.values().sum::<f64>() * elapsed.as_secs_f64();
    Run {
        name,
        jobs,
        rows,
        seconds: elapsed.as_secs_f64(),
        rows_per_sec: rows as f64 / elapsed.as_secs_f64(),
        cpu_ms_per_1k_rows: cpu_total * 1e6 / rows as f64,
        cpu_ms_per_1k_rows_above_idle: (cpu_total - idle_total).max(0.0) * 1e6 / rows as f64,
        cpu_seconds,
    }
}

fn print_summary(summary: &FleetSummary) {
    println!("\nover {} run(s), min / median / max:", summary.runs);
    let line = |label: &str, one_job: String, fleet: String| {
        println!("{label:<34} {one_job:>24} {fleet:>24}");
    };
    line("", "one job".to_owned(), "fleet".to_owned());
    line(
        "wall, s",
        summary.one_job_seconds.show(2),
        summary.fleet_seconds.show(2),
    );
    let show = |spreads: &BTreeMap<String, Spread>, service: &String| {
        spreads
            .get(service)
            .map_or_else(String::new, |spread| spread.show(2))
    };
    for service in services([&summary.one_job_cpu_seconds, &summary.fleet_cpu_seconds]) {
        line(
            &format!("CPU s: {service}"),
            show(&summary.one_job_cpu_seconds, service),
            show(&summary.fleet_cpu_seconds, service),
        );
    }
    line(
        "CPU ms per 1k rows (all)",
        summary.one_job_cpu_ms_per_1k_rows.show(1),
        summary.fleet_cpu_ms_per_1k_rows.show(1),
    );
    println!("RATIO fleet / one job (rows/s): {}", summary.ratio.show(2));
    println!("TARGET fleet: {}", summary.target);
}

fn print_fleet(report: &FleetRun) {
    let columns = [&report.one_job, &report.fleet];
    let table = Table {
        columns: &columns,
        width: 18,
    };
    println!();
    table.row("", |r| r.name.to_owned());
    table.row("jobs", |r| r.jobs.to_string());
    table.row("rows", |r| r.rows.to_string());
    table.row("wall", |r| format!("{:.2} s", r.seconds));
    table.row("rows/s", |r| format!("{:.0}", r.rows_per_sec));
    for service in services(columns.iter().map(|r| &r.cpu_seconds)) {
        table.row(&format!("CPU s: {service}"), |r| {
            format!("{:.2}", r.cpu_seconds.get(service).copied().unwrap_or(0.0))
        });
    }
    table.row("CPU ms per 1k rows (all)", |r| {
        format!("{:.1}", r.cpu_ms_per_1k_rows)
    });
    table.row("CPU ms per 1k rows above idle", |r| {
        format!("{:.1}", r.cpu_ms_per_1k_rows_above_idle)
    });
    println!("RATIO fleet / one job (rows/s): {:.2}", report.ratio);
    println!(
        "workers' peak RSS (the larger of two): {:.1} MiB",
        report.workers_peak_rss_mib
    );
}
