//! Fault injection: workers killed at exact steps, services stopped mid-job, the object
//! replaced mid-job. Each test ends with exact counts in Postgres and ClickHouse.
//!
//! Some tests stop shared services (Postgres, ClickHouse, Garage), so this module runs alone
//! and one test at a time: `make test-faults` (which `make test` calls after the other tests).

use std::time::Duration;

use activities::generator::{GeneratedStats, GeneratorConfig};

use crate::{
    harness::{AsyncCheck, CommittedChunks, TestEnv, u},
    ingest::{assert_reconciled, catalog, wait_until_final},
};

const KEY: &str = "cotopaxi/faults.csv";

/// A job of about `rows / 30` chunks, its id, and the generator's expected counts.
async fn start_job(
    env: &TestEnv,
    rows: u64,
    seed: u64,
    extra: &[&str],
) -> (String, GeneratedStats) {
    let (body, stats) = catalog(GeneratorConfig {
        rows,
        seed,
        invalid_per_mille: 40,
        ..GeneratorConfig::default()
    });
    env.put(KEY, body).await;
    let mut args = vec!["--chunk-bytes", "20000", "--heartbeat-timeout", "3"];
    args.extend_from_slice(extra);
    let started = env.ingest(KEY, &args);
    assert_eq!(started.code, 0, "{}{}", started.stdout, started.stderr);
    let job_id = started.json()["job_id"].as_str().unwrap().to_owned();
    (job_id, stats)
}

/// A count over the job's rows (`$1` is the job id) reaches `at_least`.
struct JobCount<'a> {
    sql: &'a str,
    job_id: &'a str,
    at_least: i64,
}

impl AsyncCheck for JobCount<'_> {
    async fn check(&mut self, pg: &sqlx::PgPool) -> bool {
        let job: sqlx::types::Uuid = self.job_id.parse().unwrap();
        sqlx::query_scalar::<_, i64>(self.sql)
            .bind(job)
            .fetch_one(pg)
            .await
            .map(|n| n >= self.at_least)
            .unwrap_or(false)
    }
}

async fn ch_count(env: &TestEnv, sql: &str, job_id: &str) -> u64 {
    env.ch
        .query(sql)
        .bind(job_id)
        .fetch_one()
        .await
        .unwrap_or_else(|err| panic!("{sql}: {err}"))
}

async fn status(env: &TestEnv, job_id: &str) -> String {
    let job: sqlx::types::Uuid = job_id.parse().unwrap();
    sqlx::query_scalar("SELECT status FROM etl_jobs WHERE id = $1")
        .bind(job)
        .fetch_one(&env.pg)
        .await
        .unwrap()
}

/// Exact counts, and not even a physical duplicate waiting for a ClickHouse merge: every
/// chunk's ClickHouse rows were written by exactly one successful attempt.
async fn assert_exact_without_duplicates(env: &TestEnv, job_id: &str, stats: &GeneratedStats) {
    let summary = wait_until_final(env, job_id).await;
    assert_reconciled(env, &summary, stats).await;
    assert_eq!(u(&summary["chunks_clickhouse_pending"]), 0, "{summary}");
    let raw = ch_count(
        env,
        "SELECT count() FROM catalog_item_observations WHERE job_id = ?",
        job_id,
    )
    .await;
    assert_eq!(raw, stats.rows_valid, "raw ClickHouse observations");
}

/// A worker SIGKILLed where it paused at `point`; the caller checks the state the kill left and
/// starts a plain worker.
async fn kill_at(name: &str, point: &str, seed: u64) -> (TestEnv, String, GeneratedStats) {
    let mut env = TestEnv::new(name).await;
    env.start_worker_pausing_at(point);
    let (job_id, stats) = start_job(&env, 400, seed, &["--parallel", "2"]).await;
    env.wait_for_log(&format!("paused at {point}"), Duration::from_secs(60))
        .await;
    env.kill_workers();
    (env, job_id, stats)
}

fn chunk_count(sql_filter: &str) -> String {
    format!("SELECT count(*) FROM etl_chunks WHERE job_id = $1 AND {sql_filter}")
}

#[tokio::test]
async fn killed_while_planning() {
    let (mut env, job_id, stats) = kill_at("kill_plan", "plan", 31).await;
    assert_eq!(env.scalar(&chunk_count("true"), &job_id).await, 0);
    env.start_worker();
    assert_exact_without_duplicates(&env, &job_id, &stats).await;
}

#[tokio::test]
async fn killed_inside_an_uncommitted_chunk_transaction() {
    let (mut env, job_id, stats) = kill_at("kill_chunk", "chunk-before-commit", 32).await;
    assert_eq!(
        env.scalar(&chunk_count("status = 'committed'"), &job_id)
            .await,
        0
    );
    let items = env
        .scalar(
            "SELECT count(*) FROM catalog_item_jobs WHERE job_id = $1",
            &job_id,
        )
        .await;
    assert_eq!(items, 0, "the killed transaction left nothing behind");
    env.start_worker();
    assert_exact_without_duplicates(&env, &job_id, &stats).await;
}

#[tokio::test]
async fn killed_between_postgres_commit_and_clickhouse_write() {
    let (mut env, job_id, stats) = kill_at("kill_gap", "chunk-before-clickhouse", 33).await;
    let in_gap = env
        .scalar(
            &chunk_count("status = 'committed' AND NOT clickhouse_written"),
            &job_id,
        )
        .await;
    assert!(in_gap >= 1, "a chunk was committed in Postgres only");
    assert_eq!(
        ch_count(
            &env,
            "SELECT count() FROM catalog_item_observations WHERE job_id = ?",
            &job_id
        )
        .await,
        0
    );
    env.start_worker();
    assert_exact_without_duplicates(&env, &job_id, &stats).await;
    // The retry found the chunk committed and wrote only ClickHouse.
    let retried = env.scalar(&chunk_count("attempts > 1"), &job_id).await;
    assert!(retried >= in_gap);
}

#[tokio::test]
async fn killed_while_aggregating() {
    let (mut env, job_id, stats) = kill_at("kill_aggregate", "aggregate", 34).await;
    let pending = env
        .scalar(
            &chunk_count("NOT (status = 'committed' AND clickhouse_written)"),
            &job_id,
        )
        .await;
    assert_eq!(pending, 0, "every chunk was done before aggregate");
    assert_eq!(status(&env, &job_id).await, "running");
    env.start_worker();
    assert_exact_without_duplicates(&env, &job_id, &stats).await;
}

/// `workers` workers and a job of ~200 chunks with a few committed: something can fail mid-job.
async fn job_under_way(name: &str, seed: u64, workers: usize) -> (TestEnv, String, GeneratedStats) {
    let mut env = TestEnv::new(name).await;
    for _ in 0..workers {
        env.start_worker();
    }
    let (job_id, stats) = start_job(&env, 6000, seed, &["--parallel", "4"]).await;
    env.wait_for(
        "some chunks to commit",
        Duration::from_secs(60),
        CommittedChunks {
            job_id: &job_id,
            at_least: 3,
        },
    )
    .await;
    (env, job_id, stats)
}

#[tokio::test]
async fn a_worker_killed_mid_job_leaves_exact_counts() {
    let (mut env, job_id, stats) = job_under_way("killed", 9, 1).await;
    env.kill_workers();
    env.start_worker();
    assert_exact_without_duplicates(&env, &job_id, &stats).await;
}

#[tokio::test]
async fn two_workers_share_a_job_and_one_is_killed() {
    let (mut env, job_id, stats) = job_under_way("two_workers", 35, 2).await;
    env.kill_first_worker();
    assert_exact_without_duplicates(&env, &job_id, &stats).await;
}

/// Stops `service` until some chunk matching `failed_chunks` (a filter on `etl_chunks`) shows
/// that an attempt failed against it, checks the job waits, starts the service again and
/// expects exact counts.
async fn survives_outage(name: &str, seed: u64, service: &str, failed_chunks: &str) {
    let (env, job_id, stats) = job_under_way(name, seed, 1).await;
    let stopped = env.stop_service(service);
    let sql = chunk_count(failed_chunks);
    env.wait_for(
        &format!("a chunk attempt to fail while {service} is down"),
        Duration::from_secs(60),
        JobCount {
            sql: &sql,
            job_id: &job_id,
            at_least: 1,
        },
    )
    .await;
    assert_eq!(status(&env, &job_id).await, "running", "the job waits");
    stopped.start();
    assert_exact_without_duplicates(&env, &job_id, &stats).await;
}

#[tokio::test]
async fn postgres_restarted_mid_job() {
    let (env, job_id, stats) = job_under_way("pg_restart", 36, 1).await;
    env.restart_service("postgres");
    assert_eq!(status(&env, &job_id).await, "running", "restarted mid-job");
    assert_exact_without_duplicates(&env, &job_id, &stats).await;
}

/// Nothing committed to Postgres is missing from ClickHouse afterwards (0 chunks pending).
#[tokio::test]
async fn clickhouse_down_mid_job_then_back() {
    survives_outage(
        "ch_down",
        37,
        "clickhouse",
        "status = 'committed' AND NOT clickhouse_written AND attempts >= 2",
    )
    .await;
}

#[tokio::test]
async fn s3_unavailable_for_a_while() {
    survives_outage(
        "s3_down",
        38,
        "garage",
        "status = 'planned' AND attempts >= 2",
    )
    .await;
}

#[tokio::test]
async fn an_object_replaced_mid_job_fails_closed() {
    let mut env = TestEnv::new("replaced").await;
    env.start_worker();
    let (body, _) = catalog(GeneratorConfig {
        rows: 800,
        seed: 3,
        ..GeneratorConfig::default()
    });
    env.put("cotopaxi/replaced.csv", body).await;
    let started = env.ingest(
        "cotopaxi/replaced.csv",
        &["--chunk-bytes", "64", "--parallel", "1"],
    );
    assert_eq!(started.code, 0, "{}{}", started.stdout, started.stderr);
    let job_id = started.json()["job_id"].as_str().unwrap().to_owned();
    env.wait_for(
        "the first chunks to commit",
        Duration::from_secs(60),
        CommittedChunks {
            job_id: &job_id,
            at_least: 2,
        },
    )
    .await;
    let (new_body, _) = catalog(GeneratorConfig {
        rows: 800,
        seed: 4,
        sku_prefix: "NEWVERSION".to_owned(),
        ..GeneratorConfig::default()
    });
    env.put("cotopaxi/replaced.csv", new_body).await;

    let shown = wait_until_final(&env, &job_id).await;
    assert_eq!(shown["status"], "failed", "{shown}");
    let error = shown["error"].as_str().unwrap();
    assert!(error.contains("source changed"), "{error}");
    let mixed: i64 =
        sqlx::query_scalar("SELECT count(*) FROM catalog_items WHERE sku LIKE 'NEWVERSION%'")
            .fetch_one(&env.pg)
            .await
            .unwrap();
    assert_eq!(mixed, 0, "no row of the new version is mixed in");
    let ch_mixed: u64 = env
        .ch
        .query("SELECT count() FROM catalog_item_observations WHERE sku LIKE 'NEWVERSION%'")
        .fetch_one()
        .await
        .unwrap();
    assert_eq!(ch_mixed, 0);
    // What was committed before the change is reported, exactly once.
    let committed = env
        .scalar(
            "SELECT coalesce(sum(rows_total), 0)::bigint FROM etl_chunks WHERE job_id = $1 AND status = 'committed'",
            &job_id,
        )
        .await;
    assert_eq!(u(&shown["rows_total"]), committed as u64);
}

/// Bad configuration fails at start-up, fast, naming the problem and never a secret.
#[tokio::test]
async fn bad_configuration_fails_at_start_up_without_leaking_secrets() {
    let env = TestEnv::new("badconfig").await;
    let pg_secret = "pg-Secret-4711";
    let s3_secret = "s3-Secret-0815-abcdefghijklmnop";
    let wrong_db = format!("postgres://postgres:{pg_secret}@127.0.0.1:5432/no_such_database");
    let cases: [(&[(&str, &str)], &str); 7] = [
        (
            &[("DATABASE_URL", wrong_db.as_str())],
            "Postgres (DATABASE_URL)",
        ),
        (
            &[("CLICKHOUSE_URL", "http://127.0.0.1:9")],
            "ClickHouse (CLICKHOUSE_URL)",
        ),
        (
            &[("ETL_CHECK_BUCKETS", "no-such-bucket")],
            "bucket no-such-bucket does not exist",
        ),
        (&[("AWS_SECRET_ACCESS_KEY", s3_secret)], "access to bucket"),
        (
            &[("TEMPORAL_ADDRESS", "http://127.0.0.1:9")],
            "cannot reach Temporal",
        ),
        (
            &[("CLICKHOUSE_COMPRESSION", "zstd")],
            "CLICKHOUSE_COMPRESSION is invalid",
        ),
        (&[("ETL_PAUSE_AT", "mid-chunk")], "ETL_PAUSE_AT is invalid"),
    ];
    for (overrides, expected) in cases {
        let (code, output, elapsed) = env.failing_worker(overrides);
        assert_ne!(code, 0, "{overrides:?}: {output}");
        assert!(
            output.contains(expected),
            "{overrides:?}: {output:?} should name {expected:?}"
        );
        assert!(
            elapsed < Duration::from_secs(15),
            "{overrides:?} took {elapsed:?}"
        );
        for secret in [pg_secret, s3_secret] {
            assert!(
                !output.contains(secret),
                "{overrides:?} leaked a secret: {output}"
            );
        }
    }
}
