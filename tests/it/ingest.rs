//! The ingest spine end to end: `etlctl ingest` → Temporal → `etl-worker` → S3, Postgres,
//! ClickHouse, checked against the generator's own expected counts.

use std::time::Duration;

use activities::{
    chunk::{parse_chunk, parse_header},
    item_hash::content_hash,
};
use generator::{GeneratedStats, GeneratorConfig, NextDay};
use serde_json::Value;

use crate::harness::{TestEnv, generated, u};

pub(crate) fn catalog(config: GeneratorConfig) -> (Vec<u8>, GeneratedStats) {
    generated(&config)
}

/// Observations of an object's rows in ClickHouse (`FINAL`, delistings left out).
pub(crate) async fn observations(env: &TestEnv, key: &str) -> u64 {
    env.ch
        .query(
            "SELECT count() FROM catalog_item_observations FINAL
             WHERE object_key = ? AND row_number > 0",
        )
        .bind(key)
        .fetch_one()
        .await
        .unwrap()
}

/// The same without `FINAL`: a physical duplicate (a replayed insert) counts twice here.
pub(crate) async fn raw_observations(env: &TestEnv, key: &str) -> u64 {
    env.ch
        .query(
            "SELECT count() FROM catalog_item_observations
             WHERE object_key = ? AND row_number > 0",
        )
        .bind(key)
        .fetch_one()
        .await
        .unwrap()
}

/// Both stores hold exactly what the generator wrote: no duplicate and no lost row.
pub(crate) async fn assert_reconciled(env: &TestEnv, summary: &Value, stats: &GeneratedStats) {
    let job_id = summary["job_id"].as_str().unwrap();
    assert_eq!(summary["status"], "completed", "{summary}");
    assert_eq!(summary["error"], Value::Null);
    assert_eq!(u(&summary["rows_total"]), stats.rows_total);
    assert_eq!(u(&summary["rows_valid"]), stats.rows_valid);
    assert_eq!(u(&summary["rows_invalid"]), stats.rows_invalid);
    assert_eq!(u(&summary["items"]), stats.distinct_valid_skus);
    let reconciliation = &summary["reconciliation"];
    assert_eq!(reconciliation["ok"], true, "{summary}");
    assert_eq!(u(&reconciliation["source_rows"]), stats.rows_total);
    assert_eq!(u(&reconciliation["pg_items"]), stats.distinct_valid_skus);
    assert_eq!(u(&reconciliation["ch_items"]), stats.distinct_valid_skus);

    let pg_items = env
        .scalar(
            "SELECT count(*) FROM catalog_items WHERE last_job_id = $1",
            job_id,
        )
        .await;
    assert_eq!(pg_items as u64, stats.distinct_valid_skus);
    let invalid = env
        .scalar(
            "SELECT count(*) FROM invalid_item_logs WHERE job_id = $1",
            job_id,
        )
        .await;
    assert_eq!(invalid as u64, stats.rows_invalid);
    let ch_items: u64 = env
        .ch
        .query("SELECT count() FROM catalog_items FINAL WHERE job_id = toUUID(?)")
        .bind(job_id)
        .fetch_one()
        .await
        .unwrap();
    assert_eq!(ch_items, stats.distinct_valid_skus);
    let ch_observations = observations(env, summary["object"]["key"].as_str().unwrap()).await;
    assert_eq!(ch_observations, stats.rows_valid);
}

/// A chunk's catalog write goes to Postgres in statements of at most 2,000 rows: one chunk of
/// 5,000 rows, first as a source's first snapshot (plain inserts, the upsert for the skus it
/// repeats), then as the next day's (a third of the rows changed, a tenth gone, a tenth new:
/// the unchanged-item lookup and the upsert), leaves Postgres listing exactly the last file's
/// items with their content, and ClickHouse agreeing.
#[tokio::test(flavor = "multi_thread")]
async fn a_chunk_of_thousands_of_rows_is_written_whole() {
    let mut env = TestEnv::new("big_chunk").await;
    env.start_worker();
    let day = |next_day| GeneratorConfig {
        rows: 5_000,
        seed: 73,
        invalid_per_mille: 0,
        duplicate_per_mille: 20,
        next_day,
        ..GeneratorConfig::default()
    };
    let one_chunk = ["--wait", "--chunk-bytes", "67108864"];
    let (body, stats) = catalog(day(None));
    env.put("big/day1.csv", body).await;
    let out = env.ingest("big/day1.csv", &one_chunk);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    let summary = out.json();
    assert_eq!(u(&summary["chunks"]), 1, "{summary}");
    assert_reconciled(&env, &summary, &stats).await;
    // Every field went in as the worker's digest of it says (the first snapshot's rows are
    // copied in binary): Postgres' own digest of each stored row is the stored one.
    let misdigested: Vec<String> = sqlx::query_scalar(
        "SELECT sku FROM catalog_items WHERE source = 'cotopaxi'
           AND digest IS DISTINCT FROM catalog_item_digest(sku, name, brand, category,
               description, price, currency, weight_grams, availability, product_url,
               image_urls, attributes, delisted_at IS NOT NULL, version_modified_at,
               version_key, version_etag, version_row)
         ORDER BY sku LIMIT 5",
    )
    .fetch_all(&env.pg)
    .await
    .unwrap();
    assert!(
        misdigested.is_empty(),
        "stored rows differ from their digest: {misdigested:?}"
    );

    let (body, stats) = catalog(day(Some(NextDay {
        changed_per_mille: 300,
        removed_per_mille: 100,
        added_per_mille: 100,
    })));
    env.put("big/day2.csv", body.clone()).await;
    let out = env.ingest("big/day2.csv", &one_chunk);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    let summary = out.json();
    assert_eq!(summary["status"], "completed", "{summary}");
    assert_eq!(u(&summary["chunks"]), 1, "{summary}");
    assert_eq!(u(&summary["rows_valid"]), stats.rows_valid);
    assert_eq!(u(&summary["items"]), stats.distinct_valid_skus);
    assert_eq!(summary["reconciliation"]["ok"], true, "{summary}");

    // What the last file says each listed item is: its last row's content.
    let header_end = body.iter().position(|&b| b == b'\n').unwrap() + 1;
    let header = parse_header(&body[..header_end]).unwrap();
    let parsed = parse_chunk(&header, &body[header_end..], 1);
    let expected: Vec<(String, Vec<u8>)> = parsed
        .latest_per_sku()
        .into_iter()
        .map(|row| (row.item.sku.clone(), content_hash(&row.item).to_vec()))
        .collect();
    assert_eq!(expected.len() as u64, stats.distinct_valid_skus);
    let listed: Vec<(String, Vec<u8>)> = sqlx::query_as(
        "SELECT sku, content_hash FROM catalog_items
         WHERE source = 'cotopaxi' AND delisted_at IS NULL ORDER BY sku COLLATE \"C\"",
    )
    .fetch_all(&env.pg)
    .await
    .unwrap();
    let stale = expected.iter().zip(&listed).find(|(e, l)| e != l);
    assert!(
        listed.len() == expected.len() && stale.is_none(),
        "Postgres lists {} items where the file has {}; first difference: {stale:?}",
        listed.len(),
        expected.len()
    );
    let ch_listed: u64 = env
        .ch
        .query("SELECT count() FROM catalog_items FINAL WHERE source = 'cotopaxi'")
        .fetch_one()
        .await
        .unwrap();
    assert_eq!(ch_listed, stats.distinct_valid_skus);
}

/// A worker that compresses its ClickHouse traffic (`CLICKHOUSE_COMPRESSION=lz4`, the default
/// for a remote server) writes the same rows: the Native blocks go LZ4-framed, and reconcile,
/// which recomputes every stored field's digest in both stores, finds nothing different.
#[tokio::test]
async fn a_worker_compressing_its_clickhouse_traffic_stores_the_same_rows() {
    let mut env = TestEnv::new("lz4").await;
    env.start_worker_with(&[("CLICKHOUSE_COMPRESSION", "lz4")]);
    let (body, stats) = catalog(GeneratorConfig {
        rows: 400,
        invalid_per_mille: 30,
        ..GeneratorConfig::default()
    });
    env.put("cotopaxi/lz4.csv", body).await;
    let out = env.ingest("cotopaxi/lz4.csv", &["--wait", "--chunk-bytes", "20000"]);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    let summary = out.json();
    assert_reconciled(&env, &summary, &stats).await;
    let job_id = summary["job_id"].as_str().unwrap();
    let verified = env.etlctl(&["reconcile", job_id, "--json"]);
    assert_eq!(verified.code, 0, "{}{}", verified.stdout, verified.stderr);
}

#[tokio::test]
async fn clean_file_ingests_with_exact_counts() {
    let mut env = TestEnv::new("clean").await;
    env.start_worker();
    let (body, stats) = catalog(GeneratorConfig {
        rows: 400,
        invalid_per_mille: 0,
        ..GeneratorConfig::default()
    });
    let object = env.put("cotopaxi/clean.csv", body).await;
    let out = env.ingest("cotopaxi/clean.csv", &["--wait", "--chunk-bytes", "20000"]);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    let summary = out.json();
    assert_reconciled(&env, &summary, &stats).await;
    assert_eq!(stats.rows_invalid, 0);
    assert!(u(&summary["chunks"]) > 1);
    assert_eq!(summary["object"]["bucket"], env.bucket.as_str());
    assert_eq!(summary["object"]["key"], "cotopaxi/clean.csv");
    assert_eq!(summary["object"]["etag"], object.etag.as_str());
    assert_eq!(u(&summary["object"]["size"]), object.size);
    assert_eq!(
        summary["object"]["last_modified"],
        object.last_modified.as_str()
    );
    assert!(
        summary["workflow_id"]
            .as_str()
            .unwrap()
            .starts_with("ingest-cotopaxi-")
    );

    // `jobs show` prints the same object for a past job.
    let job_id = summary["job_id"].as_str().unwrap();
    let shown = env.etlctl(&["jobs", "show", job_id, "--json"]);
    assert_eq!(shown.code, 0);
    assert_eq!(shown.json(), summary);
}

#[tokio::test]
async fn invalid_rows_are_stored_with_their_codes() {
    let mut env = TestEnv::new("invalid").await;
    env.start_worker();
    let (body, stats) = catalog(GeneratorConfig {
        rows: 600,
        seed: 7,
        invalid_per_mille: 150,
        ..GeneratorConfig::default()
    });
    assert!(stats.rows_invalid > 50);
    env.put("cotopaxi/invalid.csv", body).await;
    let out = env.ingest(
        "cotopaxi/invalid.csv",
        &["--wait", "--chunk-bytes", "30000"],
    );
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    let summary = out.json();
    assert_reconciled(&env, &summary, &stats).await;
    let job_id: sqlx::types::Uuid = summary["job_id"].as_str().unwrap().parse().unwrap();
    let codes: Vec<(String, i64)> = sqlx::query_as(
        "SELECT e->>'code', count(*) FROM invalid_item_logs, jsonb_array_elements(errors) e
         WHERE job_id = $1 GROUP BY 1 ORDER BY 1",
    )
    .bind(job_id)
    .fetch_all(&env.pg)
    .await
    .unwrap();
    let expected: Vec<(String, i64)> = stats
        .invalid_by_code
        .iter()
        .map(|(code, n)| (code.clone(), *n as i64))
        .collect();
    assert_eq!(codes, expected);
    let (messages_ok, raw_ok): (bool, bool) = sqlx::query_as(
        "SELECT bool_and(e->>'message' <> '' AND e->>'field' <> ''),
                bool_and(raw_record <> '' AND octet_length(raw_record) <= 8192)
         FROM invalid_item_logs, jsonb_array_elements(errors) e WHERE job_id = $1",
    )
    .bind(job_id)
    .fetch_one(&env.pg)
    .await
    .unwrap();
    assert!(messages_ok && raw_ok);
}

#[tokio::test]
async fn duplicate_skus_across_chunks_the_later_row_wins() {
    let mut env = TestEnv::new("dupes").await;
    env.start_worker();
    let mut csv = String::from("sku,name,product_url,price,availability\n");
    csv.push_str("DUP-1,First,https://shop.example/1,10.00,in stock\n");
    for i in 0..60 {
        csv.push_str(&format!(
            "F-{i},Filler {i},https://shop.example/f{i},1.00,\n"
        ));
    }
    csv.push_str("DUP-1,Second,https://shop.example/1b,20.00,sold out\n");
    for i in 60..120 {
        csv.push_str(&format!(
            "F-{i},Filler {i},https://shop.example/f{i},1.00,\n"
        ));
    }
    csv.push_str("DUP-1,Third,https://shop.example/1c,30.50,preorder\n");
    env.put("cotopaxi/dupes.csv", csv).await;
    // Many parallel chunks, so the three DUP-1 rows commit in no particular order.
    let out = env.ingest(
        "cotopaxi/dupes.csv",
        &["--wait", "--chunk-bytes", "200", "--parallel", "8"],
    );
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    let summary = out.json();
    assert_eq!(u(&summary["rows_total"]), 123);
    assert_eq!(u(&summary["rows_valid"]), 123);
    assert_eq!(u(&summary["items"]), 121);
    assert!(u(&summary["chunks"]) > 10);
    let (name, price, availability, row): (String, rust_decimal::Decimal, String, i64) =
        sqlx::query_as(
            "SELECT name, price, availability, version_row FROM catalog_items
             WHERE source = 'cotopaxi' AND sku = 'DUP-1'",
        )
        .fetch_one(&env.pg)
        .await
        .unwrap();
    assert_eq!(
        (name.as_str(), availability.as_str(), row),
        ("Third", "preorder", 123)
    );
    assert_eq!(price.to_string(), "30.50");
    let (ch_name, ch_rows): (String, u64) = env
        .ch
        .query("SELECT any(name), count() FROM catalog_items FINAL WHERE sku = 'DUP-1'")
        .fetch_one()
        .await
        .unwrap();
    assert_eq!((ch_name.as_str(), ch_rows), ("Third", 1));
    let observations: u64 = env
        .ch
        .query("SELECT count() FROM catalog_item_observations FINAL WHERE sku = 'DUP-1'")
        .fetch_one()
        .await
        .unwrap();
    assert_eq!(observations, 3, "every valid record is an observation");
}

#[tokio::test]
async fn tiny_chunks_cut_through_multi_line_fields() {
    let mut env = TestEnv::new("tiny").await;
    env.start_worker();
    let (body, stats) = catalog(GeneratorConfig {
        rows: 250,
        seed: 11,
        crlf: true,
        bom: true,
        ..GeneratorConfig::default()
    });
    env.put("cotopaxi/tiny.csv", body).await;
    let out = env.ingest(
        "cotopaxi/tiny.csv",
        &["--wait", "--chunk-bytes", "64", "--parallel", "8"],
    );
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    let summary = out.json();
    assert_reconciled(&env, &summary, &stats).await;
    // Most records are longer than 64 bytes: about one chunk per record.
    assert!(u(&summary["chunks"]) >= 200, "{summary}");
}

#[tokio::test]
async fn rerunning_the_same_object_returns_the_same_job_and_writes_nothing() {
    let mut env = TestEnv::new("rerun").await;
    env.start_worker();
    let (body, stats) = catalog(GeneratorConfig {
        rows: 300,
        seed: 5,
        ..GeneratorConfig::default()
    });
    env.put("cotopaxi/rerun.csv", body).await;
    let first = env.ingest("cotopaxi/rerun.csv", &["--wait", "--chunk-bytes", "8000"]);
    assert_eq!(first.code, 0, "{}{}", first.stdout, first.stderr);
    let first = first.json();
    assert_reconciled(&env, &first, &stats).await;

    let second = env.ingest("cotopaxi/rerun.csv", &["--wait", "--chunk-bytes", "8000"]);
    assert_eq!(second.code, 0);
    let second = second.json();
    assert_eq!(second, first, "the existing job, unchanged");
    let no_wait = env.ingest("cotopaxi/rerun.csv", &[]);
    assert_eq!(no_wait.json()["job_id"], first["job_id"]);

    let jobs: i64 = sqlx::query_scalar("SELECT count(*) FROM etl_jobs")
        .fetch_one(&env.pg)
        .await
        .unwrap();
    assert_eq!(jobs, 1);
    let raw_observations: u64 = env
        .ch
        .query("SELECT count() FROM catalog_item_observations")
        .fetch_one()
        .await
        .unwrap();
    assert_eq!(raw_observations, stats.rows_valid, "no second write at all");
    let attempts = env
        .scalar(
            "SELECT coalesce(max(attempts), 0)::bigint FROM etl_chunks WHERE job_id = $1",
            first["job_id"].as_str().unwrap(),
        )
        .await;
    assert_eq!(attempts, 1);
}

#[tokio::test]
async fn header_errors_fail_the_job_and_write_nothing() {
    let mut env = TestEnv::new("header").await;
    env.start_worker();
    let cases: [(&str, &[u8], &str); 4] = [
        (
            "missing.csv",
            b"name,price\nA,1\n",
            "missing required column(s): sku, product_url",
        ),
        (
            "duplicated.csv",
            b"sku,name,url,Name\nA,B,https://x.example/,C\n",
            "duplicated column(s): name",
        ),
        ("empty.csv", b"", "is empty (0 bytes)"),
        ("blank.csv", b"\n\r\n\n", "no header record"),
    ];
    for (key, body, message) in cases {
        let key = format!("cotopaxi/{key}");
        env.put(&key, body.to_vec()).await;
        let out = env.ingest(&key, &["--wait"]);
        assert_ne!(out.code, 0, "{key}: a failed job exits non-zero");
        let summary = out.json();
        assert_eq!(summary["status"], "failed", "{key}: {summary}");
        let error = summary["error"].as_str().unwrap();
        assert!(
            error.contains(message),
            "{key}: {error:?} should contain {message:?}"
        );
        assert_eq!(u(&summary["rows_total"]), 0);
    }
    for table in ["catalog_items", "invalid_item_logs", "etl_chunks"] {
        let n: i64 = sqlx::query_scalar(&format!("SELECT count(*) FROM {table}"))
            .fetch_one(&env.pg)
            .await
            .unwrap();
        assert_eq!(n, 0, "{table} is empty");
    }
    let header_only = "sku,name,product_url\r\n";
    env.put("cotopaxi/header-only.csv", header_only).await;
    let out = env.ingest("cotopaxi/header-only.csv", &["--wait"]);
    assert_eq!(
        out.code, 0,
        "a header-only object is a valid ingest of zero rows"
    );
    let summary = out.json();
    assert_eq!(summary["status"], "completed");
    assert_eq!(u(&summary["rows_total"]), 0);
    assert_eq!(u(&summary["chunks"]), 0);
}

/// The job's summary if it has ended and its workflow has closed (a completed job's last step,
/// the delisting's copy to ClickHouse, follows its final status).
pub(crate) async fn wait_until_ended(env: &TestEnv, job_id: &str) -> Option<Value> {
    // The workflow creates the job row: until its plan runs, there is none (exit 2).
    let shown = env.etlctl(&["jobs", "show", job_id, "--json"]);
    if shown.code == 2 || shown.json()["status"] == "running" {
        return None;
    }
    let workflow_id = shown.json()["workflow_id"].as_str().unwrap().to_owned();
    if env.workflow_running(&workflow_id) {
        return None;
    }
    Some(env.etlctl(&["jobs", "show", job_id, "--json"]).json())
}

/// [`wait_until_ended`], waited for.
pub(crate) async fn wait_until_final(env: &TestEnv, job_id: &str) -> Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(300);
    loop {
        if let Some(summary) = wait_until_ended(env, job_id).await {
            return summary;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "job {job_id} never ended"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn dry_run_records_counts_and_invalid_rows_but_no_catalog_writes() {
    let mut env = TestEnv::new("dryrun").await;
    env.start_worker();
    let (body, stats) = catalog(GeneratorConfig {
        rows: 300,
        seed: 21,
        invalid_per_mille: 100,
        ..GeneratorConfig::default()
    });
    env.put("cotopaxi/dry.csv", body).await;
    let out = env.ingest(
        "cotopaxi/dry.csv",
        &["--wait", "--dry-run", "--chunk-bytes", "9000"],
    );
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    let summary = out.json();
    assert_eq!(summary["status"], "completed");
    assert_eq!(summary["dry_run"], true);
    assert!(
        summary["workflow_id"]
            .as_str()
            .unwrap()
            .starts_with("dry-run-cotopaxi-")
    );
    assert_eq!(u(&summary["rows_total"]), stats.rows_total);
    assert_eq!(u(&summary["rows_valid"]), stats.rows_valid);
    assert_eq!(u(&summary["rows_invalid"]), stats.rows_invalid);
    assert_eq!(summary["items"], Value::Null);
    let reconciliation = &summary["reconciliation"];
    assert_eq!(reconciliation["ok"], true);
    assert_eq!(u(&reconciliation["source_rows"]), stats.rows_total);
    assert_eq!(reconciliation["pg_items"], Value::Null);
    assert_eq!(reconciliation["ch_items"], Value::Null);
    let job_id = summary["job_id"].as_str().unwrap();
    let invalid = env
        .scalar(
            "SELECT count(*) FROM invalid_item_logs WHERE job_id = $1",
            job_id,
        )
        .await;
    assert_eq!(invalid as u64, stats.rows_invalid);
    for table in ["catalog_items"] {
        let n: i64 = sqlx::query_scalar(&format!("SELECT count(*) FROM {table}"))
            .fetch_one(&env.pg)
            .await
            .unwrap();
        assert_eq!(n, 0, "{table} untouched by a dry run");
    }
    let observations: u64 = env
        .ch
        .query("SELECT count() FROM catalog_item_observations")
        .fetch_one()
        .await
        .unwrap();
    assert_eq!(observations, 0);

    // A real ingest of the same object is a different job.
    let real = env.ingest("cotopaxi/dry.csv", &["--wait", "--chunk-bytes", "9000"]);
    assert_eq!(real.code, 0);
    let real = real.json();
    assert_ne!(real["job_id"], summary["job_id"]);
    assert_reconciled(&env, &real, &stats).await;
}

#[tokio::test]
async fn an_explicit_workflow_id_names_the_job() {
    let mut env = TestEnv::new("wfid").await;
    env.start_worker();
    env.put(
        "cotopaxi/wfid.csv",
        "sku,name,url\nA,Alpha,https://shop.example/a\n",
    )
    .await;
    let out = env.ingest(
        "cotopaxi/wfid.csv",
        &["--wait", "--workflow-id", "nightly-cotopaxi-1"],
    );
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    let summary = out.json();
    assert_eq!(summary["workflow_id"], "nightly-cotopaxi-1");
    assert_eq!(u(&summary["rows_valid"]), 1);
    assert!(
        summary["web_ui_url"]
            .as_str()
            .unwrap()
            .ends_with("/workflows/nightly-cotopaxi-1")
    );
}

#[tokio::test]
async fn long_jobs_continue_as_new_and_keep_exact_counts() {
    let mut env = TestEnv::new("can").await;
    env.start_worker();
    let (body, stats) = catalog(GeneratorConfig {
        rows: 150,
        seed: 31,
        ..GeneratorConfig::default()
    });
    env.put("cotopaxi/can.csv", body).await;
    // ~1 chunk per record and a budget of 60 events: several continue-as-new hops.
    let out = env.ingest(
        "cotopaxi/can.csv",
        &[
            "--wait",
            "--chunk-bytes",
            "64",
            "--parallel",
            "3",
            "--history-event-budget",
            "60",
        ],
    );
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    let summary = out.json();
    assert_reconciled(&env, &summary, &stats).await;
    let runs = env.temporal_runs(summary["workflow_id"].as_str().unwrap());
    assert!(
        runs >= 3,
        "expected several runs of the workflow, got {runs}"
    );
}

#[tokio::test]
async fn text_fields_round_trip_exactly() {
    let mut env = TestEnv::new("roundtrip").await;
    env.start_worker();
    let csv = "sku,name,description,image_urls,product_url,price,weight,weight_unit,Color Name,\
               Ma\\terial\n\
               T-1,\"Tab\there \\\\ back\\\\slash\",\"line1\r\nline2 \\N \"\"quoted\"\" 日本語 🎉\",\
               \"https://cdn.example/a,b.jpg|https://cdn.example/c%22d.jpg\",https://shop.example/t?x=1&y=2,\
               \"$1,299.50\",12,oz,\"Red \"\"Deep\"\"\",\"wool\\\tblend\\N\"\n";
    env.put("cotopaxi/roundtrip.csv", csv).await;
    let out = env.ingest("cotopaxi/roundtrip.csv", &["--wait"]);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    assert_eq!(out.json()["rows_valid"], 1, "{}", out.stdout);
    let (name, description, images, price, weight, attributes): (
        String,
        String,
        Vec<String>,
        rust_decimal::Decimal,
        rust_decimal::Decimal,
        serde_json::Value,
    ) = sqlx::query_as(
        "SELECT name, description, image_urls, price, weight_grams, attributes
         FROM catalog_items WHERE sku = 'T-1'",
    )
    .fetch_one(&env.pg)
    .await
    .unwrap();
    assert_eq!(name, "Tab\there \\\\ back\\\\slash");
    assert_eq!(description, "line1\r\nline2 \\N \"quoted\" 日本語 🎉");
    assert_eq!(
        images,
        [
            "https://cdn.example/a,b.jpg",
            "https://cdn.example/c%22d.jpg"
        ]
    );
    assert_eq!(price.to_string(), "1299.50");
    assert_eq!(weight.to_string(), "340.194278", "12 oz, to the microgram");
    assert_eq!(
        attributes,
        serde_json::json!({"Color Name": "Red \"Deep\"", "Ma\\terial": "wool\\\tblend\\N"})
    );
    let ch_name: String = env
        .ch
        .query("SELECT name FROM catalog_items FINAL WHERE sku = 'T-1'")
        .fetch_one()
        .await
        .unwrap();
    assert_eq!(ch_name, name);
    let ch_images: Vec<String> = env
        .ch
        .query("SELECT image_urls FROM catalog_items FINAL WHERE sku = 'T-1'")
        .fetch_one()
        .await
        .unwrap();
    assert_eq!(ch_images, images);
}

/// The bound: a file planned into 5,000+ chunks completes with exact counts, and no
/// run of its workflow comes near Temporal's limits (at most 10,000 events per run) with the
/// default history budget.
#[tokio::test(flavor = "multi_thread")]
async fn five_thousand_chunks_stay_far_below_the_history_limit() {
    let mut env = TestEnv::new("history").await;
    env.start_worker();
    let (body, stats) = catalog(GeneratorConfig {
        rows: 5_200,
        seed: 32,
        ..GeneratorConfig::default()
    });
    env.put("cotopaxi/history.csv", body).await;
    // One record per chunk.
    let out = env.ingest(
        "cotopaxi/history.csv",
        &["--wait", "--chunk-bytes", "1", "--parallel", "8"],
    );
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    let summary = out.json();
    assert!(u(&summary["chunks"]) >= 5_000, "{summary}");
    assert_reconciled(&env, &summary, &stats).await;
    let lengths = env.history_lengths(summary["workflow_id"].as_str().unwrap());
    assert!(lengths.len() >= 2, "continued as new: {lengths:?}");
    let longest = *lengths.iter().max().unwrap();
    assert!(longest <= 10_000, "a run has {longest} events: {lengths:?}");
    eprintln!("history of the 5,200-chunk job: runs {lengths:?}");
}
