//! Input that looks like SQL is data; secrets never leave the process that holds them.

use crate::harness::{TestEnv, u};

#[tokio::test(flavor = "multi_thread")]
async fn sql_looking_fields_are_stored_literally_and_secrets_never_leak() {
    let mut env = TestEnv::new("security").await;
    // Local Postgres trusts local connections, so a password in the URL is accepted and
    // unused: enough to check it is never printed or stored.
    let database_url = env.setting("DATABASE_URL").unwrap();
    let pg_password = format!("pg-secret-{}", std::process::id());
    let with_password =
        database_url.replacen("://postgres@", &format!("://postgres:{pg_password}@"), 1);
    assert_ne!(
        with_password, database_url,
        "DATABASE_URL has the user postgres"
    );
    env.start_worker_with(&[("DATABASE_URL", with_password.as_str())]);
    let s3_secret = env.setting("AWS_SECRET_ACCESS_KEY").unwrap_or_else(|| {
        activities::config::Config::from_env(activities::config::Needs::ALL)
            .unwrap()
            .s3_secret_access_key
            .expose()
            .to_owned()
    });

    let name = "Robert'); DROP TABLE catalog_items; --";
    let description = "' OR '1'='1'; SELECT * FROM etl_jobs; -- $1 \\N %s {}";
    let brand = "'); ALTER TABLE catalog_items DELETE WHERE 1 --";
    let csv = format!(
        "sku,name,brand,description,product_url\n\
         sql-1,\"{name}\",\"{brand}\",\"{description}\",https://shop.example/p?id=1%27%20OR%201=1\n\
         \"x'; DROP TABLE etl_jobs; --\",Bad sku,,,https://shop.example/p/2\n"
    );
    env.put("sql.csv", csv).await;
    let out = env.ingest("sql.csv", &["--wait"]);
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    let summary = out.json();
    assert_eq!(
        (u(&summary["rows_valid"]), u(&summary["rows_invalid"])),
        (1, 1)
    );

    let (pg_name, pg_brand, pg_description, url): (String, String, String, String) =
        sqlx::query_as(
            "SELECT name, brand, description, product_url FROM catalog_items WHERE sku = 'sql-1'",
        )
        .fetch_one(&env.pg)
        .await
        .unwrap();
    assert_eq!((pg_name.as_str(), pg_brand.as_str()), (name, brand));
    assert_eq!(pg_description, description);
    assert_eq!(url, "https://shop.example/p?id=1%27%20OR%201=1");
    let raw: String = sqlx::query_scalar("SELECT raw_record FROM invalid_item_logs")
        .fetch_one(&env.pg)
        .await
        .unwrap();
    assert!(raw.contains("x'; DROP TABLE etl_jobs; --"), "{raw}");
    let (ch_name, ch_brand): (String, Option<String>) = env
        .ch
        .query("SELECT name, brand FROM catalog_items FINAL WHERE sku = 'sql-1'")
        .fetch_one()
        .await
        .unwrap();
    assert_eq!((ch_name.as_str(), ch_brand.as_deref()), (name, Some(brand)));
    let ch_items: u64 = env
        .ch
        .query("SELECT count() FROM catalog_items FINAL")
        .fetch_one()
        .await
        .unwrap();
    assert_eq!(ch_items, 1);

    // Secrets: not in the worker's log, the job rows, etlctl's output or the history.
    let job_id = summary["job_id"].as_str().unwrap();
    let workflow_id = summary["workflow_id"].as_str().unwrap();
    let job_rows: String =
        sqlx::query_scalar("SELECT string_agg(row_to_json(j)::text, E'\\n') FROM etl_jobs j")
            .fetch_one(&env.pg)
            .await
            .unwrap();
    let shown = env
        .etlctl(&["jobs", "show", job_id, "--chunks", "--json"])
        .stdout;
    let history = env.temporal_history(workflow_id);
    assert!(
        history.contains(job_id),
        "the decoded history holds the payloads"
    );
    let log = env.worker_log();
    assert!(log.contains("chunk done"), "the worker log was captured");
    for (secret, what) in [
        (pg_password.as_str(), "Postgres password"),
        (s3_secret.as_str(), "S3 secret key"),
    ] {
        for (place, text) in [
            ("worker log", &log),
            ("job rows", &job_rows),
            ("etlctl output", &shown),
            ("workflow history", &history),
        ] {
            assert!(!text.contains(secret), "the {what} appears in the {place}");
        }
    }
}
