//! `etl-bench`: the pipeline's speed against the physical limit of this machine, side by side,
//! on the same generated file, in one run (`make bench`).
//!
//! limit    = `COPY ... FROM STDIN (FORMAT csv)` into an unlogged, unindexed Postgres table,
//!            together with one `INSERT ... FORMAT CSVWithNames` into a plain MergeTree table
//!            (both loads run at once, as the pipeline writes both stores at once)
//! pipeline = `etlctl ingest --wait` of the same object into fresh tables, with a real worker

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, ExitCode, Stdio},
    time::{Duration, Instant},
};

use activities::{
    config::{Config, Needs},
    error::error_chain,
    generator::{COLUMNS, GeneratedStats, GeneratorConfig, write_catalog},
    s3::ObjectStore,
};
use anyhow::{Context, bail, ensure};
use clap::Parser;
use serde::Serialize;
use serde_json::Value;
use sqlx::{Connection, PgConnection};
use tokio::io::AsyncReadExt;

const BENCH_DATABASE: &str = "catalog_etl_bench";

#[derive(Parser)]
#[command(
    name = "etl-bench",
    about = "Pipeline throughput against the load limit of this machine"
)]
struct Args {
    /// Data rows in the generated catalog.
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
    /// Where the figures go as JSON.
    #[arg(long, default_value = "target/bench/latest.json")]
    out: PathBuf,
    /// Directory holding `etl-worker` and `etlctl`.
    #[arg(long, default_value = "target/release")]
    bin_dir: PathBuf,
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
struct Report {
    rows: u64,
    bytes: u64,
    rows_valid: u64,
    rows_invalid: u64,
    chunks: u64,
    chunk_bytes: Option<u64>,
    parallel: Option<u32>,
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
    /// Per chunk: wall time of the chunk phase times lanes, minus time inside activities,
    /// divided by chunks: what Temporal scheduling and dispatch cost each chunk.
    orchestration_overhead_per_chunk_ms: f64,
    /// Job wall time minus plan and chunk phases: aggregate, reconcile, finalize, start-up.
    tail_seconds: f64,
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

async fn run(args: Args) -> anyhow::Result<()> {
    activities::tls::install_crypto_provider();
    let base = Config::from_env(Needs::ALL)?;
    let work_dir = args.out.parent().unwrap_or(Path::new(".")).to_path_buf();
    std::fs::create_dir_all(&work_dir)?;

    let file = work_dir.join(format!("catalog-{}-{}.csv", args.rows, args.seed));
    eprintln!("generating {} rows into {}", args.rows, file.display());
    let stats = generate(&args, &file)?;
    let key = format!("bench/{}", file.file_name().unwrap().to_string_lossy());
    let s3 = ObjectStore::new(&base)?;
    s3.ensure_bucket("catalog").await?;
    s3.put_path("catalog", &key, &file).await?;

    let database_url = fresh_postgres(&base).await?;
    let ch = fresh_clickhouse(&base).await?;

    eprintln!("limit: COPY into Postgres and INSERT into ClickHouse at once");
    let started = Instant::now();
    let (pg_elapsed, ch_elapsed) = tokio::try_join!(
        copy_into_postgres(&database_url, &file),
        insert_into_clickhouse(&ch, &file)
    )?;
    let limit_elapsed = started.elapsed();

    eprintln!("pipeline: etlctl ingest --wait");
    let mut env = vec![
        ("DATABASE_URL".to_owned(), database_url.clone()),
        ("CLICKHOUSE_DATABASE".to_owned(), BENCH_DATABASE.to_owned()),
        (
            "ETL_TASK_QUEUE".to_owned(),
            format!("bench-{}", std::process::id()),
        ),
    ];
    env.push(("RUST_LOG".to_owned(), "warn".to_owned()));
    let mut worker = start_worker(&args.bin_dir, &env, &work_dir)?;
    let uri = format!("s3://catalog/{key}");
    let mut ingest = vec![
        "ingest".to_owned(),
        uri,
        "--source".into(),
        "bench".into(),
        "--wait".into(),
        "--json".into(),
    ];
    if let Some(chunk_bytes) = args.chunk_bytes {
        ingest.extend(["--chunk-bytes".to_owned(), chunk_bytes.to_string()]);
    }
    if let Some(parallel) = args.parallel {
        ingest.extend(["--parallel".to_owned(), parallel.to_string()]);
    }
    let started = Instant::now();
    let output = Command::new(args.bin_dir.join("etlctl"))
        .args(&ingest)
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .output()
        .context("running etlctl")?;
    let pipeline_elapsed = started.elapsed();
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
    let timing = chunk_timing(&database_url, &job_id).await?;
    let parallel = f64::from(
        args.parallel
            .unwrap_or(activities::model::DEFAULT_MAX_PARALLEL_CHUNKS),
    );
    let limit = Throughput::new(limit_elapsed, stats.rows_total, stats.bytes);
    let pipeline = Throughput::new(pipeline_elapsed, stats.rows_total, stats.bytes);
    let report = Report {
        rows: stats.rows_total,
        bytes: stats.bytes,
        rows_valid: stats.rows_valid,
        rows_invalid: stats.rows_invalid,
        chunks: timing.chunks,
        chunk_bytes: args.chunk_bytes,
        parallel: args.parallel,
        ratio: pipeline.rows_per_sec / limit.rows_per_sec,
        limit,
        limit_postgres_copy: Throughput::new(pg_elapsed, stats.rows_total, stats.bytes),
        limit_clickhouse_insert: Throughput::new(ch_elapsed, stats.rows_total, stats.bytes),
        pipeline,
        worker_peak_rss_mib: peak_rss_kib as f64 / 1024.0,
        plan_seconds: timing.plan_seconds,
        chunk_activity_seconds: timing.activity_seconds,
        orchestration_overhead_per_chunk_ms: if timing.chunks == 0 {
            0.0
        } else {
            ((timing.chunk_phase_seconds * parallel.min(timing.chunks as f64)
                - timing.activity_seconds)
                / timing.chunks as f64
                * 1000.0)
                .max(0.0)
        },
        tail_seconds: (pipeline_elapsed.as_secs_f64()
            - timing.plan_seconds
            - timing.chunk_phase_seconds)
            .max(0.0),
    };
    print_report(&report);
    std::fs::write(&args.out, serde_json::to_vec_pretty(&report)?)?;
    eprintln!("written to {}", args.out.display());
    Ok(())
}

fn generate(args: &Args, file: &Path) -> anyhow::Result<GeneratedStats> {
    let config = GeneratorConfig {
        rows: args.rows,
        seed: args.seed,
        loadable_by_copy: true,
        ..GeneratorConfig::default()
    };
    let out = std::io::BufWriter::new(std::fs::File::create(file)?);
    Ok(write_catalog(&config, out)?)
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

/// The kernel's high-water mark of the worker's resident memory.
fn peak_rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        .context("no VmHWM in /proc status")
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

fn print_report(r: &Report) {
    println!();
    println!(
        "rows {}  bytes {} ({:.1} MB)  valid {}  invalid {}  chunks {}",
        r.rows,
        r.bytes,
        r.bytes as f64 / 1e6,
        r.rows_valid,
        r.rows_invalid,
        r.chunks
    );
    println!("{:<28} {:>9} {:>12} {:>9}", "", "seconds", "rows/s", "MB/s");
    for (name, t) in [
        ("limit (PG COPY + CH INSERT)", &r.limit),
        ("  Postgres COPY alone", &r.limit_postgres_copy),
        ("  ClickHouse INSERT alone", &r.limit_clickhouse_insert),
        ("pipeline (etlctl ingest)", &r.pipeline),
    ] {
        println!(
            "{name:<28} {:>9.2} {:>12.0} {:>9.1}",
            t.seconds, t.rows_per_sec, t.mb_per_sec
        );
    }
    println!("ratio pipeline/limit        {:.2}", r.ratio);
    println!(
        "worker peak RSS             {:.1} MiB",
        r.worker_peak_rss_mib
    );
    println!("plan                        {:.2} s", r.plan_seconds);
    println!(
        "chunk activities (sum)      {:.2} s",
        r.chunk_activity_seconds
    );
    println!(
        "orchestration per chunk     {:.1} ms",
        r.orchestration_overhead_per_chunk_ms
    );
    println!("aggregate/reconcile/finish  {:.2} s", r.tail_seconds);
}
