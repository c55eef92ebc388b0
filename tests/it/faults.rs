//! Fault injection: workers killed or frozen at exact steps, services down for long outages or
//! restarted mid-job, the object replaced mid-job. Each test ends with exact counts in Postgres
//! and ClickHouse, ClickHouse counted with `FINAL` and raw (no duplicate waits for a merge).
//!
//! Nothing races the clock: a job is held at a pause point (`ETL_PAUSE_AT`), the fault is
//! made, then the job is released (SIGUSR1) or the worker killed. Some tests stop shared
//! services, so this module runs alone, one test at a time: `make test-faults` (which
//! `make test` calls after the other tests).

use std::{process::Stdio, time::Duration};

use generator::{GeneratedStats, GeneratorConfig};

use crate::{
    harness::{CommittedChunks, JobCount, TestEnv, u},
    ingest::{assert_reconciled, catalog, observations, raw_observations, wait_until_final},
};

const KEY: &str = "cotopaxi/faults.csv";

/// Puts a catalog of about `rows / 30` chunks and starts its ingest; returns the job id and
/// the generator's expected counts.
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
    let mut args = vec!["--chunk-bytes", "20000"];
    if !extra.contains(&"--heartbeat-timeout") {
        args.extend_from_slice(&["--heartbeat-timeout", "3"]);
    }
    args.extend_from_slice(extra);
    let started = env.ingest(KEY, &args);
    assert_eq!(started.code, 0, "{}{}", started.stdout, started.stderr);
    let job_id = started.json()["job_id"].as_str().unwrap().to_owned();
    (job_id, stats)
}

async fn status(env: &TestEnv, job_id: &str) -> String {
    let job: sqlx::types::Uuid = job_id.parse().unwrap();
    sqlx::query_scalar("SELECT status FROM etl_jobs WHERE id = $1")
        .bind(job)
        .fetch_one(&env.pg)
        .await
        .unwrap()
}

/// Rows of the current catalog copy in ClickHouse, without `FINAL`.
async fn raw_catalog_rows(env: &TestEnv) -> u64 {
    env.ch
        .query("SELECT count() FROM catalog_items")
        .fetch_one()
        .await
        .unwrap()
}

/// Keeps ClickHouse from merging the copy's parts: a merge collapses a block inserted twice
/// into one row per item, so without it a duplicated copy can vanish before it is counted.
async fn stop_merges(env: &TestEnv) {
    for table in ["catalog_items", "catalog_item_observations"] {
        env.ch
            .query(&format!("SYSTEM STOP MERGES {table}"))
            .execute()
            .await
            .unwrap();
    }
}

/// Rows of the catalog copy that repeat another row's (sku, revision): a copy inserted twice.
/// (Several revisions of one sku are legitimate: each is a write Postgres made.)
async fn duplicated_catalog_rows(env: &TestEnv) -> i64 {
    env.ch
        .query("SELECT count() - uniqExact(sku, revision) FROM catalog_items")
        .fetch_one()
        .await
        .unwrap()
}

/// Exact counts, and not even a physical duplicate waiting for a ClickHouse merge: every
/// chunk's observations and catalog copy landed exactly once.
async fn assert_exact_without_duplicates(env: &TestEnv, job_id: &str, stats: &GeneratedStats) {
    let summary = wait_until_final(env, job_id).await;
    assert_reconciled(env, &summary, stats).await;
    assert_eq!(u(&summary["chunks_clickhouse_pending"]), 0, "{summary}");
    assert_eq!(observations(env, KEY).await, stats.rows_valid);
    assert_eq!(
        raw_observations(env, KEY).await,
        stats.rows_valid,
        "raw ClickHouse observations"
    );
    assert_eq!(
        duplicated_catalog_rows(env).await,
        0,
        "catalog rows copied twice to ClickHouse"
    );
}

/// A worker held at `point`; the caller makes its fault, then kills or releases it.
async fn held_at(
    name: &str,
    point: &str,
    seed: u64,
    extra: &[&str],
) -> (TestEnv, String, GeneratedStats) {
    let mut env = TestEnv::new(name).await;
    env.start_worker_pausing_at(point);
    let mut args = vec!["--parallel", "2"];
    args.extend_from_slice(extra);
    let (job_id, stats) = start_job(&env, 400, seed, &args).await;
    env.wait_for_log(&format!("paused at {point}"), Duration::from_secs(60))
        .await;
    (env, job_id, stats)
}

/// A worker SIGKILLed where it was held at `point`; the caller checks the state the kill left
/// and starts a plain worker.
async fn kill_at(name: &str, point: &str, seed: u64) -> (TestEnv, String, GeneratedStats) {
    let (mut env, job_id, stats) = held_at(name, point, seed, &[]).await;
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

/// Nothing of the chunk is anywhere: its observations follow its commit, so no history row
/// exists that no committed chunk owns.
#[tokio::test]
async fn killed_inside_an_uncommitted_chunk_transaction() {
    let (mut env, job_id, stats) = kill_at("kill_chunk", "chunk-before-commit", 32).await;
    assert_eq!(
        env.scalar(&chunk_count("status = 'committed'"), &job_id)
            .await,
        0
    );
    let items: i64 = sqlx::query_scalar("SELECT count(*) FROM catalog_items")
        .fetch_one(&env.pg)
        .await
        .unwrap();
    assert_eq!(items, 0, "the killed transaction left nothing in Postgres");
    assert_eq!(
        raw_observations(&env, KEY).await,
        0,
        "no observation before the chunk commits"
    );
    env.start_worker();
    assert_exact_without_duplicates(&env, &job_id, &stats).await;
}

/// Committed in Postgres, not copied to ClickHouse: the retry copies from Postgres alone.
#[tokio::test]
async fn killed_between_postgres_commit_and_clickhouse_copy() {
    let (mut env, job_id, stats) = kill_at("kill_gap", "chunk-before-clickhouse", 33).await;
    let in_gap = env
        .scalar(
            &chunk_count("status = 'committed' AND NOT clickhouse_written"),
            &job_id,
        )
        .await;
    assert!(in_gap >= 1, "a chunk was committed in Postgres only");
    assert_eq!(raw_catalog_rows(&env).await, 0);
    env.start_worker();
    assert_exact_without_duplicates(&env, &job_id, &stats).await;
    let retried = env.scalar(&chunk_count("attempts > 1"), &job_id).await;
    assert!(retried >= in_gap);
}

/// The copy landed but the ledger does not say so: the retry copies the same rows again and
/// ClickHouse drops the identical block.
#[tokio::test]
async fn killed_before_the_ledger_records_the_clickhouse_copy() {
    let (mut env, job_id, stats) = kill_at("kill_ledger", "chunk-before-ledger", 39).await;
    let unconfirmed = env
        .scalar(
            &chunk_count("status = 'committed' AND NOT clickhouse_written"),
            &job_id,
        )
        .await;
    assert!(unconfirmed >= 1);
    assert!(raw_catalog_rows(&env).await > 0, "the copy had landed");
    stop_merges(&env).await;
    env.start_worker();
    assert_exact_without_duplicates(&env, &job_id, &stats).await;
}

/// Twenty items of one source; `changed` of them at another price.
fn day_of_items(changed: usize) -> String {
    let mut body = String::from("sku,name,product_url,price\n");
    for n in 0..20 {
        let price = if n < changed { "19.99" } else { "9.99" };
        body.push_str(&format!(
            "SKU-{n:02},Item {n},https://shop.example/p/{n},{price}\n"
        ));
    }
    body
}

/// Waits until the gate holds `job_id`'s chunk 0 (its copy made, its ledger not updated).
async fn held_at_gate(gate: &std::path::Path, job_id: &str) {
    let held = gate.join(format!("{job_id}.0.held"));
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !held.exists() {
        assert!(std::time::Instant::now() < deadline, "{job_id} never held");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// A chunk's copy is made, then a later job writes some of its items and copies them; the
/// worker dies before either ledger says so. The copies made again must insert nothing twice:
/// the first chunk's rows that moved on are the later job's, the rest are in ClickHouse. With
/// no deduplication window (where 10,000 other inserts leave it), no token drops a copy made
/// again: what it inserts is what it found missing.
#[tokio::test]
async fn a_copy_made_again_after_a_later_job_wrote_some_of_its_rows_inserts_nothing_twice() {
    let mut env = TestEnv::new("recopy_moved").await;
    let gate = crate::gate::gate_dir("recopy_moved");
    env.start_worker_pausing_at_with(
        "chunk-before-ledger",
        &[("ETL_PAUSE_GATE", gate.to_str().unwrap())],
    );
    let mut jobs = Vec::new();
    for (key, changed) in [("cotopaxi/day-1.csv", 0), ("cotopaxi/day-2.csv", 5)] {
        env.put(key, day_of_items(changed)).await;
        let started = env.ingest(key, &["--heartbeat-timeout", "3"]);
        assert_eq!(started.code, 0, "{}{}", started.stdout, started.stderr);
        let job_id = started.json()["job_id"].as_str().unwrap().to_owned();
        held_at_gate(&gate, &job_id).await;
        jobs.push((key, job_id));
    }
    let moved_on = env
        .scalar(
            "SELECT count(*) FROM catalog_items WHERE last_job_id <> $1",
            &jobs[0].1,
        )
        .await;
    assert_eq!(moved_on, 5, "the later job wrote the items it changed");
    stop_merges(&env).await;
    env.ch
        .query("ALTER TABLE catalog_items MODIFY SETTING non_replicated_deduplication_window = 0")
        .execute()
        .await
        .unwrap();
    env.kill_workers();
    env.start_worker();
    for (key, job_id) in &jobs {
        let summary = wait_until_final(&env, job_id).await;
        assert_eq!(summary["status"], "completed", "{summary}");
        assert_eq!(summary["reconciliation"]["ok"], true, "{summary}");
        assert_eq!(raw_observations(&env, key).await, 20, "raw observations");
    }
    assert_eq!(
        duplicated_catalog_rows(&env).await,
        0,
        "catalog rows copied twice to ClickHouse"
    );
    assert_eq!(
        raw_catalog_rows(&env).await,
        25,
        "20 items, 5 of them written twice"
    );
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

/// A zombie: an attempt frozen at `point` (no heartbeats, not killed) loses its lease to a
/// retry on another worker, which finishes the job; then the zombie wakes up and carries on.
/// It must neither commit Postgres again nor insert into ClickHouse again.
async fn zombie_at(name: &str, point: &str, seed: u64) {
    let mut env = TestEnv::new(name).await;
    // One activity slot: the frozen attempt holds it, so every retry goes to the other worker.
    env.start_worker_pausing_at_with(point, &[("ETL_MAX_CONCURRENT_ACTIVITIES", "1")]);
    let (job_id, stats) = start_job(
        &env,
        400,
        seed,
        &["--parallel", "1", "--heartbeat-timeout", "2"],
    )
    .await;
    env.wait_for_log(&format!("paused at {point}"), Duration::from_secs(60))
        .await;
    stop_merges(&env).await;
    env.start_worker();
    let summary = wait_until_final(&env, &job_id).await;
    assert_eq!(summary["status"], "completed", "{summary}");
    let zombies = env.scalar(&chunk_count("attempts >= 2"), &job_id).await;
    assert!(zombies >= 1, "a retry took over the frozen attempt's chunk");
    env.release_pause();
    env.wait_for_log("stale attempt", Duration::from_secs(60))
        .await;
    assert_exact_without_duplicates(&env, &job_id, &stats).await;
}

#[tokio::test]
async fn a_zombie_attempt_before_its_transaction_writes_nothing() {
    zombie_at("zombie_read", "chunk-after-read", 40).await;
}

#[tokio::test]
async fn a_zombie_attempt_between_commit_and_copy_inserts_nothing_twice() {
    zombie_at("zombie_copy", "chunk-before-clickhouse", 41).await;
}

#[tokio::test]
async fn a_zombie_attempt_before_the_ledger_inserts_nothing_twice() {
    zombie_at("zombie_ledger", "chunk-before-ledger", 42).await;
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

/// Holds a job with a chunk read and parsed, stops `service`, releases the job and waits until
/// a chunk has failed `attempts` times against the stopped service (with a one-second backoff
/// cap), checks the job still runs, then starts the service again: exact counts.
async fn survives_outage(name: &str, seed: u64, service: &str, attempts: i64) {
    let (env, job_id, stats) = held_at(
        name,
        "chunk-after-read",
        seed,
        &["--retry-max-interval", "1s"],
    )
    .await;
    let stopped = env.stop_service(service);
    env.release_pause();
    let sql = chunk_count(&format!("attempts >= {attempts}"));
    env.wait_for(
        &format!("a chunk to fail {attempts} times while {service} is down"),
        Duration::from_secs(300),
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

/// Longer than the old retry budget (20 attempts, about eight minutes of backoff): with no
/// attempt cap the job waits out the outage however long it is.
#[tokio::test]
async fn clickhouse_down_for_longer_than_the_old_retry_budget() {
    survives_outage("ch_down", 37, "clickhouse", 25).await;
}

#[tokio::test]
async fn s3_down_for_a_while() {
    survives_outage("s3_down", 38, "garage", 5).await;
}

/// The job's chunk transactions are held; Postgres goes away and comes back.
#[tokio::test]
async fn postgres_restarted_mid_job() {
    let (env, job_id, stats) = held_at("pg_restart", "chunk-after-read", 36, &[]).await;
    env.restart_service("postgres");
    env.release_pause();
    assert_exact_without_duplicates(&env, &job_id, &stats).await;
}

/// Temporal restarts (same database file) while `etlctl ingest --wait` waits on the job: the
/// job completes exactly, and the waiting command reattaches and prints the completed summary.
#[tokio::test]
async fn temporal_restarted_while_a_client_waits() {
    let mut env = TestEnv::new("temporal_restart").await;
    env.start_worker_pausing_at("chunk-after-read");
    let (body, stats) = catalog(GeneratorConfig {
        rows: 400,
        seed: 43,
        invalid_per_mille: 40,
        ..GeneratorConfig::default()
    });
    env.put(KEY, body).await;
    let uri = env.uri(KEY);
    let waiting = env
        .etlctl_command(&[
            "ingest",
            uri.as_str(),
            "--source",
            "cotopaxi",
            "--json",
            "--wait",
            "--chunk-bytes",
            "20000",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    env.wait_for_log("paused at chunk-after-read", Duration::from_secs(60))
        .await;
    let stopped = env.stop_service("temporal");
    stopped.start();
    env.release_pause();
    let output = waiting.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(
        output.status.code(),
        Some(0),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let printed: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(printed["status"], "completed", "{printed}");
    let job_id = printed["job_id"].as_str().unwrap().to_owned();
    assert_exact_without_duplicates(&env, &job_id, &stats).await;
}

#[tokio::test]
async fn an_object_replaced_mid_job_fails_closed() {
    let mut env = TestEnv::new("replaced").await;
    env.start_worker_pausing_at("chunk-after-read");
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
    env.wait_for_log("paused at chunk-after-read", Duration::from_secs(60))
        .await;
    let (new_body, _) = catalog(GeneratorConfig {
        rows: 800,
        seed: 4,
        sku_prefix: "NEWVERSION".to_owned(),
        ..GeneratorConfig::default()
    });
    env.put("cotopaxi/replaced.csv", new_body).await;
    env.release_pause();

    let shown = wait_until_final(&env, &job_id).await;
    assert_eq!(shown["status"], "failed", "{shown}");
    assert_eq!(shown["error_type"], "source_changed", "{shown}");
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
    // What was committed before the change is reported, exactly once, and is in ClickHouse.
    let committed = env
        .scalar(
            "SELECT coalesce(sum(rows_total), 0)::bigint FROM etl_chunks WHERE job_id = $1 AND status = 'committed'",
            &job_id,
        )
        .await;
    assert_eq!(u(&shown["rows_total"]), committed as u64);
    assert_eq!(u(&shown["chunks_clickhouse_pending"]), 0);
}
