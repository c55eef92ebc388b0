//! Bad configuration fails at start-up, fast, naming the problem and never a secret.

use std::time::Duration;

use crate::harness::TestEnv;

#[tokio::test]
async fn bad_configuration_fails_at_start_up_without_leaking_secrets() {
    let env = TestEnv::new("badconfig").await;
    let pg_secret = "pg-Secret-4711";
    let s3_secret = "s3-Secret-0815-abcdefghijklmnop";
    let wrong_db = format!("postgres://postgres:{pg_secret}@127.0.0.1:5432/no_such_database");
    let cases: [(&[(&str, &str)], &str); 6] = [
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
