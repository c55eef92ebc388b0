//! Exactly once per object version, bounded for any input, newer object wins across jobs,
//! bounded source runs: against the real services.

use serde_json::Value;

use crate::{
    harness::{TestEnv, u},
    ingest::{observations, raw_observations, wait_until_final},
};

/// A catalog of `skus` (item `n` is `ITEM-n`) whose prices are `n + price_offset`.
pub(crate) fn snapshot(skus: impl IntoIterator<Item = usize>, price_offset: usize) -> String {
    let mut csv = String::from("sku,name,product_url,price,availability\n");
    for n in skus {
        csv.push_str(&format!(
            "ITEM-{n},Item {n},https://shop.example/items/{n},{}.00,in stock\n",
            n + price_offset
        ));
    }
    csv
}

/// The price Postgres and ClickHouse (`FINAL`) hold for an item.
pub(crate) async fn prices(env: &TestEnv, sku: &str) -> (String, String) {
    let pg: rust_decimal::Decimal =
        sqlx::query_scalar("SELECT price FROM catalog_items WHERE sku = $1")
            .bind(sku)
            .fetch_one(&env.pg)
            .await
            .unwrap();
    let ch: String = env
        .ch
        .query("SELECT toString(assumeNotNull(price)) FROM catalog_items FINAL WHERE sku = ?")
        .bind(sku)
        .fetch_one()
        .await
        .unwrap();
    (pg.normalize().to_string(), ch)
}

fn job_id(out: &Value) -> String {
    out["job_id"].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_workflow_id_is_one_object_version_and_mode() {
    let mut env = TestEnv::new("wfid_conflict").await;
    env.start_worker();
    env.put("a.csv", snapshot(0..5, 0)).await;
    env.put("b.csv", snapshot(5..10, 0)).await;
    let first = env.ingest("a.csv", &["--wait", "--workflow-id", "nightly-x"]);
    assert_eq!(first.code, 0, "{}{}", first.stdout, first.stderr);

    let other_object = env.ingest("b.csv", &["--wait", "--workflow-id", "nightly-x"]);
    other_object.assert_refused(2, "belongs to job");
    other_object.assert_refused(2, "choose another --workflow-id");
    let other_mode = env.ingest("a.csv", &["--dry-run", "--workflow-id", "nightly-x"]);
    other_mode.assert_refused(2, "belongs to job");
    env.put("a.csv", snapshot(0..6, 1)).await;
    let other_etag = env.ingest("a.csv", &["--workflow-id", "nightly-x"]);
    other_etag.assert_refused(2, "not to this request");
    // The job itself is untouched.
    let shown = env
        .etlctl(&["jobs", "show", &job_id(&first.json()), "--json"])
        .json();
    assert_eq!(
        (shown["status"].as_str(), u(&shown["rows_total"])),
        (Some("completed"), 5)
    );
}

/// The newer object wins for every shared item, whichever job ran last.
#[tokio::test(flavor = "multi_thread")]
async fn an_older_object_ingested_after_a_newer_one_changes_nothing() {
    let mut env = TestEnv::new("older_later").await;
    env.start_worker();
    // Put in this order (and, on a tie of Last-Modified, ordered by key): day/2 is newer.
    env.put("day/1.csv", snapshot(0..30, 100)).await;
    env.put("day/2.csv", snapshot(0..20, 500)).await;
    let newer = env.ingest("day/2.csv", &["--wait", "--chunk-bytes", "200"]);
    assert_eq!(newer.code, 0, "{}{}", newer.stdout, newer.stderr);
    let older = env.ingest("day/1.csv", &["--wait", "--chunk-bytes", "200"]);
    assert_eq!(older.code, 0, "{}{}", older.stdout, older.stderr);
    let older = older.json();
    assert_eq!(older["status"], "completed", "{older}");
    assert_eq!(older["reconciliation"]["ok"], true, "{older}");
    for n in [0, 7, 19] {
        assert_eq!(
            prices(&env, &format!("ITEM-{n}")).await,
            (format!("{}", n + 500), format!("{}", n + 500)),
            "ITEM-{n} keeps the newer object's price"
        );
    }
    // The older object's own items: the newer snapshot did not list them; it adds none.
    let listed: i64 = sqlx::query_scalar("SELECT count(*) FROM catalog_items")
        .fetch_one(&env.pg)
        .await
        .unwrap();
    assert_eq!(listed, 20);
    // Both versions are history.
    assert_eq!(observations(&env, "day/1.csv").await, 30);
    assert_eq!(observations(&env, "day/2.csv").await, 20);
}

/// Two objects of one source ingested at the same time, in both orders of starting: the newer
/// object's values end up in both stores, however the chunks interleave.
#[tokio::test(flavor = "multi_thread")]
async fn two_objects_of_a_source_at_once_the_newer_wins_in_both_orders() {
    let mut env = TestEnv::new("concurrent").await;
    env.start_worker();
    env.start_worker();
    for (round, newer_first) in [(0, true), (1, false)] {
        let source = format!("src{round}");
        // On a tie of Last-Modified the key decides: "b-newer" sorts after "a-older".
        let older_key = format!("r{round}/a-older.csv");
        let newer_key = format!("r{round}/b-newer.csv");
        env.put(&older_key, snapshot(0..200, 100)).await;
        env.put(&newer_key, snapshot(0..200, 900)).await;
        let start = |key: &str| {
            let uri = env.uri(key);
            let out = env.etlctl(&[
                "ingest",
                uri.as_str(),
                "--source",
                &source,
                "--json",
                "--chunk-bytes",
                "300",
                "--parallel",
                "4",
            ]);
            assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
            job_id(&out.json())
        };
        let (first, second) = if newer_first {
            (start(&newer_key), start(&older_key))
        } else {
            (start(&older_key), start(&newer_key))
        };
        for job in [first, second] {
            let summary = wait_until_final(&env, &job).await;
            assert_eq!(summary["status"], "completed", "{summary}");
        }
        let wrong: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM catalog_items
             WHERE source = $1 AND price <> substr(sku, 6)::int + 900",
        )
        .bind(&source)
        .fetch_one(&env.pg)
        .await
        .unwrap();
        assert_eq!(
            wrong, 0,
            "round {round}: every item has the newer price in Postgres"
        );
        let ch_wrong: u64 = env
            .ch
            .query(
                "SELECT countIf(toFloat64(price) != toFloat64(toUInt64(substring(sku, 6)) + 900))
                 FROM catalog_items FINAL WHERE source = ?",
            )
            .bind(&source)
            .fetch_one()
            .await
            .unwrap();
        assert_eq!(ch_wrong, 0, "round {round}: and in ClickHouse");
    }
}

/// One unclosed quote near the top of a large object turns the rest into one record: the plan
/// stops at the limit, the job fails with `record_too_large` naming the row and the byte,
/// nothing is written, and the worker's memory stays small.
#[tokio::test(flavor = "multi_thread")]
async fn an_unclosed_quote_fails_the_plan_with_record_too_large() {
    let mut env = TestEnv::new("unclosed").await;
    env.start_worker();
    let mut csv = snapshot(0..10, 0).into_bytes();
    let offset = csv.len();
    csv.extend_from_slice(b"ITEM-10,\"Unclosed name,https://shop.example/items/10,1.00,\n");
    let filler = snapshot(11..30, 0);
    while csv.len() < 48 << 20 {
        csv.extend_from_slice(filler.as_bytes());
    }
    env.put("unclosed.csv", csv).await;
    let out = env.ingest("unclosed.csv", &["--wait"]);
    assert_eq!(out.code, 1, "{}{}", out.stdout, out.stderr);
    let summary = out.json();
    assert_eq!(summary["status"], "failed", "{summary}");
    assert_eq!(summary["error_type"], "record_too_large", "{summary}");
    let error = summary["error"].as_str().unwrap();
    assert!(error.contains("row 11"), "{error}");
    assert!(error.contains(&format!("byte {offset}")), "{error}");
    let chunks: i64 = sqlx::query_scalar("SELECT count(*) FROM etl_chunks")
        .fetch_one(&env.pg)
        .await
        .unwrap();
    assert_eq!(chunks, 0, "nothing of the plan was stored");
    let rss = env.worker_peak_rss_kib();
    assert!(rss < 256 * 1024, "worker peak RSS {rss} KiB");
}

/// A long record under the limit is an ordinary record; one over it needs a higher
/// `--max-record-bytes`.
#[tokio::test(flavor = "multi_thread")]
async fn long_records_ingest_up_to_the_limit_and_the_limit_can_be_raised() {
    let mut env = TestEnv::new("long_record").await;
    env.start_worker();
    let record = |n: usize, notes: usize| {
        format!(
            "sku,name,product_url,notes\nLONG-{n},Long,https://shop.example/l,\"{}\"\n",
            "x".repeat(notes)
        )
    };
    env.put("900k.csv", record(1, 900_000)).await;
    let out = env.ingest("900k.csv", &["--wait"]);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    assert_eq!(u(&out.json()["rows_valid"]), 1);
    let stored: i32 = sqlx::query_scalar(
        "SELECT length(attributes ->> 'notes') FROM catalog_items WHERE sku = 'LONG-1'",
    )
    .fetch_one(&env.pg)
    .await
    .unwrap();
    assert_eq!(stored, 900_000);

    env.put("2m.csv", record(2, 2_000_000)).await;
    let refused = env.ingest("2m.csv", &["--wait"]);
    assert_eq!(refused.json()["error_type"], "record_too_large");
    let raised = env.ingest(
        "2m.csv",
        &[
            "--wait",
            "--max-record-bytes",
            "3000000",
            "--workflow-id",
            "raised",
        ],
    );
    assert_eq!(raised.code, 0, "{}{}", raised.stdout, raised.stderr);
    assert_eq!(u(&raised.json()["rows_valid"]), 1);
}

/// A repair (another job of the same object version) writes no second observation.
#[tokio::test(flavor = "multi_thread")]
async fn repairs_never_double_the_history() {
    let mut env = TestEnv::new("history_once").await;
    env.start_worker();
    env.put("h.csv", snapshot(0..120, 0)).await;
    let first = env
        .ingest("h.csv", &["--wait", "--chunk-bytes", "500"])
        .json();
    let repaired = env.etlctl(&["repair", &job_id(&first), "--wait", "--json"]);
    assert_eq!(repaired.code, 0, "{}{}", repaired.stdout, repaired.stderr);
    let again = env.etlctl(&["repair", &job_id(&repaired.json()), "--wait", "--json"]);
    assert_eq!(again.code, 0, "{}{}", again.stdout, again.stderr);
    assert_eq!(again.json()["reconciliation"]["ok"], true);
    assert_eq!(observations(&env, "h.csv").await, 120);
    assert_eq!(raw_observations(&env, "h.csv").await, 120);
}

/// A prefix of thousands of objects: the listing is read page by page and the run's report
/// holds only what it started; everything else is counted.
#[tokio::test(flavor = "multi_thread")]
async fn source_runs_page_through_thousands_of_objects() {
    let mut env = TestEnv::new("many_objects").await;
    env.start_worker();
    let source = env.source_name();
    let objects = 2_000;
    env.put_many(
        "many/",
        objects,
        "sku,name,product_url\nA,Alpha,https://shop.example/a\n",
    )
    .await;
    let prefix = env.uri("many/");
    let out = env.etlctl(&[
        "ingest-source",
        "--source",
        &source,
        "--uri",
        &prefix,
        "--wait",
        "--json",
        "--max-objects",
        "3",
        "--list-page-size",
        "50",
        "--partial",
    ]);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    let report = out.json();
    assert_eq!(u(&report["listed"]), objects as u64, "{report}");
    assert_eq!(u(&report["started"]), 3);
    assert_eq!(u(&report["completed"]), 3);
    assert_eq!(u(&report["remaining"]), objects as u64 - 3);
    assert_eq!(report["objects"].as_array().unwrap().len(), 3);
    // The oldest three (Last-Modified, then key), in order.
    let mut all = Vec::new();
    let mut next = None;
    loop {
        let page = env
            .s3
            .list_page(&env.bucket, "many/", 1000, next)
            .await
            .unwrap();
        all.extend(page.objects.into_iter().map(|o| {
            let modified = chrono::DateTime::parse_from_rfc3339(&o.last_modified).unwrap();
            (modified, o.key)
        }));
        match page.next {
            Some(token) => next = Some(token),
            None => break,
        }
    }
    all.sort();
    let oldest: Vec<&str> = all[..3].iter().map(|(_, key)| key.as_str()).collect();
    let keys: Vec<&str> = report["objects"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["key"].as_str().unwrap())
        .collect();
    assert_eq!(keys, oldest);
    let lengths = env.history_lengths(report["workflow_id"].as_str().unwrap());
    assert!(
        lengths.iter().all(|n| *n < 200),
        "the run's history stays small: {lengths:?}"
    );
}
