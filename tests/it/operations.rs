//! Operations end to end: per-source runs and the manifest, schedules, retry / repair and the
//! supersession chain, reconcile, cancel, retention and the audit, against the real stack.

use std::time::Duration;

use generator::{GeneratedStats, GeneratorConfig};
use serde_json::Value;

use crate::{
    harness::{CommittedChunks, TestEnv, generated, u},
    ingest::observations,
};

fn catalog(rows: u64, seed: u64, prefix: &str) -> (Vec<u8>, GeneratedStats) {
    generated(&GeneratorConfig {
        rows,
        seed,
        sku_prefix: prefix.to_owned(),
        ..GeneratorConfig::default()
    })
}

fn str_of(value: &Value) -> &str {
    value
        .as_str()
        .unwrap_or_else(|| panic!("expected a string, got {value}"))
}

fn by_key<'a>(report: &'a Value, key: &str) -> &'a Value {
    report["objects"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["key"] == key)
        .unwrap_or_else(|| panic!("{key} not in {report}"))
}

async fn manifest_rows(env: &TestEnv) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM ingested_objects")
        .fetch_one(&env.pg)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn ingest_source_skips_ingested_versions_and_takes_new_ones() {
    let mut env = TestEnv::new("src_manifest").await;
    env.start_worker();
    let source = env.source_name();
    let (a, a_stats) = catalog(300, 1, "A");
    let (b, b_stats) = catalog(200, 2, "B");
    env.put("daily/2026-11-01.csv", a).await;
    env.put("daily/2026-11-02.csv", b).await;
    let prefix = env.uri("daily/");
    let run = |env: &TestEnv| {
        env.etlctl(&[
            "ingest-source",
            "--source",
            &source,
            "--uri",
            &prefix,
            "--wait",
            "--json",
        ])
    };

    let first = run(&env);
    assert_eq!(first.code, 0, "{}\n{}", first.stdout, first.stderr);
    let report = first.json();
    assert_eq!(
        (u(&report["started"]), u(&report["completed"])),
        (2, 2),
        "{report}"
    );
    assert_eq!(u(&report["skipped"]), 0);
    // Oldest first (same second here, so key order).
    let keys: Vec<&str> = report["objects"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| str_of(&o["key"]))
        .collect();
    assert_eq!(keys, ["daily/2026-11-01.csv", "daily/2026-11-02.csv"]);
    for (key, stats) in [
        ("daily/2026-11-01.csv", &a_stats),
        ("daily/2026-11-02.csv", &b_stats),
    ] {
        let object = by_key(&report, key);
        assert_eq!(object["status"], "completed", "{object}");
        let job = env
            .etlctl(&["jobs", "show", str_of(&object["job_id"]), "--json"])
            .json();
        assert_eq!(u(&job["rows_total"]), stats.rows_total);
        assert_eq!(u(&job["items"]), stats.distinct_valid_skus);
    }
    assert_eq!(manifest_rows(&env).await, 2);

    // Nothing new: every version is skipped (counted, not listed one by one).
    let second = run(&env).json();
    assert_eq!(
        (
            u(&second["started"]),
            u(&second["skipped"]),
            u(&second["listed"])
        ),
        (0, 2, 2),
        "{second}"
    );
    assert_eq!(second["objects"].as_array().unwrap().len(), 0);

    // A new version of the same key is new.
    let (a2, a2_stats) = catalog(250, 3, "A");
    let a2_meta = env.put("daily/2026-11-01.csv", a2).await;
    let third = run(&env).json();
    assert_eq!(
        (u(&third["started"]), u(&third["skipped"])),
        (1, 1),
        "{third}"
    );
    let renewed = by_key(&third, "daily/2026-11-01.csv");
    assert_eq!(renewed["status"], "completed");
    assert_eq!(str_of(&renewed["etag"]), a2_meta.etag);
    assert_ne!(
        renewed["job_id"],
        by_key(&report, "daily/2026-11-01.csv")["job_id"]
    );
    let job = env
        .etlctl(&["jobs", "show", str_of(&renewed["job_id"]), "--json"])
        .json();
    assert_eq!(u(&job["rows_total"]), a2_stats.rows_total);
    assert_eq!(manifest_rows(&env).await, 3);

    // jobs list: newest first, filtered.
    let listed = env
        .etlctl(&[
            "jobs",
            "list",
            "--source",
            &source,
            "--status",
            "completed",
            "--json",
        ])
        .json();
    let listed = listed.as_array().unwrap();
    assert_eq!(listed.len(), 3);
    assert_eq!(listed[0]["job_id"], renewed["job_id"]);
    let none = env
        .etlctl(&[
            "jobs", "list", "--source", &source, "--status", "failed", "--json",
        ])
        .json();
    assert_eq!(none.as_array().unwrap().len(), 0);
    let bad = env.etlctl(&["jobs", "list", "--status", "done"]);
    bad.assert_refused(2, "--status must be one of");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bad_object_fails_its_own_job_only() {
    let mut env = TestEnv::new("src_isolation").await;
    env.start_worker();
    let source = env.source_name();
    let (good1, good1_stats) = catalog(150, 4, "G");
    let (good2, _) = catalog(120, 5, "H");
    env.put("in/1-good.csv", good1).await;
    env.put("in/2-bad.csv", "title,cost\nshoe,12\n").await;
    env.put("in/3-good.csv", good2).await;
    let prefix = env.uri("in/");
    let args = [
        "ingest-source",
        "--source",
        &source,
        "--uri",
        &prefix,
        "--wait",
        "--json",
        "--parallel-objects",
        "3",
    ];
    let out = env.etlctl(&args);
    assert_eq!(
        out.code, 1,
        "a failed child makes the run exit 1:\n{}",
        out.stdout
    );
    let report = out.json();
    assert_eq!(
        (u(&report["completed"]), u(&report["failed"])),
        (2, 1),
        "{report}"
    );
    let bad = by_key(&report, "in/2-bad.csv");
    assert_eq!(bad["status"], "failed");
    assert!(str_of(&bad["error"]).contains("header"), "{bad}");
    let good = by_key(&report, "in/1-good.csv");
    assert_eq!(good["status"], "completed");
    let job = env
        .etlctl(&["jobs", "show", str_of(&good["job_id"]), "--json"])
        .json();
    assert_eq!(u(&job["rows_valid"]), good1_stats.rows_valid);

    // The next tick does not hammer the bad version again: that takes `etlctl retry`.
    let again = env.etlctl(&args).json();
    assert_eq!(u(&again["started"]), 0, "{again}");
    assert_eq!(
        (u(&again["failed_earlier"]), u(&again["skipped"])),
        (1, 2),
        "{again}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn schedules_create_trigger_describe_list_delete() {
    let mut env = TestEnv::new("schedules").await;
    env.start_worker();
    let source = env.source_name();
    let schedule_id = format!("test-{source}");
    let (body, stats) = catalog(100, 6, "S");
    env.put("feed/day.csv", body).await;
    let prefix = env.uri("feed/");
    let create = |extra: &[&str]| {
        let mut args = vec![
            "schedule",
            "create",
            "--source",
            &source,
            "--uri",
            &prefix,
            "--cron",
            "0 9 * * *",
            "--schedule-id",
            &schedule_id,
            "--json",
        ];
        args.extend_from_slice(extra);
        env.etlctl(&args)
    };
    let created = create(&[]);
    assert_eq!(created.code, 0, "{}", created.stderr);
    assert_eq!(created.json()["schedule_id"], schedule_id.as_str());
    let again = create(&[]);
    again.assert_refused(2, "already exists; pass --update");
    let updated = create(&["--update", "--catchup-window", "30m", "--pause-on-failure"]);
    assert_eq!(updated.code, 0, "{}", updated.stderr);
    assert_eq!(updated.json()["outcome"], "updated");

    let describe = || {
        env.etlctl(&["schedule", "describe", &schedule_id, "--json"])
            .json()
    };
    let description = describe();
    assert_eq!(
        u(&description["catchup_window_secs"]),
        1800,
        "{description}"
    );
    assert_eq!(description["pause_on_failure"], true);
    assert!(str_of(&description["overlap_policy"]).starts_with("skip"));
    assert_eq!(description["workflow_type"], "SourceIngest");
    assert_eq!(description["input"]["source"], source.as_str());
    assert_eq!(description["timezone"], "UTC");

    let trigger = env.etlctl(&["schedule", "trigger", &schedule_id]);
    assert_eq!(trigger.code, 0, "{}", trigger.stderr);
    env.wait_for(
        "the triggered run to complete the job",
        Duration::from_secs(120),
        CompletedJobs { at_least: 1 },
    )
    .await;
    let rows: i64 =
        sqlx::query_scalar("SELECT rows_total FROM etl_jobs WHERE status = 'completed'")
            .fetch_one(&env.pg)
            .await
            .unwrap();
    assert_eq!(rows as u64, stats.rows_total);
    assert!(u(&describe()["actions_taken"]) >= 1);

    // Listing goes through Temporal's visibility store, which follows shortly after writes.
    let listed = || {
        let list = env.etlctl(&["schedule", "list", "--json"]).json();
        list.as_array()
            .unwrap()
            .iter()
            .any(|s| s["schedule_id"] == schedule_id.as_str())
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !listed() {
        assert!(
            std::time::Instant::now() < deadline,
            "schedule never listed"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let pause = env.etlctl(&["schedule", "pause", &schedule_id, "--note", "vendor outage"]);
    assert_eq!(pause.code, 0, "{}", pause.stderr);
    let paused = describe();
    assert_eq!(
        (paused["paused"].clone(), paused["note"].clone()),
        (Value::Bool(true), Value::from("vendor outage"))
    );
    assert_eq!(env.etlctl(&["schedule", "unpause", &schedule_id]).code, 0);
    assert_eq!(describe()["paused"], false);

    let retention_id = format!("{schedule_id}-retention");
    let retention = env.etlctl(&[
        "schedule",
        "create-retention",
        "--cron",
        "0 3 * * *",
        "--days",
        "30",
        "--schedule-id",
        &retention_id,
        "--json",
    ]);
    assert_eq!(retention.code, 0, "{}", retention.stderr);
    let retention = env
        .etlctl(&["schedule", "describe", &retention_id, "--json"])
        .json();
    assert_eq!(retention["workflow_type"], "Retention");
    assert_eq!(retention["input"]["days"], 30);
    assert_eq!(retention["calendar"][0], "0 3 * * *");
    assert_eq!(env.etlctl(&["schedule", "delete", &retention_id]).code, 0);

    let deleted = env.etlctl(&["schedule", "delete", &schedule_id]);
    assert_eq!(deleted.code, 0, "{}", deleted.stderr);
    let gone = env.etlctl(&["schedule", "describe", &schedule_id]);
    gone.assert_refused(2, "no such schedule");
}

struct CompletedJobs {
    at_least: i64,
}

impl crate::harness::AsyncCheck for CompletedJobs {
    async fn check(&mut self, pg: &sqlx::PgPool) -> bool {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM etl_jobs WHERE status = 'completed'")
            .fetch_one(pg)
            .await
            .map(|n| n >= self.at_least)
            .unwrap_or(false)
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn retry_checks_the_etag_and_links_the_jobs() {
    let mut env = TestEnv::new("retry").await;
    env.start_worker();
    // A version that fails (its header lacks required columns).
    env.put("r.csv", "title,cost\nshoe,12\n").await;
    let policies = [
        "--max-job-duration",
        "48h",
        "--retry-max-interval",
        "7s",
        "--heartbeat-timeout",
        "45",
        "--history-event-budget",
        "5000",
    ];
    let failed = env.ingest("r.csv", &[&["--wait"][..], &policies].concat());
    assert_eq!(failed.code, 1);
    let failed_id = str_of(&failed.json()["job_id"]).to_owned();

    // The scraper fixes the file: the object has changed since the failed job.
    let (body, stats) = catalog(400, 7, "R");
    env.put("r.csv", body).await;
    let refused = env.etlctl(&["retry", &failed_id, "--wait", "--json"]);
    refused.assert_refused(3, "changed since the job");
    refused.assert_refused(3, "Re-run with --force");
    let unlinked = env.etlctl(&["jobs", "show", &failed_id, "--json"]).json();
    assert_eq!(unlinked["superseded_by_job_id"], Value::Null);

    let forced = env.etlctl(&["retry", &failed_id, "--force", "--wait", "--json"]);
    assert_eq!(forced.code, 0, "{}\n{}", forced.stdout, forced.stderr);
    let retried = forced.json();
    assert_eq!(retried["status"], "completed", "{retried}");
    assert_eq!(u(&retried["rows_total"]), stats.rows_total);
    assert_eq!(retried["supersedes_job_id"], failed_id.as_str());
    let retried_id = str_of(&retried["job_id"]).to_owned();
    let old = env.etlctl(&["jobs", "show", &failed_id, "--json"]).json();
    assert_eq!(old["superseded_by_job_id"], retried_id.as_str());
    assert!(old["superseded_at"].is_string());
    let text = env.etlctl(&["jobs", "show", &failed_id]).stdout;
    assert!(
        text.contains(&format!("superseded by  {retried_id}")),
        "{text}"
    );

    // Idempotent: the same retry again finds the same successor.
    let twice = env.etlctl(&["retry", &failed_id, "--json"]).json();
    assert_eq!(twice["job_id"], retried_id.as_str());
    // Retry is for failed jobs; repair is for completed ones.
    let wrong = env.etlctl(&["retry", &retried_id]);
    wrong.assert_refused(2, "use `etlctl repair`");

    // Repair re-ingests from scratch; the catalog has no duplicate afterwards.
    let repaired = env.etlctl(&["repair", &retried_id, "--wait", "--json"]);
    assert_eq!(repaired.code, 0, "{}\n{}", repaired.stdout, repaired.stderr);
    let repaired = repaired.json();
    assert_eq!(repaired["status"], "completed");
    assert_eq!(repaired["supersedes_job_id"], retried_id.as_str());
    assert_eq!(repaired["reconciliation"]["ok"], true);
    let items: i64 = sqlx::query_scalar("SELECT count(*) FROM catalog_items")
        .fetch_one(&env.pg)
        .await
        .unwrap();
    assert_eq!(items as u64, stats.distinct_valid_skus);
    // Each successor runs under the policies its first job was started with.
    for job in [&retried_id, str_of(&repaired["job_id"])] {
        let (heartbeat, budget, backoff, duration, deadline_after): (i64, i32, i64, i64, f64) =
            sqlx::query_as(
                "SELECT heartbeat_timeout_secs, history_event_budget, retry_max_interval_secs,
                        max_job_duration_secs,
                        extract(epoch FROM deadline_at - created_at)::float8
                 FROM etl_jobs WHERE id = $1::uuid",
            )
            .bind(job)
            .fetch_one(&env.pg)
            .await
            .unwrap();
        assert_eq!(
            (heartbeat, budget, backoff, duration),
            (45, 5000, 7, 48 * 3600)
        );
        assert!(
            (48.0 * 3600.0 - 60.0..48.0 * 3600.0 + 60.0).contains(&deadline_after),
            "deadline {deadline_after} s after the job's start"
        );
    }
    // One observation per row of the object version, however many jobs ingested it, and no
    // physical duplicate either: the repair's inserts carried the same tokens.
    assert_eq!(observations(&env, "r.csv").await, stats.rows_valid);
    assert_eq!(
        crate::ingest::raw_observations(&env, "r.csv").await,
        stats.rows_valid
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn reconcile_recounts_and_detects_a_corrupted_count() {
    let mut env = TestEnv::new("reconcile").await;
    env.start_worker();
    let (body, stats) = catalog(900, 8, "C");
    env.put("c.csv", body).await;
    let done = env
        .ingest("c.csv", &["--wait", "--chunk-bytes", "20000"])
        .json();
    let job_id = str_of(&done["job_id"]).to_owned();

    let clean = env.etlctl(&["reconcile", &job_id, "--json"]);
    assert_eq!(clean.code, 0, "{}\n{}", clean.stdout, clean.stderr);
    let clean = clean.json();
    assert_eq!(clean["ok"], true, "{clean}");
    assert_eq!(u(&clean["object"]["rows_total"]), stats.rows_total);
    assert_eq!(u(&clean["object"]["rows_valid"]), stats.rows_valid);
    assert_eq!(u(&clean["object"]["rows_invalid"]), stats.rows_invalid);
    assert_eq!(u(&clean["object"]["items"]), stats.distinct_valid_skus);
    assert_eq!(u(&clean["clickhouse"]["items"]), stats.distinct_valid_skus);
    let shown = env.etlctl(&["jobs", "show", &job_id, "--json"]).json();
    assert!(shown["verified_at"].is_string());
    assert_eq!(shown["verified_ok"], true);

    assert_eq!(clean["catalog"]["ok"], true, "{clean}");
    assert_eq!(
        u(&clean["catalog"]["postgres"]["listed"]),
        stats.distinct_valid_skus
    );
    assert_eq!(
        u(&clean["catalog"]["clickhouse"]["listed"]),
        stats.distinct_valid_skus
    );

    // One price changed in Postgres behind the pipeline's back: reconcile names the store.
    let sku: String = sqlx::query_scalar(
        "SELECT sku FROM catalog_items WHERE price IS NOT NULL ORDER BY sku LIMIT 1",
    )
    .fetch_one(&env.pg)
    .await
    .unwrap();
    sqlx::query("UPDATE catalog_items SET price = price + 1 WHERE sku = $1")
        .bind(&sku)
        .execute(&env.pg)
        .await
        .unwrap();
    let broken = env.etlctl(&["reconcile", &job_id, "--json"]);
    assert_eq!(broken.code, 1, "{}", broken.stdout);
    let broken = broken.json();
    assert_eq!(
        u(&broken["catalog"]["postgres"]["inconsistent"]),
        1,
        "{broken}"
    );
    assert_eq!(u(&broken["catalog"]["clickhouse"]["inconsistent"]), 0);
    assert_eq!(u(&broken["catalog"]["differing_items"]), 1, "{broken}");
    let deltas = broken["deltas"].to_string();
    assert!(
        deltas.contains("Postgres: 1 item(s) no longer match"),
        "{deltas}"
    );
    sqlx::query("UPDATE catalog_items SET price = price - 1 WHERE sku = $1")
        .bind(&sku)
        .execute(&env.pg)
        .await
        .unwrap();

    // The same in ClickHouse.
    env.ch
        .query(
            "ALTER TABLE catalog_items UPDATE price = price + 1 WHERE sku = ?
             SETTINGS mutations_sync = 2",
        )
        .bind(&sku)
        .execute()
        .await
        .unwrap();
    let broken = env.etlctl(&["reconcile", &job_id, "--json"]).json();
    assert_eq!(broken["ok"], false);
    assert_eq!(
        u(&broken["catalog"]["clickhouse"]["inconsistent"]),
        1,
        "{broken}"
    );
    assert!(
        broken["deltas"]
            .to_string()
            .contains("ClickHouse: 1 item(s) no longer match"),
        "{broken}"
    );
    env.ch
        .query(
            "ALTER TABLE catalog_items UPDATE price = price - 1 WHERE sku = ?
             SETTINGS mutations_sync = 2",
        )
        .bind(&sku)
        .execute()
        .await
        .unwrap();

    // Three items lost in Postgres, as a bad manual fix would: the job's items and the
    // catalog comparison both see it.
    sqlx::query(
        "DELETE FROM catalog_items WHERE sku IN
             (SELECT sku FROM catalog_items ORDER BY sku LIMIT 3)",
    )
    .execute(&env.pg)
    .await
    .unwrap();
    let broken = env.etlctl(&["reconcile", &job_id, "--json"]);
    assert_eq!(broken.code, 1, "{}", broken.stdout);
    let broken = broken.json();
    assert_eq!(broken["ok"], false);
    let deltas = broken["deltas"].to_string();
    assert!(deltas.contains("delta -3"), "{deltas}");
    assert_eq!(
        u(&broken["postgres"]["items"]),
        stats.distinct_valid_skus - 3
    );
    assert_eq!(u(&broken["catalog"]["differing_items"]), 3, "{broken}");
    let shown = env.etlctl(&["jobs", "show", &job_id, "--json"]).json();
    assert_eq!(shown["verified_ok"], false);
    let text = env.etlctl(&["reconcile", &job_id]);
    assert!(text.stdout.contains("MISMATCH items"), "{}", text.stdout);
}

#[tokio::test(flavor = "multi_thread")]
async fn cancel_stops_between_chunks_and_keeps_committed_ones() {
    let mut env = TestEnv::new("cancel").await;
    env.start_worker();
    let (body, _) = catalog(3000, 9, "X");
    env.put("x.csv", body).await;
    let started = env
        .ingest("x.csv", &["--chunk-bytes", "8000", "--parallel", "1"])
        .json();
    let job_id = str_of(&started["job_id"]).to_owned();
    env.wait_for(
        "a first committed chunk",
        Duration::from_secs(60),
        CommittedChunks {
            job_id: &job_id,
            at_least: 1,
        },
    )
    .await;
    let cancelled = env.etlctl(&["cancel", &job_id, "--reason", "wrong file", "--json"]);
    assert_eq!(
        cancelled.code, 0,
        "{}\n{}",
        cancelled.stdout, cancelled.stderr
    );
    let summary = cancelled.json();
    assert_eq!(summary["status"], "cancelled", "{summary}");
    assert!(
        str_of(&summary["error"]).contains("wrong file"),
        "{summary}"
    );
    let committed = u(&summary["chunks_committed"]);
    assert!(
        committed >= 1 && committed < u(&summary["chunks"]),
        "{summary}"
    );
    // What Postgres committed is in ClickHouse too: the chunk in flight finished whole.
    assert_eq!(u(&summary["chunks_clickhouse_pending"]), 0);
    assert_eq!(observations(&env, "x.csv").await, u(&summary["rows_valid"]));
    let details = env
        .etlctl(&["jobs", "show", &job_id, "--chunks", "--json"])
        .json();
    let chunks = details["chunk_details"].as_array().unwrap();
    assert_eq!(chunks.len() as u64, u(&summary["chunks"]));
    for pair in chunks.windows(2) {
        assert_eq!(
            pair[0]["byte_end"], pair[1]["byte_start"],
            "chunks are contiguous"
        );
    }
    let done = chunks.iter().filter(|c| c["status"] == "committed").count() as u64;
    assert_eq!(done, committed);
    assert!(
        chunks
            .iter()
            .filter(|c| c["status"] == "committed")
            .all(|c| u(&c["attempts"]) >= 1 && c["duration_ms"].is_u64())
    );

    let not_running = env.etlctl(&["cancel", &job_id]);
    not_running.assert_refused(2, "not running");
}

#[tokio::test(flavor = "multi_thread")]
async fn retention_deletes_old_rows_in_batches_up_to_the_cap() {
    let mut env = TestEnv::new("retention").await;
    env.start_worker();
    let (body, stats) = generated(&GeneratorConfig {
        rows: 400,
        seed: 10,
        invalid_per_mille: 150,
        ..GeneratorConfig::default()
    });
    assert!(stats.rows_invalid > 40, "{stats:?}");
    env.put("old.csv", body).await;
    env.ingest("old.csv", &["--wait"]);
    // 30 logs aged past 90 days; the rest are fresh.
    sqlx::query(
        "UPDATE invalid_item_logs SET created_at = now() - interval '100 days'
         WHERE id IN (SELECT id FROM invalid_item_logs ORDER BY id LIMIT 30)",
    )
    .execute(&env.pg)
    .await
    .unwrap();
    let run = |env: &TestEnv| {
        let out = env.etlctl(&[
            "retention",
            "run",
            "--days",
            "90",
            "--batch-size",
            "7",
            "--max-rows",
            "20",
            "--json",
        ]);
        assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
        out.json()
    };
    let first = run(&env);
    assert_eq!(
        (u(&first["deleted"]), first["capped"].clone()),
        (20, Value::Bool(true)),
        "{first}"
    );
    assert_eq!(u(&first["batches"]), 3, "7 + 7 + 6");
    let second = run(&env);
    assert_eq!(
        (u(&second["deleted"]), second["capped"].clone()),
        (10, Value::Bool(false)),
        "{second}"
    );
    assert_eq!(u(&second["batches"]), 2, "7 + 3");
    let (old, total): (i64, i64) = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE created_at < now() - interval '90 days'), count(*)
         FROM invalid_item_logs",
    )
    .fetch_one(&env.pg)
    .await
    .unwrap();
    assert_eq!((old, total as u64), (0, stats.rows_invalid - 30));
    let third = run(&env);
    assert_eq!((u(&third["deleted"]), u(&third["batches"])), (0, 1));
}

#[tokio::test(flavor = "multi_thread")]
async fn audit_flags_a_crafted_catalog() {
    let mut env = TestEnv::new("audit").await;
    env.start_worker();
    let crafted = "\
sku,name,brand,price,weight,weight_unit,product_url,image_urls,availability
a1,Shoe 1,,1.299,500,g,https://shop.example.com/p/1,https://img.example.com/1.jpg,in stock
a2,Shoe 2,,2.499,500,g,https://shop.example.com/p/2,https://img.example.com/2.jpg,in stock
a3,Shoe 3,,10.00,0.5,g,https://shop.example.com/p/3,https://img.example.com/3.jpg,in stock
a4,Shoe 4,,20.00,200,kg,https://shop.example.com/p/4,https://img.example.com/4.jpg,in stock
a5,Shoe 5,,30.00,500,g,https://shop.example.com/p/5,https://img.example.com/5.jpg,in stock
a6,Shoe 6,,40.00,500,g,https://shop.example.com/p/6,https://img.example.com/6.jpg,in stock
a7,Shoe 7,Acme,50.00,500,g,https://shop.example.com/p/7,https://img.example.com/7.jpg,in stock
a8,Shoe 8,Acme,60.00,500,g,https://shop.example.com/p/8,https://img.example.com/8.jpg,in stock
a9,Shoe 9,Acme,,500,g,https://shop.example.com/p/9,https://img.example.com/9.jpg,in stock
a10,Shoe 10,Acme,,500,g,https://shop.example.com/p/10,https://img.example.com/10.jpg,in stock
";
    env.put("crafted.csv", crafted).await;
    let crafted_source = env.source_name();
    let uri = env.uri("crafted.csv");
    let out = env.etlctl(&[
        "ingest",
        &uri,
        "--source",
        &crafted_source,
        "--wait",
        "--json",
    ]);
    assert_eq!(out.json()["rows_valid"], 10, "{}", out.stdout);
    let (clean_body, _) = catalog(300, 11, "K");
    env.put("clean.csv", clean_body).await;
    let clean_source = format!("{crafted_source}-clean");
    let uri = env.uri("clean.csv");
    assert_eq!(
        env.etlctl(&["ingest", &uri, "--source", &clean_source, "--wait"])
            .code,
        0
    );

    let out = env.etlctl(&["audit", "--source", &crafted_source, "--json", "--strict"]);
    assert_eq!(out.code, 1, "--strict exits 1 on flags:\n{}", out.stdout);
    let report = out.json();
    let audit = &report["sources"][0];
    assert_eq!(audit["source"], crafted_source.as_str());
    assert_eq!(u(&audit["items"]), 10);
    assert_eq!(u(&audit["suspicious_prices"]), 2);
    assert_eq!(u(&audit["weights_out_of_range"]), 2);
    assert_eq!(
        audit["median_price"], 25.0,
        "median of 1.299, 2.499, 10 .. 60"
    );
    let share = |field: &str| {
        audit["null_shares"]
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["field"] == field)
            .unwrap()["share"]
            .as_f64()
            .unwrap()
    };
    assert_eq!(
        (share("price"), share("brand"), share("images")),
        (0.2, 0.6, 0.0)
    );
    assert_eq!(share("description"), 1.0);
    let mut flags: Vec<&str> = audit["flags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| str_of(&f["check"]))
        .collect();
    flags.sort();
    assert_eq!(
        flags,
        [
            "null_share.brand",
            "null_share.description",
            "null_share.price",
            "suspicious_prices",
            "weights_out_of_range"
        ],
        "{audit}"
    );
    assert!(report["thresholds"]["max_suspicious_price_share"].is_f64());
    assert!(audit["days_since_last_ingest"].as_f64().unwrap() < 1.0);
    assert_eq!(audit["last_job_invalid_rate"], 0.0);

    let all = env.etlctl(&["audit", "--json"]).json();
    assert_eq!(all["sources"].as_array().unwrap().len(), 2);
}

/// Chunk ledgers of jobs that completed long ago are deleted in bounded batches; the jobs keep
/// their totals, and a failed job keeps its ledger.
#[tokio::test]
async fn retention_prunes_the_chunk_ledgers_of_long_completed_jobs() {
    let mut env = TestEnv::new("ledger_retention").await;
    env.start_worker();
    for (key, seed) in [("l/1.csv", 11), ("l/2.csv", 12)] {
        let (body, _) = generated(&GeneratorConfig {
            rows: 300,
            seed,
            ..GeneratorConfig::default()
        });
        env.put(key, body).await;
    }
    let old = env
        .ingest("l/1.csv", &["--wait", "--chunk-bytes", "20000"])
        .json();
    let recent = env.ingest("l/2.csv", &["--wait"]).json();
    env.put("l/bad.csv", "sku,url\nA,https://shop.example/a\n")
        .await;
    let failed = env.ingest("l/bad.csv", &["--wait"]).json();
    assert_eq!(failed["status"], "failed");
    sqlx::query(
        "UPDATE etl_jobs SET finished_at = now() - interval '40 days'
         WHERE id = $1::uuid OR id = $2::uuid",
    )
    .bind(old["job_id"].as_str().unwrap())
    .bind(failed["job_id"].as_str().unwrap())
    .execute(&env.pg)
    .await
    .unwrap();
    let run = |env: &TestEnv| {
        let out = env.etlctl(&["retention", "run", "--ledger-days", "30", "--json"]);
        assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
        out.json()
    };
    let first = run(&env);
    assert_eq!(u(&first["ledgers_pruned"]), 1, "{first}");
    assert_eq!(
        u(&first["ledger_rows_deleted"]),
        u(&old["chunks"]),
        "{first}"
    );
    let ledger_rows: i64 =
        sqlx::query_scalar("SELECT count(*) FROM etl_chunks WHERE job_id = $1::uuid")
            .bind(old["job_id"].as_str().unwrap())
            .fetch_one(&env.pg)
            .await
            .unwrap();
    assert_eq!(ledger_rows, 0);
    let shown = env
        .etlctl(&["jobs", "show", old["job_id"].as_str().unwrap(), "--json"])
        .json();
    for field in [
        "rows_total",
        "rows_valid",
        "rows_invalid",
        "items",
        "chunks",
    ] {
        assert_eq!(shown[field], old[field], "{field}: {shown}");
    }
    assert_eq!(shown["chunks_committed"], old["chunks"]);
    assert!(shown["ledger_pruned_at"].is_string(), "{shown}");
    // Reconcile recounts the object against the totals the job row kept.
    let reconciled = env.etlctl(&["reconcile", old["job_id"].as_str().unwrap(), "--json"]);
    assert_eq!(
        reconciled.code, 0,
        "{}{}",
        reconciled.stdout, reconciled.stderr
    );
    let recent_rows: i64 =
        sqlx::query_scalar("SELECT count(*) FROM etl_chunks WHERE job_id = $1::uuid")
            .bind(recent["job_id"].as_str().unwrap())
            .fetch_one(&env.pg)
            .await
            .unwrap();
    assert_eq!(
        recent_rows as u64,
        u(&recent["chunks"]),
        "a recent job keeps its ledger"
    );
    assert_eq!(u(&run(&env)["ledgers_pruned"]), 0, "nothing twice");
}

/// `etlctl generate`, the bench and the tests make their bucket when it is missing. A create
/// can meet the bucket made already: another caller's, or its own first attempt that the
/// store carried out before the SDK retried it. The store answers `BucketAlreadyOwnedByYou`,
/// and that is success.
#[tokio::test(flavor = "multi_thread")]
async fn creating_a_bucket_that_is_already_ours_succeeds() {
    let env = TestEnv::new("bucket_twice").await;
    let bucket = format!("{}-made-twice", env.bucket);
    env.s3.create_bucket(&bucket).await.expect("a new bucket");
    env.s3
        .create_bucket(&bucket)
        .await
        .expect("the same bucket, created again");
    env.s3
        .ensure_bucket(&bucket)
        .await
        .expect("an existing bucket");
    env.s3
        .put(&bucket, "probe.csv", bytes::Bytes::from_static(b"sku\n"))
        .await
        .expect("the bucket takes objects");
}
