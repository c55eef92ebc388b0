//! Every job ends, and an operator can always close or resume it; no source is ever blocked.
//! One test per way a job used to be left running forever, or to block its source.

use std::time::Duration;

use activities::model::{IngestOptions, IngestRequest, job_id_for_workflow};
use generator::GeneratorConfig;
use serde_json::Value;
use workflows::IngestInput;

use crate::{
    harness::{CommittedChunks, JobCount, TestEnv, u},
    ingest::{assert_reconciled, catalog, wait_until_final},
    proxy::StallingProxy,
};

/// A catalog object of `rows` generated rows under `key`; returns the generator's counts.
async fn put_catalog(env: &TestEnv, key: &str, rows: u64, seed: u64) -> generator::GeneratedStats {
    let (body, stats) = catalog(GeneratorConfig {
        rows,
        seed,
        invalid_per_mille: 20,
        ..GeneratorConfig::default()
    });
    env.put(key, body).await;
    stats
}

fn started_job(out: &crate::harness::CtlOutput) -> (String, String) {
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    let json = out.json();
    (
        json["job_id"].as_str().unwrap().to_owned(),
        json["workflow_id"].as_str().unwrap().to_owned(),
    )
}

/// Starts a `CatalogIngest` run with the Temporal CLI, as a schedule or another tool may, on
/// the test's task queue (`extra`: more `temporal workflow start` flags).
fn start_ingest_by_hand(env: &TestEnv, workflow_id: &str, input: &IngestInput, extra: &[&str]) {
    let queue = env.setting("ETL_TASK_QUEUE").unwrap();
    let input = serde_json::to_string(input).unwrap();
    let mut args = vec![
        "start",
        "--type",
        "CatalogIngest",
        "--task-queue",
        &queue,
        "--workflow-id",
        workflow_id,
        "--input",
        &input,
    ];
    args.extend_from_slice(extra);
    env.temporal_workflow(&args);
}

fn shown(env: &TestEnv, job_id: &str) -> Value {
    env.etlctl(&["jobs", "show", job_id, "--json"]).json()
}

/// Case 1: a workflow terminated from the Web UI. `jobs show` says so; the source's next job
/// does not wait on it (it ends the orphaned job itself, as the watchdog would); `etlctl retry`
/// runs it again.
#[tokio::test(flavor = "multi_thread")]
async fn a_terminated_workflow_never_blocks_its_source_and_is_retried() {
    let mut env = TestEnv::new("terminated").await;
    env.start_worker_pausing_at("chunk-after-read");
    let stats = put_catalog(&env, "t/1.csv", 300, 71).await;
    let (job, workflow) = started_job(&env.ingest("t/1.csv", &["--chunk-bytes", "20000"]));
    env.wait_for_log("paused at chunk-after-read", Duration::from_secs(60))
        .await;
    env.temporal_workflow(&[
        "terminate",
        "--workflow-id",
        &workflow,
        "--reason",
        "operator clicked terminate",
    ]);
    env.kill_workers();
    env.start_worker();
    let before = shown(&env, &job);
    assert_eq!(before["status"], "running", "{before}");
    assert_eq!(before["workflow_status"], "terminated", "{before}");

    put_catalog(&env, "t/2.csv", 200, 72).await;
    let second = env.ingest("t/2.csv", &["--wait", "--chunk-bytes", "20000"]);
    assert_eq!(second.json()["status"], "completed", "{}", second.stdout);
    let closed = shown(&env, &job);
    assert_eq!(closed["status"], "failed", "{closed}");
    assert_eq!(closed["error_type"], "workflow_terminated", "{closed}");
    assert!(
        closed["error"].as_str().unwrap().contains("etlctl retry"),
        "{closed}"
    );
    let report = env.etlctl(&["watchdog", "--json"]).json();
    assert_eq!(report["closed"], serde_json::json!([]), "{report}");

    let retried = env.etlctl(&["retry", &job, "--wait", "--json"]);
    assert_eq!(retried.code, 0, "{}{}", retried.stdout, retried.stderr);
    assert_eq!(retried.json()["status"], "completed", "{}", retried.stdout);
    assert_eq!(
        u(&retried.json()["rows_valid"]),
        stats.rows_valid,
        "the older object's rows are all observed once"
    );
}

/// `etlctl retry` of a job whose workflow was terminated works at once, without waiting for
/// the watchdog; `etlctl cancel` of such a job ends it `cancelled`.
#[tokio::test(flavor = "multi_thread")]
async fn retry_and_cancel_work_at_once_on_a_job_whose_workflow_is_gone() {
    let mut env = TestEnv::new("gone_at_once").await;
    env.start_worker_pausing_at("chunk-after-read");
    let stats = put_catalog(&env, "g/1.csv", 300, 73).await;
    put_catalog(&env, "g/2.csv", 100, 74).await;
    let (first, first_workflow) = started_job(&env.ingest("g/1.csv", &[]));
    let (second, second_workflow) = started_job(&env.ingest("g/2.csv", &["--partial"]));
    env.wait_for(
        "both jobs planned",
        Duration::from_secs(60),
        JobCount {
            sql: "SELECT count(*) FROM etl_jobs WHERE planned_at IS NOT NULL AND id <> $1",
            job_id: "00000000-0000-0000-0000-000000000000",
            at_least: 2,
        },
    )
    .await;
    for workflow in [&first_workflow, &second_workflow] {
        env.temporal_workflow(&["terminate", "--workflow-id", workflow]);
    }
    env.kill_workers();
    env.start_worker();
    let cancelled = env.etlctl(&["cancel", &second, "--reason", "not needed", "--json"]);
    assert_eq!(
        cancelled.code, 0,
        "{}{}",
        cancelled.stdout, cancelled.stderr
    );
    let cancelled = cancelled.json();
    assert_eq!(cancelled["status"], "cancelled", "{cancelled}");
    assert!(
        cancelled["error"].as_str().unwrap().contains("not needed"),
        "{cancelled}"
    );
    let retried = env.etlctl(&["retry", &first, "--wait", "--json"]);
    assert_eq!(retried.code, 0, "{}{}", retried.stdout, retried.stderr);
    let retried = retried.json();
    assert_eq!(retried["status"], "completed", "{retried}");
    assert_eq!(u(&retried["rows_valid"]), stats.rows_valid);
    assert_eq!(shown(&env, &first)["error_type"], "workflow_terminated");
}

/// Case 1, other ways a workflow goes: deleted (as the namespace's retention does), and timed
/// out. A reset keeps the job: its new run finishes it.
#[tokio::test(flavor = "multi_thread")]
async fn deleted_and_timed_out_workflows_are_closed_and_a_reset_one_finishes_its_job() {
    let mut env = TestEnv::new("deleted_reset").await;
    env.start_worker_pausing_at("chunk-after-read");
    put_catalog(&env, "d/1.csv", 200, 75).await;
    put_catalog(&env, "d/2.csv", 200, 76).await;
    let reset_stats = put_catalog(&env, "d/3.csv", 200, 77).await;
    let (deleted, deleted_workflow) = started_job(&env.ingest("d/1.csv", &[]));
    env.wait_for_log("paused at chunk-after-read", Duration::from_secs(60))
        .await;
    env.temporal_workflow(&["delete", "--workflow-id", &deleted_workflow, "--yes"]);

    // A workflow started with an execution timeout (as a schedule or another tool may).
    let object = env.s3.head(&env.bucket, "d/2.csv").await.unwrap();
    let workflow_id = "timed-out-ingest".to_owned();
    let input = IngestInput {
        request: IngestRequest {
            job_id: job_id_for_workflow(&workflow_id),
            source: "cotopaxi".to_owned(),
            bucket: env.bucket.clone(),
            key: "d/2.csv".to_owned(),
            etag: object.etag,
            dry_run: false,
            supersedes: None,
            options: IngestOptions {
                partial: true,
                ..IngestOptions::default()
            },
        },
        resume: None,
    };
    start_ingest_by_hand(&env, &workflow_id, &input, &["--execution-timeout", "4s"]);
    let timed_out = input.request.job_id.clone();
    env.wait_for(
        "the timed-out workflow's job row",
        Duration::from_secs(60),
        JobCount {
            sql: "SELECT count(*) FROM etl_jobs WHERE id = $1",
            job_id: &timed_out,
            at_least: 1,
        },
    )
    .await;
    while env.workflow_running(&workflow_id) {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let (reset, reset_workflow) = started_job(&env.ingest("d/3.csv", &["--partial"]));
    env.wait_for(
        "the third job's plan",
        Duration::from_secs(60),
        JobCount {
            sql: "SELECT count(*) FROM etl_jobs WHERE id = $1 AND planned_at IS NOT NULL",
            job_id: &reset,
            at_least: 1,
        },
    )
    .await;
    env.temporal_workflow(&[
        "reset",
        "--workflow-id",
        &reset_workflow,
        "--type",
        "FirstWorkflowTask",
        "--reason",
        "operator reset",
    ]);
    env.kill_workers();
    env.start_worker();

    let report = env.etlctl(&["watchdog", "--json"]).json();
    let mut closed: Vec<(String, String)> = report["closed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["job_id"].as_str().unwrap().to_owned(),
                c["workflow_status"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    closed.sort();
    let mut expected = vec![
        (deleted.clone(), "not_found".to_owned()),
        (timed_out.clone(), "timed_out".to_owned()),
    ];
    expected.sort();
    assert_eq!(closed, expected, "{report}");
    assert_eq!(shown(&env, &deleted)["error_type"], "workflow_lost");
    assert_eq!(shown(&env, &timed_out)["error_type"], "workflow_timed_out");
    let reset = wait_until_final(&env, &reset).await;
    assert_eq!(
        reset["status"], "completed",
        "the reset run finishes the job: {reset}"
    );
    assert_eq!(u(&reset["rows_valid"]), reset_stats.rows_valid);
    for job in [&deleted, &timed_out] {
        let retried = env.etlctl(&["retry", job, "--wait", "--json"]);
        assert_eq!(retried.code, 0, "{}{}", retried.stdout, retried.stderr);
        assert_eq!(retried.json()["status"], "completed");
    }
}

/// Case 2: a non-retryable ClickHouse error during a chunk's copy (a table renamed away by a
/// bad migration). The job fails, reports what ClickHouse lacks, and does not block its
/// source: once ClickHouse is fixed, the source's next job copies it.
#[tokio::test(flavor = "multi_thread")]
async fn a_broken_clickhouse_fails_the_job_and_the_next_job_copies_what_it_lacks() {
    let mut env = TestEnv::new("broken_clickhouse").await;
    env.start_worker();
    put_catalog(&env, "b/1.csv", 300, 78).await;
    let first = env.ingest("b/1.csv", &["--wait"]);
    assert_eq!(first.json()["status"], "completed");
    env.ch
        .query("RENAME TABLE catalog_item_observations TO catalog_item_observations_away")
        .execute()
        .await
        .unwrap();
    put_catalog(&env, "b/2.csv", 300, 79).await;
    let failed = env.ingest("b/2.csv", &["--wait", "--chunk-bytes", "20000"]);
    let failed = failed.json();
    assert_eq!(failed["status"], "failed", "{failed}");
    assert_eq!(
        failed["error_type"], "clickhouse_schema_mismatch",
        "{failed}"
    );
    assert!(u(&failed["chunks_clickhouse_pending"]) >= 1, "{failed}");
    env.ch
        .query("RENAME TABLE catalog_item_observations_away TO catalog_item_observations")
        .execute()
        .await
        .unwrap();
    put_catalog(&env, "b/3.csv", 300, 80).await;
    let third = env.ingest("b/3.csv", &["--wait"]).json();
    assert_eq!(third["status"], "completed", "{third}");
    assert_eq!(third["reconciliation"]["ok"], true, "{third}");
    let failed_job = failed["job_id"].as_str().unwrap();
    assert_eq!(
        u(&shown(&env, failed_job)["chunks_clickhouse_pending"]),
        0,
        "the next job copied them"
    );
    let verified = env.etlctl(&["reconcile", third["job_id"].as_str().unwrap(), "--json"]);
    assert_eq!(verified.code, 0, "{}{}", verified.stdout, verified.stderr);
}

/// Case 4: planning scans the whole object from S3 before it stores the plan; no Postgres
/// transaction may stay open across that scan (past `idle_in_transaction_session_timeout` the
/// session dies and planning starts again from byte 0). Held after the scan, with the plan not
/// stored yet, the worker has no session of the job's database in a transaction.
#[tokio::test(flavor = "multi_thread")]
async fn planning_holds_no_transaction_across_the_s3_scan() {
    let mut env = TestEnv::new("plan_no_tx").await;
    env.start_worker_pausing_at("plan");
    put_catalog(&env, "p/1.csv", 2000, 83).await;
    // A held plan sends no heartbeat: a short timeout retries it soon after the release.
    let (job, _) = started_job(&env.ingest(
        "p/1.csv",
        &["--chunk-bytes", "4096", "--heartbeat-timeout", "5"],
    ));
    env.wait_for_log("paused at plan", Duration::from_secs(60))
        .await;
    let database: String = sqlx::query_scalar("SELECT current_database()")
        .fetch_one(&env.pg)
        .await
        .unwrap();
    let in_transaction: Vec<(i32, String)> = sqlx::query_as(
        "SELECT pid, coalesce(query, '') FROM pg_stat_activity
         WHERE datname = $1 AND pid <> pg_backend_pid()
           AND (state LIKE 'idle in transaction%' OR xact_start IS NOT NULL)",
    )
    .bind(&database)
    .fetch_all(&env.pg)
    .await
    .unwrap();
    assert!(
        in_transaction.is_empty(),
        "sessions in a transaction while the plan waits after its scan: {in_transaction:?}"
    );
    env.release_pause();
    let done = wait_until_final(&env, &job).await;
    assert_eq!(done["status"], "completed", "{done}");
}

/// Case 5: a plan attempt that outlives its heartbeat timeout and ends after a retry has
/// stored the plan, and the job has run on it, changes nothing of that plan: not the shared
/// mention hashes a chunk commits by, not the time it was planned.
#[tokio::test(flavor = "multi_thread")]
async fn a_plan_attempt_that_ends_after_the_plan_is_stored_changes_nothing() {
    let mut env = TestEnv::new("stale_plan").await;
    // One activity at a time: while its plan attempt is held, this worker takes no other.
    env.start_worker_pausing_at_with("plan", &[("ETL_MAX_CONCURRENT_ACTIVITIES", "1")]);
    let row = |sku: &str| format!("{sku},Name {sku},https://shop.example/p/{sku},10.00\n");
    let mut body = String::from("sku,name,product_url,price\n");
    for n in 0..20 {
        let sku = if n == 0 || n == 19 {
            "X-001".to_owned()
        } else {
            format!("S-{n:03}")
        };
        body.push_str(&row(&sku));
    }
    env.put("z/1.csv", body).await;
    let chunk_bytes = (10 * row("X-001").len()).to_string();
    let (job, _) = started_job(&env.ingest(
        "z/1.csv",
        &["--chunk-bytes", &chunk_bytes, "--heartbeat-timeout", "5"],
    ));
    env.wait_for_log("paused at plan", Duration::from_secs(60))
        .await;
    env.start_worker();
    let done = wait_until_final(&env, &job).await;
    assert_eq!(done["status"], "completed", "{done}");
    let plan = || async {
        sqlx::query_as::<_, (i32, Option<Vec<i64>>, Option<Vec<i64>>, String)>(
            "SELECT c.chunk_index, c.shared_hashes, c.mention_hashes, j.planned_at::text
             FROM etl_chunks c JOIN etl_jobs j ON j.id = c.job_id
             WHERE c.job_id = $1::uuid ORDER BY c.chunk_index",
        )
        .bind(&job)
        .fetch_all(&env.pg)
        .await
        .unwrap()
    };
    let stored = plan().await;
    assert_eq!(stored.len(), 2, "{stored:?}");
    assert!(
        stored
            .iter()
            .all(|(_, shared, _, _)| shared.as_ref().is_some_and(|s| s.len() == 1)),
        "X-001 is in both chunks: {stored:?}"
    );
    env.release_pause();
    // The held attempt ends; Temporal refuses its result, a retry having completed the plan.
    env.wait_for_log("not found on completion", Duration::from_secs(60))
        .await;
    assert_eq!(plan().await, stored);
}

/// Case 3: ClickHouse stops answering one worker (a stalled connection) while it copies a
/// committed chunk. No Postgres transaction or lock is held meanwhile: a newer job of the same
/// source registers its snapshot and commits all its chunks, and the stalled chunk's retry on a
/// healthy worker proceeds.
#[tokio::test(flavor = "multi_thread")]
async fn a_stalled_clickhouse_holds_no_postgres_lock_over_other_jobs() {
    let mut env = TestEnv::new("stalled").await;
    env.start_worker();
    let clickhouse: std::net::SocketAddr = env
        .setting("CLICKHOUSE_URL")
        .unwrap()
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .parse()
        .expect("CLICKHOUSE_URL host:port");
    let proxy = StallingProxy::start(clickhouse).await;
    let stalled_queue = format!("{}-stalled", env.setting("ETL_TASK_QUEUE").unwrap());
    env.start_worker_alone_with(&[
        ("CLICKHOUSE_URL", &proxy.url()),
        ("ETL_TASK_QUEUE", &stalled_queue),
    ]);
    put_catalog(&env, "s/1.csv", 300, 81).await;
    assert_eq!(
        env.ingest("s/1.csv", &["--wait"]).json()["status"],
        "completed"
    );

    proxy.freeze();
    let stats = put_catalog(&env, "s/2.csv", 300, 82).await;
    let on_stalled = [("ETL_TASK_QUEUE", stalled_queue.as_str())];
    let (stalled, _) = started_job(&env.etlctl_with(
        &on_stalled,
        &[
            "ingest",
            &env.uri("s/2.csv"),
            "--source",
            "cotopaxi",
            "--json",
            "--chunk-bytes",
            "20000",
            "--parallel",
            "1",
            "--heartbeat-timeout",
            "3",
        ],
    ));
    env.wait_for(
        "a chunk committed in Postgres and stuck on its ClickHouse copy",
        Duration::from_secs(60),
        CommittedChunks {
            job_id: &stalled,
            at_least: 1,
        },
    )
    .await;
    let open_transactions: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_stat_activity
         WHERE datname = current_database() AND state LIKE 'idle in transaction%'",
    )
    .fetch_one(&env.pg)
    .await
    .unwrap();
    assert_eq!(open_transactions, 0, "no transaction waits on ClickHouse");

    let newer_stats = put_catalog(&env, "s/3.csv", 300, 83).await;
    let (newer, _) = started_job(&env.ingest("s/3.csv", &["--retry-max-interval", "1s"]));
    env.wait_for(
        "the newer job to register its snapshot and commit every chunk",
        Duration::from_secs(60),
        JobCount {
            sql: "SELECT count(*) FROM etl_jobs j WHERE j.id = $1 AND j.planned_at IS NOT NULL
                    AND NOT EXISTS (SELECT 1 FROM etl_chunks c
                                    WHERE c.job_id = j.id AND c.status <> 'committed')",
            job_id: &newer,
            at_least: 1,
        },
    )
    .await;

    // The stalled worker dies; its chunk is retried on a healthy worker of its queue.
    env.kill_worker(1);
    env.start_worker_alone_with(&[("ETL_TASK_QUEUE", &stalled_queue)]);
    let stalled = wait_until_final(&env, &stalled).await;
    assert_eq!(stalled["status"], "completed", "{stalled}");
    assert_eq!(u(&stalled["rows_valid"]), stats.rows_valid);
    let newer = wait_until_final(&env, &newer).await;
    assert_reconciled(&env, &newer, &newer_stats).await;
    drop(proxy);
}

/// Case 6: the Web UI's outcome is the job's status, also when a failed job's workflow id is
/// started again (a schedule, a parent, an operator).
#[tokio::test(flavor = "multi_thread")]
async fn the_web_ui_outcome_is_the_job_status_when_a_failed_job_runs_again() {
    let mut env = TestEnv::new("outcome").await;
    env.start_worker();
    env.put("o/bad.csv", "sku,product_url\nA,https://shop.example/a\n")
        .await;
    let failed = env.ingest("o/bad.csv", &["--wait"]).json();
    assert_eq!(failed["status"], "failed", "{failed}");
    let workflow = failed["workflow_id"].as_str().unwrap();
    let job = failed["job_id"].as_str().unwrap();
    let object = env.s3.head(&env.bucket, "o/bad.csv").await.unwrap();
    let input = IngestInput {
        request: IngestRequest {
            job_id: job.to_owned(),
            source: "cotopaxi".to_owned(),
            bucket: env.bucket.clone(),
            key: "o/bad.csv".to_owned(),
            etag: object.etag,
            dry_run: false,
            supersedes: None,
            options: IngestOptions::default(),
        },
        resume: None,
    };
    start_ingest_by_hand(&env, workflow, &input, &[]);
    let runs = crate::observability::listed(
        &env,
        &format!("CatalogJobId = \"{job}\" AND CatalogOutcome = \"failed\""),
        2,
    )
    .await;
    assert_eq!(runs.len(), 2, "both runs say failed: {runs:?}");
    let completed = env.temporal_list(&format!(
        "CatalogJobId = \"{job}\" AND CatalogOutcome = \"completed\""
    ));
    assert!(completed.is_empty(), "{completed:?}");
    assert_eq!(shown(&env, job)["status"], "failed");
}
