//! Regression tests of what used to depend on the order in which legitimate things happen:
//! which chunk commits first, how late a repair comes, which mode an object was first ingested
//! in, what reconcile compares, when a job delists, what history a failed job leaves.

use std::time::{Duration, Instant};

use catalog_model::scenario::CommitOrder;
use generator::GeneratorConfig;
use serde_json::Value;

use crate::{
    gate::{Gate, etlctl_releasing, gate_dir, printed, spawn_etlctl},
    harness::{TestEnv, u},
    ingest::{catalog, observations, raw_observations, wait_until_final},
};

const HEADER: &str = "sku,name,product_url,price\n";

/// A record of fixed width for five-character skus and six-character prices, so a chunk size
/// of n rows holds n whole rows.
fn row(sku: &str, price: &str) -> String {
    format!("{sku},Name {sku},https://shop.example/p/{sku},{price:>6}\n")
}

fn ingest_json(env: &TestEnv, key: &str, extra: &[&str]) -> Value {
    let out = env.ingest(key, &[&["--wait"][..], extra].concat());
    serde_json::from_str(out.stdout.trim())
        .unwrap_or_else(|_| panic!("ingest {key}: {}{}", out.stdout, out.stderr))
}

async fn pg_price(env: &TestEnv, sku: &str) -> (String, i64) {
    sqlx::query_as("SELECT price::text, version_row FROM catalog_items WHERE sku = $1")
        .bind(sku)
        .fetch_one(&env.pg)
        .await
        .unwrap()
}

async fn ch_price(env: &TestEnv, sku: &str) -> (String, u64) {
    env.ch
        .query(
            "SELECT toString(assumeNotNull(price)), row_number FROM catalog_items FINAL
             WHERE sku = ?",
        )
        .bind(sku)
        .fetch_one()
        .await
        .unwrap()
}

async fn listed_in_postgres(env: &TestEnv) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM catalog_items WHERE delisted_at IS NULL")
        .fetch_one(&env.pg)
        .await
        .unwrap()
}

async fn listed_in_clickhouse(env: &TestEnv) -> u64 {
    env.ch
        .query("SELECT count() FROM catalog_items FINAL")
        .fetch_one()
        .await
        .unwrap()
}

/// Item 1: day 2 changes X at row 10 (first chunk) and repeats X at its old price as its last
/// row (a chunk of its own). The last chunk commits first; the contract's greatest row still
/// wins, in both stores.
#[tokio::test(flavor = "multi_thread")]
async fn a_sku_twice_in_one_object_ends_at_its_last_row_whatever_commits_first() {
    sku_twice_in_one_object("dup_sku_next_day", &[]).await;
}

/// The same when the plan hands its mention hashes to Postgres to find the shared ones (an
/// object with more of them than the worker keeps in memory).
#[tokio::test(flavor = "multi_thread")]
async fn a_sku_twice_in_one_object_ends_at_its_last_row_when_postgres_finds_it_repeated() {
    sku_twice_in_one_object(
        "dup_sku_pg_mentions",
        &[("ETL_PLAN_MENTIONS_IN_MEMORY", "0")],
    )
    .await;
}

async fn sku_twice_in_one_object(name: &str, worker_settings: &[(&str, &str)]) {
    let mut env = TestEnv::new(name).await;
    let gate = gate_dir(name);
    let mut settings = vec![
        ("ETL_PAUSE_GATE", gate.to_str().unwrap()),
        ("ETL_MAX_CONCURRENT_ACTIVITIES", "8"),
    ];
    settings.extend_from_slice(worker_settings);
    env.start_worker_pausing_at_with("chunk-after-read", &settings);
    let others: Vec<String> = (0..29).map(|n| format!("S-{n:03}")).collect();
    let mut day1 = String::from(HEADER);
    day1.push_str(&row("X-001", "100.00"));
    for sku in &others {
        day1.push_str(&row(sku, "012.50"));
    }
    env.put("dup/day1.csv", day1).await;
    let first = etlctl_releasing(
        &env,
        &gate,
        &[
            "ingest",
            &env.uri("dup/day1.csv"),
            "--source",
            "cotopaxi",
            "--wait",
            "--json",
        ],
        CommitOrder::InOrder,
    )
    .await;
    assert_eq!(first["status"], "completed", "{first}");

    // Rows 1..9 and 11..30 unchanged, row 10 X at 777.77, row 31 X at its old price again.
    let mut day2 = String::from(HEADER);
    for (n, sku) in others.iter().enumerate() {
        if n == 9 {
            day2.push_str(&row("X-001", "777.77"));
        }
        day2.push_str(&row(sku, "012.50"));
    }
    day2.push_str(&row("X-001", "100.00"));
    env.put("dup/day2.csv", day2).await;
    let chunk_bytes = (10 * row("X-001", "777.77").len()).to_string();
    let second = etlctl_releasing(
        &env,
        &gate,
        &[
            "ingest",
            &env.uri("dup/day2.csv"),
            "--source",
            "cotopaxi",
            "--chunk-bytes",
            &chunk_bytes,
            "--parallel",
            "4",
            "--wait",
            "--json",
        ],
        CommitOrder::LastFirst,
    )
    .await;
    assert_eq!(second["status"], "completed", "{second}");
    assert_eq!(
        u(&second["chunks"]),
        4,
        "row 31 is a chunk of its own: {second}"
    );
    let order: Vec<i32> = sqlx::query_scalar(
        "SELECT chunk_index FROM etl_chunks WHERE job_id = $1::uuid ORDER BY committed_at",
    )
    .bind(second["job_id"].as_str().unwrap())
    .fetch_all(&env.pg)
    .await
    .unwrap();
    assert_eq!(order, [3, 2, 1, 0], "the last chunk committed first");
    assert_eq!(pg_price(&env, "X-001").await, ("100.00".to_owned(), 31));
    assert_eq!(ch_price(&env, "X-001").await, ("100".to_owned(), 31));
    assert_eq!(second["reconciliation"]["ok"], true, "{second}");
}

/// Item 2: a repair that comes after ClickHouse's deduplication window has moved on (here: the
/// window is 0, which is where 10,050 other inserts leave a 10,000-block window) adds no
/// observation: one per (object version, row), raw and under `FINAL`.
#[tokio::test(flavor = "multi_thread")]
async fn a_repair_after_the_deduplication_window_leaves_raw_equal_to_final() {
    let mut env = TestEnv::new("late_repair").await;
    env.start_worker();
    let (body, stats) = catalog(GeneratorConfig {
        rows: 2000,
        seed: 61,
        invalid_per_mille: 20,
        ..GeneratorConfig::default()
    });
    env.put("late/catalog.csv", body).await;
    let first = ingest_json(&env, "late/catalog.csv", &["--chunk-bytes", "100000"]);
    assert_eq!(first["status"], "completed", "{first}");
    env.ch
        .query(
            "ALTER TABLE catalog_item_observations
             MODIFY SETTING non_replicated_deduplication_window = 0",
        )
        .execute()
        .await
        .unwrap();
    let job = first["job_id"].as_str().unwrap();
    let repair = env.etlctl(&["repair", job, "--wait", "--json"]);
    assert_eq!(repair.code, 0, "{}{}", repair.stdout, repair.stderr);
    let repaired = repair.json();
    let again = env.etlctl(&[
        "repair",
        repaired["job_id"].as_str().unwrap(),
        "--wait",
        "--json",
    ]);
    assert_eq!(again.code, 0, "{}{}", again.stdout, again.stderr);
    assert_eq!(
        again.json()["reconciliation"]["ok"],
        true,
        "{}",
        again.stdout
    );
    let valid = stats.rows_valid;
    assert_eq!(raw_observations(&env, "late/catalog.csv").await, valid);
    assert_eq!(observations(&env, "late/catalog.csv").await, valid);
}

/// Item 3: `--partial` and `--allow-mass-delist` are part of a job's identity: each mode of an
/// object version is a job of its own, never the other mode's job returned as if it were it.
#[tokio::test(flavor = "multi_thread")]
async fn each_mode_of_an_object_version_is_a_job_of_its_own() {
    let mut env = TestEnv::new("modes").await;
    env.start_worker();
    let snapshot = |range: std::ops::Range<usize>| {
        let mut csv = String::from(HEADER);
        for n in range {
            csv.push_str(&row(&format!("M-{n:03}"), "010.00"));
        }
        csv
    };
    env.put("modes/1.csv", snapshot(0..100)).await;
    assert_eq!(ingest_json(&env, "modes/1.csv", &[])["status"], "completed");

    // First by mistake as partial: nothing delisted. Then as a snapshot: a new job delists.
    env.put("modes/2.csv", snapshot(0..90)).await;
    let partial = ingest_json(&env, "modes/2.csv", &["--partial"]);
    assert_eq!(
        (partial["partial"].as_bool(), u(&partial["items_delisted"])),
        (Some(true), 0)
    );
    let full = ingest_json(&env, "modes/2.csv", &[]);
    assert_ne!(
        full["job_id"], partial["job_id"],
        "a job of its own: {full}"
    );
    assert_eq!(full["partial"], false, "{full}");
    assert_eq!(u(&full["items_delisted"]), 10, "{full}");
    assert_eq!(listed_in_postgres(&env).await, 90);

    // The reverse: a snapshot, then the same version asked as partial: a job of its own that
    // delists nothing (and the snapshot's job is not returned as if it were partial).
    env.put("modes/3.csv", snapshot(0..85)).await;
    let full = ingest_json(&env, "modes/3.csv", &[]);
    assert_eq!(u(&full["items_delisted"]), 5, "{full}");
    let partial = ingest_json(&env, "modes/3.csv", &["--partial"]);
    assert_ne!(partial["job_id"], full["job_id"]);
    assert_eq!(
        (partial["partial"].as_bool(), u(&partial["items_delisted"])),
        (Some(true), 0)
    );

    // The guard refuses; the same version with --allow-mass-delist is a job that delists.
    env.put("modes/4.csv", snapshot(0..40)).await;
    let refused = ingest_json(&env, "modes/4.csv", &[]);
    assert_eq!(refused["delist_refused"]["would_delist"], 45, "{refused}");
    let allowed = ingest_json(&env, "modes/4.csv", &["--allow-mass-delist"]);
    assert_ne!(allowed["job_id"], refused["job_id"]);
    assert_eq!(allowed["allow_mass_delist"], true, "{allowed}");
    assert_eq!(u(&allowed["items_delisted"]), 45, "{allowed}");
    assert_eq!(
        (
            listed_in_postgres(&env).await,
            listed_in_clickhouse(&env).await
        ),
        (40, 40)
    );
    // Asking again for any of these identities names the same job.
    let again = ingest_json(&env, "modes/4.csv", &["--allow-mass-delist"]);
    assert_eq!(again["job_id"], allowed["job_id"]);
}

/// Item 4: reconcile compares every stored field: a description changed in ClickHouse only is
/// found (and so is a name changed in Postgres only).
#[tokio::test(flavor = "multi_thread")]
async fn reconcile_finds_a_description_changed_in_clickhouse_only() {
    let mut env = TestEnv::new("reconcile_fields").await;
    env.start_worker();
    let (body, _) = catalog(GeneratorConfig {
        rows: 200,
        seed: 62,
        ..GeneratorConfig::default()
    });
    env.put("fields/catalog.csv", body).await;
    let summary = ingest_json(&env, "fields/catalog.csv", &[]);
    let job = summary["job_id"].as_str().unwrap();
    let clean = env.etlctl(&["reconcile", job, "--json"]);
    assert_eq!(clean.code, 0, "{}{}", clean.stdout, clean.stderr);
    let sku: String = sqlx::query_scalar("SELECT sku FROM catalog_items ORDER BY sku LIMIT 1")
        .fetch_one(&env.pg)
        .await
        .unwrap();
    env.ch
        .query(
            "ALTER TABLE catalog_items UPDATE description = 'changed behind our back'
             WHERE sku = ?",
        )
        .bind(&sku)
        .with_option("mutations_sync", "2")
        .execute()
        .await
        .unwrap();
    let found = env.etlctl(&["reconcile", job, "--json"]);
    assert_eq!(found.code, 1, "{}{}", found.stdout, found.stderr);
    let verification = found.json();
    let deltas = verification["deltas"].to_string();
    assert!(
        deltas.contains("ClickHouse: 1 item(s) no longer match"),
        "{deltas}"
    );
    assert_eq!(
        verification["catalog"]["differing_items"], 1,
        "{verification}"
    );

    sqlx::query("UPDATE catalog_items SET name = name || '!' WHERE sku <> $1")
        .bind(&sku)
        .execute(&env.pg)
        .await
        .unwrap();
    let items = u(&summary["items"]);
    let both = env.etlctl(&["reconcile", job, "--json"]).json();
    assert!(
        both["deltas"]
            .to_string()
            .contains(&format!("Postgres: {} item(s) no longer match", items - 1)),
        "{both}"
    );
}

/// Item 5: a job that cannot complete (here its catalog comparison fails: ClickHouse lost an
/// item) has delisted nothing: the delisting commits with the job's completion only.
#[tokio::test(flavor = "multi_thread")]
async fn a_job_that_fails_before_completing_has_delisted_nothing() {
    let mut env = TestEnv::new("failed_no_delist").await;
    env.start_worker();
    let snapshot = |range: std::ops::Range<usize>| {
        let mut csv = String::from(HEADER);
        for n in range {
            csv.push_str(&row(&format!("F-{n:03}"), "010.00"));
        }
        csv
    };
    env.put("fail/1.csv", snapshot(0..100)).await;
    assert_eq!(ingest_json(&env, "fail/1.csv", &[])["status"], "completed");
    env.ch
        .query("DELETE FROM catalog_items WHERE sku = 'F-050'")
        .execute()
        .await
        .unwrap();
    env.put("fail/2.csv", snapshot(0..90)).await;
    let failed = ingest_json(&env, "fail/2.csv", &[]);
    assert_eq!(failed["status"], "failed", "{failed}");
    assert_eq!(failed["error_type"], "reconciliation_failed", "{failed}");
    assert_eq!(u(&failed["items_delisted"]), 0, "{failed}");
    assert_eq!(
        listed_in_postgres(&env).await,
        100,
        "nothing delisted in Postgres"
    );
    let delisted_in_clickhouse: u64 = env
        .ch
        .query("SELECT count() FROM catalog_item_observations WHERE availability = 'delisted'")
        .fetch_one()
        .await
        .unwrap();
    assert_eq!(delisted_in_clickhouse, 0, "no delisting in the history");
}

/// Item 5, continued: a valid item of the object that Postgres' catalog lacks when the job
/// completes fails the job, and nothing is delisted. The item is deleted from both stores
/// while the job is held after its chunks committed, so the catalog comparison agrees and only
/// the completing transaction's count of the object's items can find it: on a source's first
/// snapshot (a set difference of its own) and on a later one (the delisting's join).
async fn an_item_lost_before_completion_fails_the_job(name: &str, first_snapshot: bool) {
    let mut env = TestEnv::new(name).await;
    let snapshot = |range: std::ops::Range<usize>| {
        let mut csv = String::from(HEADER);
        for n in range {
            csv.push_str(&row(&format!("L-{n:03}"), "010.00"));
        }
        csv
    };
    let (key, items) = if first_snapshot {
        ("lost/1.csv", 100)
    } else {
        env.start_worker();
        env.put("lost/1.csv", snapshot(0..100)).await;
        assert_eq!(ingest_json(&env, "lost/1.csv", &[])["status"], "completed");
        env.kill_workers();
        ("lost/2.csv", 90)
    };
    env.start_worker_pausing_at("aggregate");
    env.put(key, snapshot(0..items)).await;
    let started = env.ingest(key, &[]);
    let job = started.json()["job_id"].as_str().unwrap().to_owned();
    env.wait_for_log("paused at aggregate", Duration::from_secs(60))
        .await;
    sqlx::query("DELETE FROM catalog_items WHERE sku = 'L-050'")
        .execute(&env.pg)
        .await
        .unwrap();
    env.ch
        .query("DELETE FROM catalog_items WHERE sku = 'L-050'")
        .execute()
        .await
        .unwrap();
    env.release_pause();
    let failed = wait_until_final(&env, &job).await;
    assert_eq!(failed["status"], "failed", "{failed}");
    assert_eq!(failed["error_type"], "reconciliation_failed", "{failed}");
    let error = failed["error"].as_str().unwrap_or_default();
    assert!(
        error.contains(&format!(
            "{} of the object's {items} items are in Postgres' catalog",
            items - 1
        )),
        "{failed}"
    );
    assert!(!error.contains("catalog differs"), "{failed}");
    assert_eq!(u(&failed["items_delisted"]), 0, "{failed}");
    // Either way the source had 100 items (the first snapshot's, or the first object's with
    // the later one's 10 left listed): all but the one deleted are listed.
    assert_eq!(listed_in_postgres(&env).await, 99, "nothing delisted");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_item_lost_before_a_first_snapshot_completes_fails_the_job() {
    an_item_lost_before_completion_fails_the_job("lost_first", true).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_item_lost_before_a_later_snapshot_completes_fails_the_job() {
    an_item_lost_before_completion_fails_the_job("lost_later", false).await;
}

/// Item 6: history belongs to committed chunks only. A worker dies inside a chunk's open
/// transaction, the object is replaced before the retry, and the job fails: the chunk never
/// committed, and no observation of its rows exists.
#[tokio::test(flavor = "multi_thread")]
async fn a_job_that_fails_before_a_chunk_commits_leaves_no_history_of_it() {
    let mut env = TestEnv::new("no_orphan_history").await;
    env.start_worker_pausing_at("chunk-before-commit");
    let (body, _) = catalog(GeneratorConfig {
        rows: 300,
        seed: 63,
        ..GeneratorConfig::default()
    });
    env.put("orphan/catalog.csv", body).await;
    let started = env.ingest(
        "orphan/catalog.csv",
        &[
            "--parallel",
            "1",
            "--chunk-bytes",
            "50000",
            "--heartbeat-timeout",
            "3",
        ],
    );
    let job = started.json()["job_id"].as_str().unwrap().to_owned();
    env.wait_for_log("paused at chunk-before-commit", Duration::from_secs(60))
        .await;
    env.kill_workers();
    let (replacement, _) = catalog(GeneratorConfig {
        rows: 10,
        seed: 64,
        ..GeneratorConfig::default()
    });
    env.put("orphan/catalog.csv", replacement).await;
    env.start_worker();
    let summary = wait_until_final(&env, &job).await;
    assert_eq!(summary["status"], "failed", "{summary}");
    assert_eq!(summary["error_type"], "source_changed", "{summary}");
    let committed_valid: i64 = sqlx::query_scalar(
        "SELECT coalesce(sum(rows_valid), 0)::bigint FROM etl_chunks
         WHERE job_id = $1::uuid AND status = 'committed'",
    )
    .bind(&job)
    .fetch_one(&env.pg)
    .await
    .unwrap();
    assert_eq!(committed_valid, 0, "the first chunk never committed");
    assert_eq!(raw_observations(&env, "orphan/catalog.csv").await, 0);
}

/// The chunk the gate holds for a job other than `other`, once it is there.
async fn held_chunk(gate: &Gate, other: Option<&str>) -> (String, u32) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(held) = gate
            .held()
            .into_iter()
            .find(|(job, _)| Some(job.as_str()) != other)
        {
            return held;
        }
        assert!(Instant::now() < deadline, "no chunk reached the gate");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A source's first snapshot inserts the skus its object mentions once without an upsert's
/// conflict handling. A partial job of a newer object of the same new source, planned while the
/// catalog was still empty too, commits the same skus first: the snapshot's insert meets them,
/// is rolled back to its savepoint, and the chunk upserts instead, which leaves the newer rows
/// alone. Both jobs complete and both stores hold the newer object's rows.
#[tokio::test(flavor = "multi_thread")]
async fn a_first_snapshot_that_meets_a_concurrent_jobs_items_upserts_them() {
    let mut env = TestEnv::new("first_write_meets").await;
    let dir = gate_dir("first_write_meets");
    env.start_worker_pausing_at_with(
        "chunk-after-read",
        &[("ETL_PAUSE_GATE", dir.to_str().unwrap())],
    );
    let skus: Vec<String> = (0..20).map(|n| format!("F-{n:03}")).collect();
    let object = |price: &str| {
        let mut csv = String::from(HEADER);
        for sku in &skus {
            csv.push_str(&row(sku, price));
        }
        csv
    };
    // Same Last-Modified second or not, `b` is the newer version (the key breaks a tie).
    env.put("first/a.csv", object("100.00")).await;
    env.put("first/b.csv", object("200.00")).await;
    let mut gate = Gate::new(&dir, CommitOrder::InOrder, 1);
    let ingest = |key: &str, extra: &[&str]| {
        let uri = env.uri(key);
        let mut args = vec![
            "ingest",
            uri.as_str(),
            "--source",
            "cotopaxi",
            "--wait",
            "--json",
        ];
        args.extend_from_slice(extra);
        spawn_etlctl(&env, &args)
    };
    let snapshot = ingest("first/a.csv", &[]);
    let (snapshot_job, snapshot_chunk) = held_chunk(&gate, None).await;
    let partial = ingest("first/b.csv", &["--partial"]);
    let (partial_job, partial_chunk) = held_chunk(&gate, Some(&snapshot_job)).await;
    let planned_on_empty: bool =
        sqlx::query_scalar("SELECT catalog_was_empty FROM etl_jobs WHERE id = $1::uuid")
            .bind(&snapshot_job)
            .fetch_one(&env.pg)
            .await
            .unwrap();
    assert!(
        planned_on_empty,
        "the snapshot was planned on an empty catalog"
    );

    gate.open(&env, &[(partial_job, partial_chunk)]).await;
    gate.open(&env, &[(snapshot_job, snapshot_chunk)]).await;
    let (snapshot, partial) = (printed(snapshot), printed(partial));
    for job in [&snapshot, &partial] {
        assert_eq!(job["status"], "completed", "{job}");
        assert_eq!(job["reconciliation"]["ok"], true, "{job}");
    }
    assert!(
        env.worker_log().contains("met an existing item"),
        "the snapshot's insert met the partial's rows:\n{}",
        env.worker_log()
    );
    for (n, sku) in skus.iter().enumerate() {
        let row = n as i64 + 1;
        assert_eq!(
            pg_price(&env, sku).await,
            ("200.00".to_owned(), row),
            "{sku}"
        );
        assert_eq!(
            ch_price(&env, sku).await,
            ("200".to_owned(), row as u64),
            "{sku}"
        );
    }
}

/// The unchanged-item lookup reads a chunk's sku range in one scan when the chunk's skus fill
/// it, and probes each sku when they are spread over the catalog: the next day's file holds
/// the even skus of the first half (a chunk), then its odd skus (a chunk: each of the two
/// ranges holds twice the chunk's items, more than the scan reads before it gives way), then
/// the second half in order (two chunks that fill their ranges). Whichever way a chunk looked
/// its items up, the changed ones (every seventh) move to the new version and the unchanged
/// ones keep the first day's. (An unchanged item the lookup took for changed would be left
/// alone by the upsert's own check; a changed one it took for unchanged would keep its old
/// price: that is what this test catches, in either way of looking up.)
#[tokio::test(flavor = "multi_thread")]
async fn a_snapshot_finds_its_unchanged_items_in_any_order_the_object_lists_them() {
    let mut env = TestEnv::new("lookup_order").await;
    env.start_worker();
    let sku = |n: usize| format!("K{n:04}");
    let mut day1 = String::from(HEADER);
    for n in 0..400 {
        day1.push_str(&row(&sku(n), "010.00"));
    }
    env.put("order/day1.csv", day1).await;
    let first = ingest_json(&env, "order/day1.csv", &[]);
    assert_eq!(first["status"], "completed", "{first}");

    let changed = |n: usize| n % 7 == 3;
    let order: Vec<usize> = (0..200)
        .step_by(2)
        .chain((1..200).step_by(2))
        .chain(200..400)
        .collect();
    let mut day2 = String::from(HEADER);
    for &n in &order {
        let price = if changed(n) { "020.00" } else { "010.00" };
        day2.push_str(&row(&sku(n), price));
    }
    env.put("order/day2.csv", day2).await;
    let chunk_bytes = (100 * row(&sku(0), "010.00").len()).to_string();
    let second = ingest_json(&env, "order/day2.csv", &["--chunk-bytes", &chunk_bytes]);
    assert_eq!(second["status"], "completed", "{second}");
    assert_eq!(u(&second["chunks"]), 4, "{second}");
    assert_eq!(second["reconciliation"]["ok"], true, "{second}");

    let stored: Vec<(String, String, String)> = sqlx::query_as(
        "SELECT sku, price::text, version_key FROM catalog_items
         WHERE source = 'cotopaxi' AND delisted_at IS NULL ORDER BY sku",
    )
    .fetch_all(&env.pg)
    .await
    .unwrap();
    let expected: Vec<(String, String, String)> = (0..400)
        .map(|n| {
            let (price, key) = if changed(n) {
                ("20.00", "order/day2.csv")
            } else {
                ("10.00", "order/day1.csv")
            };
            (sku(n), price.to_owned(), key.to_owned())
        })
        .collect();
    let wrong: Vec<_> = stored
        .iter()
        .zip(&expected)
        .filter(|(s, e)| s != e)
        .take(5)
        .collect();
    assert!(
        stored.len() == expected.len() && wrong.is_empty(),
        "{} items listed, {} expected; first differences (stored, expected): {wrong:?}",
        stored.len(),
        expected.len()
    );
}

/// A job's catalog comparison reads Postgres' side from the sums the catalog's triggers keep
/// (`catalog_sums`), not from every item: the sums follow every write (the first snapshot's
/// rows, a change, a delisting, a relisting), a completed job leaves its source one row of
/// them, and sums that no longer match the items (a write past the triggers) fail the next
/// job's comparison and `etlctl reconcile` with a message naming them, until rebuilt as the
/// README says.
#[tokio::test(flavor = "multi_thread")]
async fn a_jobs_comparison_reads_the_sums_the_triggers_keep_and_reconcile_checks_them() {
    let mut env = TestEnv::new("catalog_sums").await;
    env.start_worker();
    let snapshot = |range: std::ops::Range<usize>, changed: usize| {
        let mut csv = String::from(HEADER);
        for n in range {
            let price = if n % 10 == changed {
                "020.00"
            } else {
                "010.00"
            };
            csv.push_str(&row(&format!("S-{n:03}"), price));
        }
        csv
    };
    let scanned = |env: &TestEnv| {
        let pg = env.pg.clone();
        async move {
            let scan: (i64, i64, String) = sqlx::query_as(
                "SELECT count(*) FILTER (WHERE delisted_at IS NULL),
                        count(*) FILTER (WHERE delisted_at IS NOT NULL),
                        coalesce(sum(('x' || substr(digest, 1, 15))::bit(60)::bigint), 0)::text
                 FROM catalog_items WHERE source = 'cotopaxi'",
            )
            .fetch_one(&pg)
            .await
            .unwrap();
            let kept: (i64, i64, String, i64) = sqlx::query_as(
                "SELECT sum(listed)::bigint, sum(delisted)::bigint, sum(checksum)::text, count(*)
                 FROM catalog_sums WHERE source = 'cotopaxi'",
            )
            .fetch_one(&pg)
            .await
            .unwrap();
            (scan, kept)
        }
    };
    // Day 1 writes 100 items; day 2 changes a tenth, drops 10 (delisted); day 3 brings 5 of
    // them back (relisted) and changes another tenth.
    for (day, range, changed, listed, delisted) in [
        (1, 0..100, 99, 100, 0),
        (2, 0..90, 3, 90, 10),
        (3, 0..95, 7, 95, 5),
    ] {
        let key = format!("sums/{day}.csv");
        env.put(&key, snapshot(range, changed)).await;
        let job = ingest_json(&env, &key, &[]);
        assert_eq!(job["status"], "completed", "day {day}: {job}");
        assert_eq!(
            job["reconciliation"]["catalog_ok"], true,
            "day {day}: {job}"
        );
        let ((l, d, checksum), (kept_l, kept_d, kept_checksum, rows)) = scanned(&env).await;
        assert_eq!((l, d), (listed, delisted), "day {day}");
        assert_eq!(
            (kept_l, kept_d, &kept_checksum),
            (l, d, &checksum),
            "day {day}: the kept sums are the items' sums"
        );
        assert_eq!(
            rows, 1,
            "day {day}: the completed job folded its source's sums"
        );
        let stored: Value =
            sqlx::query_scalar("SELECT reconciliation FROM etl_jobs WHERE id = $1::uuid")
                .bind(job["job_id"].as_str().unwrap())
                .fetch_one(&env.pg)
                .await
                .unwrap();
        let postgres = &stored["catalog"]["postgres"];
        assert_eq!(
            postgres["checksum"],
            checksum.as_str(),
            "day {day}: {stored}"
        );
        assert!(
            postgres.get("sums_match").is_none(),
            "the job read the sums, not the items: {stored}"
        );
    }

    // A delta written past the triggers: the items and both stores still agree, the sums do not.
    sqlx::query("INSERT INTO catalog_sums VALUES ('cotopaxi', 0, 0, 1)")
        .execute(&env.pg)
        .await
        .unwrap();
    let last = ingest_json(&env, "sums/3.csv", &[]);
    let found = env.etlctl(&["reconcile", last["job_id"].as_str().unwrap(), "--json"]);
    assert_eq!(found.code, 1, "{}{}", found.stdout, found.stderr);
    let found = found.json();
    assert_eq!(found["catalog"]["postgres"]["sums_match"], false, "{found}");
    assert_eq!(found["catalog"]["differing_items"], 0, "{found}");
    assert!(
        found["deltas"].to_string().contains("catalog_sums"),
        "{found}"
    );

    env.put("sums/4.csv", snapshot(0..95, 1)).await;
    let failed = ingest_json(&env, "sums/4.csv", &[]);
    assert_eq!(failed["status"], "failed", "{failed}");
    assert_eq!(failed["error_type"], "reconciliation_failed", "{failed}");
    assert!(
        failed["error"].as_str().unwrap().contains("catalog_sums"),
        "{failed}"
    );

    // The README's rebuild, then the failed job's retry completes.
    let rebuild =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md")).unwrap();
    let recipe = rebuild
        .split("-- rebuild catalog_sums\n")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("the README's Operating section holds the rebuild");
    sqlx::raw_sql(&recipe.replace(":'source'", "'cotopaxi'"))
        .execute(&env.pg)
        .await
        .unwrap();
    let ((l, d, checksum), (kept_l, kept_d, kept_checksum, _)) = scanned(&env).await;
    assert_eq!((kept_l, kept_d, kept_checksum), (l, d, checksum));
    let retried = env.etlctl(&[
        "retry",
        failed["job_id"].as_str().unwrap(),
        "--wait",
        "--json",
    ]);
    assert_eq!(retried.json()["status"], "completed", "{}", retried.stdout);
}
