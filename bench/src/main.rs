//! `etl-bench`: the pipeline's speed against the physical limit of this machine, side by side,
//! on the same generated files (`make bench`: three runs, summed up in [`runs`]). Two
//! scenarios:
//!
//! - first day: a source's catalog ingested into empty tables;
//! - next day: the next day's snapshot of the same catalog (about 3% of rows changed, 1%
//!   removed, 1% new), ingested after the first day's.
//!
//! limit    = `COPY ... FROM STDIN (FORMAT csv)` into an unlogged, unindexed Postgres table,
//!            together with one `INSERT ... FORMAT CSVWithNames` into a plain MergeTree table
//!            (both loads run at once, as the pipeline writes both stores at once), of the very
//!            file the pipeline ingests in that scenario
//! pipeline = `etlctl ingest --wait` of that file, with a real worker
//!
//! Each scenario also reports the CPU seconds every service spent during the pipeline (from
//! `/proc`), and Postgres' time per statement (from its log, with `log_min_duration_statement
//! = 0` on the bench database).

use std::{
    collections::BTreeMap,
    io::{Read, Seek, SeekFrom},
    path::{Path, PathBuf},
    process::{Child, Command, ExitCode, Stdio},
    time::{Duration, Instant},
};

use activities::{
    config::{Config, Needs},
    error::error_chain,
    s3::ObjectStore,
};
use anyhow::{Context, bail, ensure};
use clap::Parser;
use generator::{COLUMNS, GeneratedStats, GeneratorConfig, NEXT_DAY, write_catalog};
use serde::Serialize;
use serde_json::Value;
use sqlx::{Connection, PgConnection};
use tokio::io::AsyncReadExt;

mod fleet;
mod per_row;
mod runs;

use runs::{Bound, Spread, TargetCheck, cpu_spreads, services};

/// The worker's allocator, so that `--per-row` measures what the worker spends.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

const BENCH_DATABASE: &str = "catalog_etl_bench";

#[derive(Parser)]
#[command(
    name = "etl-bench",
    about = "Pipeline throughput against the load limit of this machine"
)]
struct Args {
    /// Data rows in the first day's catalog.
    #[arg(long, default_value_t = 200_000)]
    rows: u64,
    #[arg(long, default_value_t = 2026)]
    seed: u64,
    /// Passed to `etlctl ingest` (default: etlctl's own default).
    #[arg(long)]
    chunk_bytes: Option<u64>,
    /// Passed to `etlctl ingest` (default: etlctl's own default).
    #[arg(long)]
    parallel: Option<u32>,
    /// Only the first day (no next-day scenario).
    #[arg(long)]
    first_day_only: bool,
    /// `make bench-fleet`: 12 sources at once on two workers against one big job (`fleet.rs`).
    #[arg(long)]
    fleet: bool,
    /// `make bench-rows`: the worker's per-row stages alone (plan scan, parse and validate,
    /// hashes, digests) on the first day's file, in CPU ns per row; needs no service
    /// (`per_row.rs`).
    #[arg(long, conflicts_with = "fleet")]
    per_row: bool,
    /// Runs of the whole benchmark, each on fresh databases; the summary gives min / median /
    /// max over them and judges the targets on the median.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    runs: u32,
    /// Where the figures go as JSON.
    #[arg(long, default_value = "target/bench/latest.json")]
    out: PathBuf,
    /// Directory holding `etl-worker` and `etlctl`.
    #[arg(long, default_value = "target/release")]
    bin_dir: PathBuf,
    /// The Postgres server log that `log_min_duration_statement` writes to.
    #[arg(long, default_value = "/var/log/postgresql/postgresql-15-main.log")]
    postgres_log: PathBuf,
}

#[derive(Serialize)]
struct Throughput {
    seconds: f64,
    rows_per_sec: f64,
    mb_per_sec: f64,
}

impl Throughput {
    fn new(elapsed: Duration, rows: u64, bytes: u64) -> Self {
        let seconds = elapsed.as_secs_f64();
        Self {
            seconds,
            rows_per_sec: rows as f64 / seconds,
            mb_per_sec: bytes as f64 / 1e6 / seconds,
        }
    }
}

#[derive(Serialize)]
struct Statement {
    statement: String,
    calls: u64,
    seconds: f64,
}

#[derive(Serialize)]
struct Scenario {
    name: &'static str,
    #[serde(skip)]
    targets: Targets,
    rows: u64,
    bytes: u64,
    rows_valid: u64,
    rows_invalid: u64,
    items: u64,
    items_delisted: u64,
    chunks: u64,
    limit: Throughput,
    limit_postgres_copy: Throughput,
    limit_clickhouse_insert: Throughput,
    pipeline: Throughput,
    /// pipeline rows/s divided by limit rows/s.
    ratio: f64,
    worker_peak_rss_mib: f64,
    /// Plan activity (HEAD + full scan + storing the plan).
    plan_seconds: f64,
    /// Sum over chunks of the time inside the chunk activity (first start to ClickHouse done).
    chunk_activity_seconds: f64,
    /// Job wall time minus plan and chunk phases: aggregate, reconcile, delisting, catalog
    /// comparison, finalize, start-up.
    tail_seconds: f64,
    /// CPU seconds per service during the pipeline.
    cpu_seconds: BTreeMap<String, f64>,
    /// All services' CPU during the pipeline, in milliseconds per 1,000 rows.
    cpu_ms_per_1k_rows: f64,
    /// What the services spend idle (measured just before), per second: Temporal's dev server
    /// and ClickHouse keep a core busy some of the time with no job at all.
    idle_cpu_per_second: BTreeMap<String, f64>,
    /// `cpu_ms_per_1k_rows` less the idle spending over the pipeline's wall time: what the
    /// job itself cost.
    cpu_ms_per_1k_rows_above_idle: f64,
    /// Postgres time per statement during the pipeline (summed over sessions), largest first.
    postgres_statements: Vec<Statement>,
    /// ClickHouse CPU per query and per kind of part (inserted, merged) during the pipeline,
    /// from the server's `system.query_log` and `system.part_log`; empty where they are off.
    clickhouse_cpu: Vec<Statement>,
}

#[derive(Serialize)]
struct Report<'a> {
    chunk_bytes: Option<u64>,
    parallel: Option<u32>,
    /// The last run's scenarios.
    scenarios: &'a [Scenario],
    /// Every run's scenarios, in the order they ran.
    runs: &'a [Vec<Scenario>],
    /// Each scenario over the runs.
    summary: Vec<ScenarioSummary>,
}

/// One scenario over the runs: min / median / max, and issue 18's targets for it.
#[derive(Serialize)]
struct ScenarioSummary {
    name: &'static str,
    runs: usize,
    cpu_ms_per_1k_rows: Spread,
    ratio: Spread,
    pipeline_seconds: Spread,
    limit_seconds: Spread,
    worker_peak_rss_mib: Spread,
    cpu_seconds: BTreeMap<String, Spread>,
    targets: Vec<TargetCheck>,
}

/// Issue 18's targets for a scenario.
#[derive(Clone, Copy)]
struct Targets {
    /// All services' CPU-ms per 1,000 rows, at most.
    cpu_ms_per_1k_rows: f64,
    /// The pipeline's rows per second over the limit's, at least.
    ratio: f64,
}

fn summarize(runs: &[Vec<Scenario>]) -> Vec<ScenarioSummary> {
    let Some(first) = runs.first() else {
        return Vec::new();
    };
    first
        .iter()
        .enumerate()
        .filter_map(|(index, scenario)| {
            let same: Vec<&Scenario> = runs.iter().filter_map(|run| run.get(index)).collect();
            let spread = |figure: fn(&Scenario) -> f64| Spread::of(same.iter().map(|s| figure(s)));
            let cpu_ms_per_1k_rows = spread(|s| s.cpu_ms_per_1k_rows)?;
            let ratio = spread(|s| s.ratio)?;
            Some(ScenarioSummary {
                name: scenario.name,
                runs: same.len(),
                cpu_ms_per_1k_rows,
                ratio,
                pipeline_seconds: spread(|s| s.pipeline.seconds)?,
                limit_seconds: spread(|s| s.limit.seconds)?,
                worker_peak_rss_mib: spread(|s| s.worker_peak_rss_mib)?,
                cpu_seconds: cpu_spreads(same.iter().map(|s| &s.cpu_seconds)),
                targets: vec![
                    TargetCheck::judge(
                        "CPU-ms per 1,000 rows, all services",
                        Bound::AtMost,
                        scenario.targets.cpu_ms_per_1k_rows,
                        cpu_ms_per_1k_rows,
                    ),
                    TargetCheck::judge(
                        "pipeline / limit",
                        Bound::AtLeast,
                        scenario.targets.ratio,
                        ratio,
                    ),
                ],
            })
        })
        .collect()
}

#[tokio::main]
async fn main() -> ExitCode {
    match run(Args::parse()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("etl-bench: {}", error_chain(err.as_ref()));
            ExitCode::FAILURE
        }
    }
}

/// What one scenario ingests.
struct Day {
    name: &'static str,
    targets: Targets,
    file: PathBuf,
    key: String,
    stats: GeneratedStats,
}

async fn run(args: Args) -> anyhow::Result<()> {
    if args.per_row {
        return per_row::run(&args);
    }
    activities::tls::install_crypto_provider();
    let base = Config::from_env(Needs::ALL)?;
    if args.fleet {
        return fleet::run(&args, &base).await;
    }
    let work_dir = args.out.parent().unwrap_or(Path::new(".")).to_path_buf();
    std::fs::create_dir_all(&work_dir)?;
    let s3 = ObjectStore::new(&base)?;
    s3.ensure_bucket("catalog").await?;

    let mut days = Vec::new();
    let days_and_targets = [
        (
            "first day",
            None,
            Targets {
                cpu_ms_per_1k_rows: 25.0,
                ratio: 0.3,
            },
        ),
        (
            "next day",
            Some(NEXT_DAY),
            Targets {
                cpu_ms_per_1k_rows: 15.0,
                ratio: 0.5,
            },
        ),
    ];
    for (name, next_day, targets) in days_and_targets {
        if next_day.is_some() && args.first_day_only {
            break;
        }
        let tag = if next_day.is_some() { "day2" } else { "day1" };
        let file = work_dir.join(format!("catalog-{}-{}-{tag}.csv", args.rows, args.seed));
        eprintln!("generating the {name}'s catalog into {}", file.display());
        let config = GeneratorConfig {
            rows: args.rows,
            seed: args.seed,
            loadable_by_copy: true,
            next_day,
            ..GeneratorConfig::default()
        };
        let stats = write_catalog(
            &config,
            std::io::BufWriter::new(std::fs::File::create(&file)?),
        )?;
        let key = format!("bench/{}", file.file_name().unwrap().to_string_lossy());
        s3.put_path("catalog", &key, &file).await?;
        days.push(Day {
            name,
            targets,
            file,
            key,
            stats,
        });
    }

    let mut runs = Vec::new();
    for run in 1..=args.runs {
        if args.runs > 1 {
            eprintln!("run {run} of {}", args.runs);
        }
        let database_url = fresh_postgres(&base).await?;
        let ch = fresh_clickhouse(&base).await?;
        let env = vec![
            ("DATABASE_URL".to_owned(), database_url.clone()),
            ("CLICKHOUSE_DATABASE".to_owned(), BENCH_DATABASE.to_owned()),
            (
                "ETL_TASK_QUEUE".to_owned(),
                format!("bench-{}", std::process::id()),
            ),
            ("ETL_METRICS_ADDR".to_owned(), String::new()),
            ("RUST_LOG".to_owned(), "warn".to_owned()),
        ];
        let mut scenarios = Vec::new();
        for day in &days {
            scenarios.push(measure(&args, &database_url, &ch, &env, &work_dir, day).await?);
        }
        print_report(&scenarios);
        runs.push(scenarios);
    }
    let summary = summarize(&runs);
    print_summary(&summary);
    let report = Report {
        chunk_bytes: args.chunk_bytes,
        parallel: args.parallel,
        scenarios: runs.last().map(Vec::as_slice).unwrap_or_default(),
        runs: &runs,
        summary,
    };
    std::fs::write(&args.out, serde_json::to_vec_pretty(&report)?)?;
    eprintln!("written to {}", args.out.display());
    Ok(())
}

async fn measure(
    args: &Args,
    database_url: &str,
    ch: &clickhouse::Client,
    env: &[(String, String)],
    work_dir: &Path,
    day: &Day,
) -> anyhow::Result<Scenario> {
    let stats = &day.stats;
    eprintln!(
        "{}: the limit (COPY into Postgres and INSERT into ClickHouse at once)",
        day.name
    );
    truncate_limit_tables(database_url, ch).await?;
    let started = Instant::now();
    let (pg_elapsed, ch_elapsed) = tokio::try_join!(
        copy_into_postgres(database_url, &day.file),
        insert_into_clickhouse(ch, &day.file)
    )?;
    let limit_elapsed = started.elapsed();

    eprintln!("{}: the pipeline (etlctl ingest --wait)", day.name);
    let mut worker = start_worker(&args.bin_dir, env, work_dir)?;
    let mut ingest = vec![
        "ingest".to_owned(),
        format!("s3://catalog/{}", day.key),
        "--source".into(),
        "bench".into(),
        "--wait".into(),
        "--json".into(),
    ];
    ingest.extend(execution_flags(args));
    let log_start = std::fs::metadata(&args.postgres_log).map(|m| m.len()).ok();
    let idle = idle_cpu_per_second();
    let clickhouse_since = clickhouse_clock(ch).await?;
    let cpu_before = cpu_by_service();
    let started = Instant::now();
    let output = Command::new(args.bin_dir.join("etlctl"))
        .args(&ingest)
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .output()
        .context("running etlctl")?;
    let pipeline_elapsed = started.elapsed();
    let cpu_after = cpu_by_service();
    let peak_rss_kib = peak_rss_kib(worker.id())?;
    worker.kill().ok();
    worker.wait().ok();
    let summary: Value = serde_json::from_slice(&output.stdout).with_context(|| {
        format!(
            "etlctl printed no JSON: {}",
            String::from_utf8_lossy(&output.stderr)
        )
    })?;
    ensure!(
        summary["status"] == "completed",
        "the ingest did not complete: {summary}"
    );
    ensure!(
        summary["rows_total"] == stats.rows_total
            && summary["rows_valid"] == stats.rows_valid
            && summary["items"] == stats.distinct_valid_skus
            && summary["reconciliation"]["ok"] == true,
        "the ingest's counts differ from the generator's: {summary}"
    );
    let job_id = summary["job_id"].as_str().unwrap_or_default().to_owned();
    let timing = chunk_timing(database_url, &job_id).await?;
    let cpu_seconds = cpu_spent(&cpu_before, &cpu_after);
    let cpu_ms_per_1k_rows = cpu_seconds.values().sum::<f64>() * 1e6 / stats.rows_total as f64;
    let idle_seconds: f64 = idle.values().sum::<f64>() * pipeline_elapsed.as_secs_f64();
    let cpu_ms_per_1k_rows_above_idle =
        (cpu_seconds.values().sum::<f64>() - idle_seconds).max(0.0) * 1e6 / stats.rows_total as f64;
    let postgres_statements = match log_start {
        Some(start) => statement_times(&args.postgres_log, start)?,
        None => Vec::new(),
    };
    let clickhouse_cpu = clickhouse_cpu(ch, clickhouse_since).await?;
    let limit = Throughput::new(limit_elapsed, stats.rows_total, stats.bytes);
    let pipeline = Throughput::new(pipeline_elapsed, stats.rows_total, stats.bytes);
    Ok(Scenario {
        name: day.name,
        targets: day.targets,
        rows: stats.rows_total,
        bytes: stats.bytes,
        rows_valid: stats.rows_valid,
        rows_invalid: stats.rows_invalid,
        items: stats.distinct_valid_skus,
        items_delisted: summary["items_delisted"].as_u64().unwrap_or(0),
        chunks: timing.chunks,
        ratio: pipeline.rows_per_sec / limit.rows_per_sec,
        limit,
        limit_postgres_copy: Throughput::new(pg_elapsed, stats.rows_total, stats.bytes),
        limit_clickhouse_insert: Throughput::new(ch_elapsed, stats.rows_total, stats.bytes),
        pipeline,
        worker_peak_rss_mib: peak_rss_kib as f64 / 1024.0,
        plan_seconds: timing.plan_seconds,
        chunk_activity_seconds: timing.activity_seconds,
        tail_seconds: (pipeline_elapsed.as_secs_f64()
            - timing.plan_seconds
            - timing.chunk_phase_seconds)
            .max(0.0),
        cpu_seconds,
        cpu_ms_per_1k_rows,
        idle_cpu_per_second: idle,
        cpu_ms_per_1k_rows_above_idle,
        postgres_statements,
        clickhouse_cpu,
    })
}

fn database_url_for(base: &Config, database: &str) -> anyhow::Result<String> {
    let url = base.database_url.expose();
    let Some((prefix, _)) = url.rsplit_once('/') else {
        bail!("DATABASE_URL has no database name");
    };
    Ok(format!("{prefix}/{database}"))
}

async fn fresh_postgres(base: &Config) -> anyhow::Result<String> {
    let mut admin = PgConnection::connect(&database_url_for(base, "postgres")?).await?;
    // Identifiers cannot be bound as parameters; this one is a constant.
    sqlx::query(&format!(
        "DROP DATABASE IF EXISTS {BENCH_DATABASE} WITH (FORCE)"
    ))
    .execute(&mut admin)
    .await?;
    sqlx::query(&format!("CREATE DATABASE {BENCH_DATABASE}"))
        .execute(&mut admin)
        .await?;
    // Every statement's duration in the server log: Postgres' time per statement. Without
    // its parameters: turning a chunk's arrays into log text would cost more than the work.
    for setting in [
        "log_min_duration_statement = 0",
        "log_parameter_max_length = 0",
    ] {
        sqlx::query(&format!("ALTER DATABASE {BENCH_DATABASE} SET {setting}"))
            .execute(&mut admin)
            .await?;
    }
    let url = database_url_for(base, BENCH_DATABASE)?;
    let mut conn = PgConnection::connect(&url).await?;
    let columns: Vec<String> = COLUMNS.iter().map(|c| format!("{c} text")).collect();
    sqlx::query(&format!(
        "CREATE UNLOGGED TABLE limit_rows ({})",
        columns.join(", ")
    ))
    .execute(&mut conn)
    .await?;
    Ok(url)
}

async fn fresh_clickhouse(base: &Config) -> anyhow::Result<clickhouse::Client> {
    let admin = clickhouse::Client::default()
        .with_url(&base.clickhouse_url)
        .with_user(&base.clickhouse_user)
        .with_password(base.clickhouse_password.expose())
        .with_option("async_insert", "0");
    admin
        .query(&format!("DROP DATABASE IF EXISTS {BENCH_DATABASE}"))
        .execute()
        .await?;
    admin
        .query(&format!("CREATE DATABASE {BENCH_DATABASE}"))
        .execute()
        .await?;
    let client = admin.with_database(BENCH_DATABASE);
    let columns: Vec<String> = COLUMNS.iter().map(|c| format!("{c} String")).collect();
    client
        .query(&format!(
            "CREATE TABLE limit_rows ({}) ENGINE = MergeTree ORDER BY tuple()",
            columns.join(", ")
        ))
        .execute()
        .await?;
    Ok(client)
}

async fn truncate_limit_tables(url: &str, ch: &clickhouse::Client) -> anyhow::Result<()> {
    let mut conn = PgConnection::connect(url).await?;
    sqlx::query("TRUNCATE limit_rows")
        .execute(&mut conn)
        .await?;
    ch.query("TRUNCATE TABLE limit_rows").execute().await?;
    Ok(())
}

async fn copy_into_postgres(url: &str, file: &Path) -> anyhow::Result<Duration> {
    let mut conn = PgConnection::connect(url).await?;
    let mut reader = tokio::fs::File::open(file).await?;
    let started = Instant::now();
    let mut copy = conn
        .copy_in_raw("COPY limit_rows FROM STDIN (FORMAT csv, HEADER true)")
        .await?;
    let mut buffer = vec![0u8; 1 << 20];
    loop {
        let n = reader.read(&mut buffer).await?;
        if n == 0 {
            break;
        }
        copy.send(&buffer[..n]).await?;
    }
    copy.finish().await?;
    Ok(started.elapsed())
}

async fn insert_into_clickhouse(
    client: &clickhouse::Client,
    file: &Path,
) -> anyhow::Result<Duration> {
    let mut reader = tokio::fs::File::open(file).await?;
    let started = Instant::now();
    let mut insert = client.insert_formatted_with("INSERT INTO limit_rows FORMAT CSVWithNames");
    loop {
        let mut buffer = vec![0u8; 1 << 20];
        let n = reader.read(&mut buffer).await?;
        if n == 0 {
            break;
        }
        buffer.truncate(n);
        insert.send(buffer.into()).await?;
    }
    insert.end().await?;
    Ok(started.elapsed())
}

fn start_worker(
    bin_dir: &Path,
    env: &[(String, String)],
    work_dir: &Path,
) -> anyhow::Result<Child> {
    let log_path = work_dir.join("worker.log");
    let log = std::fs::File::create(&log_path)?;
    let mut child = Command::new(bin_dir.join("etl-worker"))
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .env("RUST_LOG", "info,temporalio_sdk_core=warn")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .context("starting etl-worker")?;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if std::fs::read_to_string(&log_path)?.contains("etl-worker ready") {
            return Ok(child);
        }
        if let Some(status) = child.try_wait()? {
            bail!(
                "etl-worker exited with {status}; see {}",
                log_path.display()
            );
        }
        ensure!(
            Instant::now() < deadline,
            "etl-worker not ready; see {}",
            log_path.display()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `--chunk-bytes` and `--parallel` for `etlctl ingest`, when the bench was given them.
fn execution_flags(args: &Args) -> Vec<String> {
    let mut flags = Vec::new();
    if let Some(chunk_bytes) = args.chunk_bytes {
        flags.extend(["--chunk-bytes".to_owned(), chunk_bytes.to_string()]);
    }
    if let Some(parallel) = args.parallel {
        flags.extend(["--parallel".to_owned(), parallel.to_string()]);
    }
    flags
}

/// The kernel's high-water mark of the worker's resident memory.
fn peak_rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        .context("no VmHWM in /proc status")
}

/// CPU seconds per second each service spends with no job running, over a quiet spell.
fn idle_cpu_per_second() -> BTreeMap<String, f64> {
    const QUIET: Duration = Duration::from_secs(5);
    let before = cpu_by_service();
    std::thread::sleep(QUIET);
    cpu_spent(&before, &cpu_by_service())
        .into_iter()
        .map(|(service, seconds)| (service, seconds / QUIET.as_secs_f64()))
        .collect()
}

/// CPU seconds each service spent between two [`cpu_by_service`] readings.
fn cpu_spent(
    before: &BTreeMap<String, f64>,
    after: &BTreeMap<String, f64>,
) -> BTreeMap<String, f64> {
    after
        .iter()
        .map(|(service, after)| {
            let before = before.get(service).copied().unwrap_or(0.0);
            (service.clone(), after - before)
        })
        .filter(|(_, seconds)| *seconds > 0.005)
        .collect()
}

/// Prints a table: a label column, then one column per item.
struct Table<'a, T> {
    columns: &'a [&'a T],
    width: usize,
}

impl<T> Table<'_, T> {
    fn row(&self, label: &str, value: impl Fn(&T) -> String) {
        print!("{label:<34}");
        for column in self.columns {
            print!(" {:>width$}", value(column), width = self.width);
        }
        println!();
    }
}

/// CPU seconds (user + system) of every running process, by service.
fn cpu_by_service() -> BTreeMap<String, f64> {
    let ticks = 100.0; // USER_HZ on Linux
    let mut by_service = BTreeMap::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return by_service;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let (Ok(stat), Ok(cmdline)) = (
            std::fs::read_to_string(path.join("stat")),
            std::fs::read(path.join("cmdline")),
        ) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        let service = if cmdline.contains("etl-worker") {
            "worker"
        } else if cmdline.contains("serve.py") || cmdline.contains("clickhouse") {
            "clickhouse"
        } else if cmdline.starts_with("postgres: ") && !cmdline.contains("(") {
            // Autovacuum, checkpointer, WAL writer: not a client's session.
            "postgres (background)"
        } else if cmdline.starts_with("postgres") || cmdline.contains("/postgres") {
            "postgres"
        } else if cmdline.contains("temporal") {
            "temporal"
        } else if cmdline.contains("garage") {
            "garage"
        } else if cmdline.contains("etlctl") {
            "etlctl"
        } else {
            continue;
        };
        // Fields after the command name (which may hold spaces): utime and stime are the
        // 12th and 13th of them.
        let Some(rest) = stat.rsplit_once(')').map(|(_, rest)| rest) else {
            continue;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let (Some(utime), Some(stime)) = (
            fields.get(11).and_then(|v| v.parse::<f64>().ok()),
            fields.get(12).and_then(|v| v.parse::<f64>().ok()),
        ) else {
            continue;
        };
        *by_service.entry(service.to_owned()).or_insert(0.0) += (utime + stime) / ticks;
    }
    by_service
}

/// Postgres' time per statement from the server log written since `start`, by the
/// statement's first words (parameters are not in the text, so calls group).
fn statement_times(log: &Path, start: u64) -> anyhow::Result<Vec<Statement>> {
    let mut file = std::fs::File::open(log)?;
    file.seek(SeekFrom::Start(start))?;
    let mut text = String::new();
    file.take(512 << 20).read_to_string(&mut text)?;
    let mut by_statement: BTreeMap<String, (u64, f64)> = BTreeMap::new();
    for line in text.lines() {
        let Some((_, rest)) = line.split_once("duration: ") else {
            continue;
        };
        let Some((ms, statement)) = rest.split_once(" ms") else {
            continue;
        };
        let Ok(ms) = ms.trim().parse::<f64>() else {
            continue;
        };
        // "  execute s12: INSERT INTO ..." / "  statement: COMMIT" / "  parse ..." / "  bind
        // ...": the text after the first colon, squeezed, first 60 characters. Every step's
        // time counts; a call is its execute (simple queries: its statement) line.
        let (step, text) = statement.split_once(':').unwrap_or(("", statement));
        let step = step.split_whitespace().next().unwrap_or_default();
        let text: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
        let key: String = text.chars().take(60).collect();
        let entry = by_statement.entry(key).or_insert((0, 0.0));
        if matches!(step, "execute" | "statement") {
            entry.0 += 1;
        }
        entry.1 += ms / 1000.0;
    }
    let mut statements: Vec<Statement> = by_statement
        .into_iter()
        .map(|(statement, (calls, seconds))| Statement {
            statement,
            calls,
            seconds,
        })
        .collect();
    statements.sort_by(|a, b| b.seconds.total_cmp(&a.seconds));
    statements.truncate(10);
    Ok(statements)
}

/// The ClickHouse server's clock, in microseconds: its logs are filtered by it.
async fn clickhouse_clock(ch: &clickhouse::Client) -> anyhow::Result<i64> {
    Ok(ch
        .query("SELECT toUnixTimestamp64Micro(now64(6))")
        .fetch_one::<i64>()
        .await?)
}

/// ClickHouse's CPU (user + system) since `since` in the bench database: per query (squeezed
/// to its first 60 characters) and per part event (inserts write parts, background merges
/// rewrite them), largest first. Empty when the server keeps no query log.
async fn clickhouse_cpu(ch: &clickhouse::Client, since: i64) -> anyhow::Result<Vec<Statement>> {
    let logs: Vec<String> = ch
        .query(
            "SELECT name FROM system.tables WHERE database = 'system'
               AND name IN ('query_log', 'part_log')",
        )
        .fetch_all()
        .await?;
    if logs.len() < 2 {
        return Ok(Vec::new());
    }
    ch.query("SYSTEM FLUSH LOGS").execute().await?;
    let cpu =
        "(ProfileEvents['UserTimeMicroseconds'] + ProfileEvents['SystemTimeMicroseconds']) / 1e6";
    let rows: Vec<(String, u64, f64)> = ch
        .query(&format!(
            "SELECT q, count(), sum(cpu) FROM (
                 SELECT substring(replaceRegexpAll(normalizeQuery(query), '\\s+', ' '), 1, 60)
                            AS q, {cpu} AS cpu
                 FROM system.query_log
                 WHERE type = 'QueryFinish' AND current_database = currentDatabase()
                   AND query_start_time_microseconds >= fromUnixTimestamp64Micro(?)
                 UNION ALL
                 SELECT concat('part: ', toString(event_type), ' ', table), {cpu}
                 FROM system.part_log
                 WHERE database = currentDatabase() AND event_type IN ('NewPart', 'MergeParts')
                   AND event_time_microseconds >= fromUnixTimestamp64Micro(?))
             GROUP BY q ORDER BY sum(cpu) DESC LIMIT 10"
        ))
        .bind(since)
        .bind(since)
        .fetch_all()
        .await?;
    Ok(rows
        .into_iter()
        .map(|(statement, calls, seconds)| Statement {
            statement,
            calls,
            seconds,
        })
        .collect())
}

struct ChunkTiming {
    chunks: u64,
    plan_seconds: f64,
    chunk_phase_seconds: f64,
    activity_seconds: f64,
}

async fn chunk_timing(url: &str, job_id: &str) -> anyhow::Result<ChunkTiming> {
    let mut conn = PgConnection::connect(url).await?;
    let job: sqlx::types::Uuid = job_id.parse()?;
    let (chunks, plan, phase, activity): (i64, f64, f64, f64) = sqlx::query_as(
        "SELECT count(*),
                extract(epoch FROM j.planned_at - j.created_at)::float8,
                coalesce(extract(epoch FROM max(c.clickhouse_written_at) - min(c.first_started_at)), 0)::float8,
                coalesce(sum(extract(epoch FROM c.clickhouse_written_at - c.last_started_at)), 0)::float8
         FROM etl_jobs j LEFT JOIN etl_chunks c ON c.job_id = j.id
         WHERE j.id = $1 GROUP BY j.planned_at, j.created_at",
    )
    .bind(job)
    .fetch_one(&mut conn)
    .await?;
    Ok(ChunkTiming {
        chunks: chunks as u64,
        plan_seconds: plan,
        chunk_phase_seconds: phase,
        activity_seconds: activity,
    })
}

fn print_report(scenarios: &[Scenario]) {
    let columns: Vec<&Scenario> = scenarios.iter().collect();
    let table = Table {
        columns: &columns,
        width: 22,
    };
    println!();
    table.row("", |s| s.name.to_owned());
    table.row("rows (valid / invalid)", |s| {
        format!("{} ({}/{})", s.rows, s.rows_valid, s.rows_invalid)
    });
    table.row("bytes", |s| format!("{:.1} MB", s.bytes as f64 / 1e6));
    table.row("chunks", |s| s.chunks.to_string());
    table.row("items (delisted)", |s| {
        format!("{} ({})", s.items, s.items_delisted)
    });
    table.row("limit (PG COPY + CH INSERT)", |s| {
        format!("{:.2} s {:.0}/s", s.limit.seconds, s.limit.rows_per_sec)
    });
    table.row("  Postgres COPY alone", |s| {
        format!("{:.2} s", s.limit_postgres_copy.seconds)
    });
    table.row("  ClickHouse INSERT alone", |s| {
        format!("{:.2} s", s.limit_clickhouse_insert.seconds)
    });
    table.row("pipeline (etlctl ingest --wait)", |s| {
        format!(
            "{:.2} s {:.0}/s",
            s.pipeline.seconds, s.pipeline.rows_per_sec
        )
    });
    table.row("RATIO pipeline / limit", |s| format!("{:.2}", s.ratio));
    table.row("worker peak RSS", |s| {
        format!("{:.1} MiB", s.worker_peak_rss_mib)
    });
    table.row("plan", |s| format!("{:.2} s", s.plan_seconds));
    table.row("chunk activities (sum)", |s| {
        format!("{:.2} s", s.chunk_activity_seconds)
    });
    table.row("after the chunks", |s| format!("{:.2} s", s.tail_seconds));
    for service in services(scenarios.iter().map(|s| &s.cpu_seconds)) {
        table.row(&format!("CPU s: {service}"), |s| {
            format!("{:.2}", s.cpu_seconds.get(service).copied().unwrap_or(0.0))
        });
    }
    table.row("CPU ms per 1k rows (all)", |s| {
        format!("{:.1}", s.cpu_ms_per_1k_rows)
    });
    for service in services(scenarios.iter().map(|s| &s.idle_cpu_per_second)) {
        table.row(&format!("  idle CPU s per s: {service}"), |s| {
            format!(
                "{:.3}",
                s.idle_cpu_per_second.get(service).copied().unwrap_or(0.0)
            )
        });
    }
    table.row("CPU ms per 1k rows above idle", |s| {
        format!("{:.1}", s.cpu_ms_per_1k_rows_above_idle)
    });
    for s in scenarios {
        print_statements(
            &format!("Postgres time per statement, {}", s.name),
            &s.postgres_statements,
        );
    }
    for s in scenarios.iter().filter(|s| !s.clickhouse_cpu.is_empty()) {
        print_statements(
            &format!("ClickHouse CPU per query and per part event, {}", s.name),
            &s.clickhouse_cpu,
        );
    }
}

fn print_summary(summary: &[ScenarioSummary]) {
    let columns: Vec<&ScenarioSummary> = summary.iter().collect();
    let table = Table {
        columns: &columns,
        width: 24,
    };
    let runs = summary.first().map_or(0, |s| s.runs);
    println!("\nover {runs} run(s), min / median / max:");
    table.row("", |s| s.name.to_owned());
    table.row("limit, s", |s| s.limit_seconds.show(2));
    table.row("pipeline, s", |s| s.pipeline_seconds.show(2));
    table.row("RATIO pipeline / limit", |s| s.ratio.show(2));
    table.row("worker peak RSS, MiB", |s| s.worker_peak_rss_mib.show(0));
    for service in services(summary.iter().map(|s| &s.cpu_seconds)) {
        table.row(&format!("CPU s: {service}"), |s| {
            s.cpu_seconds
                .get(service)
                .map_or_else(String::new, |spread| spread.show(2))
        });
    }
    table.row("CPU ms per 1k rows (all)", |s| s.cpu_ms_per_1k_rows.show(1));
    for scenario in summary {
        for target in &scenario.targets {
            println!("TARGET {}: {target}", scenario.name);
        }
    }
}

fn print_statements(title: &str, statements: &[Statement]) {
    println!("\n{title}:");
    for statement in statements {
        println!(
            "  {:>8.2} s {:>6} calls  {}",
            statement.seconds, statement.calls, statement.statement
        );
    }
}
