//! Catalog snapshots: delisting what the newest full snapshot no longer mentions, with the
//! mass-delist guard, relisting, and exact results across kills.

use std::time::Duration;

use serde_json::Value;

use crate::{
    harness::{TestEnv, u},
    ingest::wait_until_final,
    versions::snapshot,
};

async fn listed(env: &TestEnv) -> (i64, u64) {
    let pg: i64 =
        sqlx::query_scalar("SELECT count(*) FROM catalog_items WHERE delisted_at IS NULL")
            .fetch_one(&env.pg)
            .await
            .unwrap();
    let ch: u64 = env
        .ch
        .query("SELECT count() FROM catalog_items FINAL")
        .fetch_one()
        .await
        .unwrap();
    (pg, ch)
}

/// Skus delisted in Postgres, sorted.
async fn delisted_skus(env: &TestEnv) -> Vec<String> {
    sqlx::query_scalar("SELECT sku FROM catalog_items WHERE delisted_at IS NOT NULL ORDER BY sku")
        .fetch_all(&env.pg)
        .await
        .unwrap()
}

/// Delisting observations (`availability = 'delisted'`) in ClickHouse: `FINAL` and raw.
async fn delisting_observations(env: &TestEnv) -> (u64, u64) {
    let count =
        |sql: &'static str| async move { env.ch.query(sql).fetch_one::<u64>().await.unwrap() };
    (
        count(
            "SELECT count() FROM catalog_item_observations FINAL
             WHERE availability = 'delisted'",
        )
        .await,
        count("SELECT count() FROM catalog_item_observations WHERE availability = 'delisted'")
            .await,
    )
}

fn ingest(env: &TestEnv, key: &str, extra: &[&str]) -> Value {
    let mut args = vec!["--wait", "--chunk-bytes", "400"];
    args.extend_from_slice(extra);
    let out = env.ingest(key, &args);
    assert!(
        out.code == 0 || out.code == 1,
        "{}{}",
        out.stdout,
        out.stderr
    );
    out.json()
}

/// Starts an ingest of `key` in chunks of one row, one at a time, and cancels it once a chunk
/// has committed. Returns the cancelled job's summary.
async fn cancel_after_a_chunk(env: &TestEnv, key: &str, extra: &[&str]) -> Value {
    let mut args = vec!["--chunk-bytes", "64", "--parallel", "1"];
    args.extend_from_slice(extra);
    let started = env.ingest(key, &args);
    let job = started.json()["job_id"].as_str().unwrap().to_owned();
    env.wait_for(
        "a committed chunk",
        Duration::from_secs(60),
        crate::harness::CommittedChunks {
            job_id: &job,
            at_least: 1,
        },
    )
    .await;
    let cancelled = env.etlctl(&["cancel", &job, "--json"]).json();
    assert_eq!(cancelled["status"], "cancelled", "{cancelled}");
    cancelled
}

fn items(range: std::ops::Range<usize>, skip: &[usize]) -> Vec<usize> {
    range.filter(|n| !skip.contains(n)).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_snapshot_delists_exactly_the_items_it_no_longer_mentions() {
    let mut env = TestEnv::new("delist").await;
    env.start_worker();
    env.put("d/1.csv", snapshot(0..100, 0)).await;
    let day1 = ingest(&env, "d/1.csv", &[]);
    assert_eq!(u(&day1["items_delisted"]), 0, "{day1}");
    let gone = [3, 14, 15, 26, 35, 58, 79, 80, 81, 99];
    // Day 2 mentions ITEM-15 only in an invalid row (bad URL): it stays listed.
    let mut day2 = snapshot(items(0..100, &gone), 1);
    day2.push_str("ITEM-15,Item 15,ftp://shop.example/items/15,16.00,in stock\n");
    env.put("d/2.csv", day2).await;
    let day2 = ingest(&env, "d/2.csv", &[]);
    assert_eq!(day2["status"], "completed", "{day2}");
    assert_eq!(u(&day2["rows_invalid"]), 1);
    assert_eq!(u(&day2["items_delisted"]), 9, "{day2}");
    assert_eq!(day2["delist_refused"], Value::Null);
    assert_eq!(day2["reconciliation"]["ok"], true, "{day2}");
    assert_eq!(u(&day2["reconciliation"]["pg_listed"]), 91);
    assert_eq!(u(&day2["reconciliation"]["ch_listed"]), 91);
    let mut expected: Vec<String> = gone
        .iter()
        .filter(|n| **n != 15)
        .map(|n| format!("ITEM-{n}"))
        .collect();
    expected.sort();
    assert_eq!(delisted_skus(&env).await, expected);
    let by_job: i64 =
        sqlx::query_scalar("SELECT count(*) FROM catalog_items WHERE delisted_by_job_id = $1")
            .bind(
                day2["job_id"]
                    .as_str()
                    .unwrap()
                    .parse::<sqlx::types::Uuid>()
                    .unwrap(),
            )
            .fetch_one(&env.pg)
            .await
            .unwrap();
    assert_eq!(by_job, 9);
    assert_eq!(listed(&env).await, (91, 91));
    assert_eq!(delisting_observations(&env).await, (9, 9));

    // Reappearing items are listed again.
    env.put("d/3.csv", snapshot(0..100, 2)).await;
    let day3 = ingest(&env, "d/3.csv", &[]);
    assert_eq!(u(&day3["items_relisted"]), 9, "{day3}");
    assert_eq!(u(&day3["items_delisted"]), 0);
    assert!(delisted_skus(&env).await.is_empty());
    assert_eq!(listed(&env).await, (100, 100));
    let audit = env
        .etlctl(&["audit", "--source", "cotopaxi", "--json"])
        .json();
    assert_eq!(u(&audit["sources"][0]["items"]), 100, "{audit}");
    assert_eq!(u(&audit["sources"][0]["delisted"]), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_older_object_ingested_later_delists_and_relists_nothing() {
    let mut env = TestEnv::new("delist_older").await;
    env.start_worker();
    env.put("o/1.csv", snapshot(0..100, 0)).await;
    env.put("o/2.csv", snapshot(0..95, 1)).await;
    ingest(&env, "o/2.csv", &[]);
    assert_eq!(listed(&env).await, (95, 95));
    // The older object mentions ITEM-0..99; it is older than the newest snapshot.
    let older = ingest(&env, "o/1.csv", &[]);
    assert_eq!(older["status"], "completed", "{older}");
    assert_eq!(u(&older["items_delisted"]), 0);
    assert_eq!(u(&older["items_relisted"]), 0);
    assert_eq!(listed(&env).await, (95, 95));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_truncated_file_trips_the_mass_delist_guard() {
    let mut env = TestEnv::new("delist_guard").await;
    env.start_worker();
    env.put("g/1.csv", snapshot(0..100, 0)).await;
    ingest(&env, "g/1.csv", &[]);
    env.put("g/2.csv", snapshot(0..10, 1)).await;
    let truncated = ingest(&env, "g/2.csv", &[]);
    assert_eq!(truncated["status"], "completed", "{truncated}");
    assert_eq!(u(&truncated["items_delisted"]), 0);
    assert_eq!(
        truncated["delist_refused"],
        serde_json::json!({"would_delist": 90, "listed": 100})
    );
    assert_eq!(listed(&env).await, (100, 100));
    let text = env.etlctl(&["jobs", "show", truncated["job_id"].as_str().unwrap()]);
    assert!(
        text.stdout.contains("REFUSED by the mass-delist guard"),
        "{}",
        text.stdout
    );

    // An operator who knows the source shrank applies the refused delisting with a repair.
    let repaired = env.etlctl(&[
        "repair",
        truncated["job_id"].as_str().unwrap(),
        "--allow-mass-delist",
        "--wait",
        "--json",
    ]);
    let repaired = repaired.json();
    assert_eq!(repaired["status"], "completed", "{repaired}");
    assert_eq!(u(&repaired["items_delisted"]), 90, "{repaired}");
    assert_eq!(listed(&env).await, (10, 10));

    // The items come back; the next truncated file is let through at its ingest.
    env.put("g/3.csv", snapshot(0..100, 2)).await;
    assert_eq!(u(&ingest(&env, "g/3.csv", &[])["items_relisted"]), 90);
    env.put("g/4.csv", snapshot(0..10, 3)).await;
    let allowed = ingest(&env, "g/4.csv", &["--allow-mass-delist"]);
    assert_eq!(u(&allowed["items_delisted"]), 90, "{allowed}");
    assert_eq!(listed(&env).await, (10, 10));
}

#[tokio::test(flavor = "multi_thread")]
async fn dry_runs_partial_failed_and_cancelled_jobs_delist_nothing() {
    let mut env = TestEnv::new("delist_never").await;
    env.start_worker();
    env.put("n/1.csv", snapshot(0..100, 0)).await;
    ingest(&env, "n/1.csv", &[]);
    env.put("n/2.csv", snapshot(0..95, 1)).await;

    let dry = ingest(&env, "n/2.csv", &["--dry-run"]);
    assert_eq!(dry["status"], "completed");
    assert_eq!(dry["items_delisted"], Value::Null);
    let partial = ingest(&env, "n/2.csv", &["--partial"]);
    assert_eq!(partial["status"], "completed", "{partial}");
    assert_eq!(partial["partial"], true);
    assert_eq!(u(&partial["items_delisted"]), 0);
    assert_eq!(listed(&env).await, (100, 100));

    // Failed: a header the contract refuses.
    env.put("n/3.csv", "title,cost\nshoe,12\n").await;
    let failed = ingest(&env, "n/3.csv", &[]);
    assert_eq!(failed["status"], "failed");
    // Cancelled mid-way.
    env.put("n/4.csv", snapshot(0..50, 3)).await;
    let cancelled = cancel_after_a_chunk(&env, "n/4.csv", &[]).await;
    // It delisted nothing: 0, as for every job that is not a dry run (null: not counted).
    assert_eq!(cancelled["items_delisted"], 0, "{cancelled}");
    assert_eq!(listed(&env).await, (100, 100));
    assert!(delisted_skus(&env).await.is_empty());
}

/// The worker dies between the delisting's Postgres commit and its ClickHouse copy: the next
/// attempt finds the step done and copies it; nothing is delisted twice or observed twice.
#[tokio::test(flavor = "multi_thread")]
async fn a_kill_during_delisting_leaves_exact_results() {
    let mut env = TestEnv::new("delist_kill").await;
    env.start_worker();
    env.put("k/1.csv", snapshot(0..100, 0)).await;
    ingest(&env, "k/1.csv", &[]);
    env.kill_workers();
    env.start_worker_pausing_at("delist");
    env.put("k/2.csv", snapshot(0..90, 1)).await;
    let started = env.ingest("k/2.csv", &["--chunk-bytes", "400"]);
    let job = started.json()["job_id"].as_str().unwrap().to_owned();
    env.wait_for_log("paused at delist", Duration::from_secs(60))
        .await;
    env.kill_workers();
    assert_eq!(delisted_skus(&env).await.len(), 10, "committed in Postgres");
    env.start_worker();
    let summary = wait_until_final(&env, &job).await;
    assert_eq!(summary["status"], "completed", "{summary}");
    assert_eq!(u(&summary["items_delisted"]), 10);
    assert_eq!(summary["reconciliation"]["ok"], true, "{summary}");
    assert_eq!(listed(&env).await, (90, 90));
    assert_eq!(delisting_observations(&env).await, (10, 10));
}

/// A snapshot delists only items no newer object wrote. A partial job of a newer object,
/// cancelled after some of its chunks committed, leaves its items listed at the newer version:
/// a later-completing snapshot of an older object (still the newest snapshot: a partial job
/// registers none, and a cancelled one completes nothing) does not mention them, and must not
/// delist them.
#[tokio::test(flavor = "multi_thread")]
async fn a_snapshot_leaves_listed_the_items_a_newer_object_wrote() {
    let mut env = TestEnv::new("delist_newer_write").await;
    env.start_worker();
    env.put("w/1.csv", snapshot(0..20, 0)).await;
    ingest(&env, "w/1.csv", &[]);
    // Put in this order, the partial object is the newer one.
    env.put("w/2.csv", snapshot(0..18, 1)).await;
    env.put("w/3.csv", snapshot(100..150, 2)).await;
    let cancelled = cancel_after_a_chunk(&env, "w/3.csv", &["--partial"]).await;
    let newer = cancelled["job_id"].as_str().unwrap().to_owned();
    let newer_items: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM catalog_items WHERE last_job_id = $1::uuid AND delisted_at IS NULL",
    )
    .bind(&newer)
    .fetch_one(&env.pg)
    .await
    .unwrap();
    assert!(newer_items >= 1, "the cancelled job wrote items");
    // A job that did not complete reports the items its committed chunks hold.
    assert_eq!(u(&cancelled["items"]) as i64, newer_items, "{cancelled}");

    let older = ingest(&env, "w/2.csv", &[]);
    assert_eq!(older["status"], "completed", "{older}");
    assert_eq!(older["reconciliation"]["ok"], true, "{older}");
    assert_eq!(u(&older["items_delisted"]), 2, "{older}");
    assert_eq!(delisted_skus(&env).await, ["ITEM-18", "ITEM-19"]);
    let listed_now = 18 + newer_items;
    assert_eq!(listed(&env).await, (listed_now, listed_now as u64));
}

/// The guard's share is of the items listed now, not of every item the source ever had: after
/// 15 of 100 items are delisted, a snapshot that drops 20 more (23.5% of the 85 listed, 20% of
/// all 100) is refused.
#[tokio::test(flavor = "multi_thread")]
async fn the_mass_delist_guard_counts_only_listed_items() {
    let mut env = TestEnv::new("delist_guard_listed").await;
    env.start_worker();
    env.put("l/1.csv", snapshot(0..100, 0)).await;
    ingest(&env, "l/1.csv", &[]);
    env.put("l/2.csv", snapshot(0..85, 1)).await;
    assert_eq!(u(&ingest(&env, "l/2.csv", &[])["items_delisted"]), 15);
    env.put("l/3.csv", snapshot(0..65, 2)).await;
    let shrunk = ingest(&env, "l/3.csv", &[]);
    assert_eq!(shrunk["status"], "completed", "{shrunk}");
    assert_eq!(u(&shrunk["items_delisted"]), 0, "{shrunk}");
    assert_eq!(
        shrunk["delist_refused"],
        serde_json::json!({"would_delist": 20, "listed": 85})
    );
    assert_eq!(listed(&env).await, (85, 85));
}
