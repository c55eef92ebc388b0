//! Configuration: nothing is assumed (no endpoint, no credential in the binaries), every
//! missing or bad setting fails at start-up, fast, named, and without a secret in the message.

use std::{path::PathBuf, process::Command, time::Duration};

use crate::harness::TestEnv;

/// Runs a binary with no environment but `PATH` and `HOME`.
fn bare(binary: &str, args: &[&str]) -> (i32, String) {
    let output = Command::new(crate::harness::bin_dir().join(binary))
        .args(args)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", "/nonexistent")
        .output()
        .expect("binary");
    (
        output.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ),
    )
}

#[test]
fn without_configuration_every_missing_variable_is_named() {
    let (code, output) = bare("etl-worker", &[]);
    assert_ne!(code, 0, "{output}");
    for name in [
        "TEMPORAL_ADDRESS",
        "DATABASE_URL",
        "CLICKHOUSE_URL",
        "S3_REGION",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
    ] {
        assert!(output.contains(name), "{output} should name {name}");
    }
    // A command needs only the settings of the services it talks to.
    let (code, output) = bare("etlctl", &["jobs", "list"]);
    assert_eq!(code, 2, "{output}");
    assert!(
        output.contains("missing configuration: DATABASE_URL"),
        "{output}"
    );
    assert!(!output.contains("CLICKHOUSE_URL"), "{output}");
    let (code, output) = bare("etlctl", &["generate", "--rows", "3"]);
    assert_eq!(code, 0, "generating to stdout needs no service: {output}");
}

/// `strings` of the release binaries: the local stack's development credentials come from
/// `make env` only, never from a built-in default.
#[test]
fn the_binaries_hold_no_development_secret() {
    let stack = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/stack.sh");
    let env = Command::new("bash").arg(stack).arg("env").output().unwrap();
    let env = String::from_utf8(env.stdout).unwrap();
    let secrets: Vec<&str> = env
        .lines()
        .filter_map(|line| {
            let (name, value) = line.strip_prefix("export ")?.split_once('=')?;
            matches!(name, "AWS_ACCESS_KEY_ID" | "AWS_SECRET_ACCESS_KEY").then_some(value)
        })
        .collect();
    assert_eq!(secrets.len(), 2, "{env}");
    for binary in ["etl-worker", "etlctl", "etl-bench"] {
        let bytes = std::fs::read(crate::harness::bin_dir().join(binary)).unwrap();
        for secret in &secrets {
            assert!(
                !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
                "{binary} contains the development credential {secret}"
            );
        }
    }
}

/// Bad configuration fails at start-up, fast, naming the problem and never a secret.
#[tokio::test(flavor = "multi_thread")]
async fn bad_configuration_fails_at_start_up_without_leaking_secrets() {
    let env = TestEnv::new("badconfig").await;
    let pg_secret = "pg-Secret-4711";
    let s3_secret = "s3-Secret-0815-abcdefghijklmnop";
    let wrong_db = format!("postgres://postgres:{pg_secret}@127.0.0.1:5432/no_such_database");
    // Another host and no sslmode: libpq's `prefer` could send the password in plaintext.
    let remote_without_sslmode = format!("postgres://etl:{pg_secret}@db.example.com/catalog");
    let cases: [(&[(&str, &str)], &str); 12] = [
        (
            &[("DATABASE_URL", remote_without_sslmode.as_str())],
            "no sslmode is set",
        ),
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
            &[("TEMPORAL_ADDRESS", "127.0.0.1:9")],
            "cannot reach Temporal",
        ),
        (&[("ETL_PAUSE_AT", "mid-chunk")], "ETL_PAUSE_AT is invalid"),
        (&[("ETL_LOG_FORMAT", "xml")], "ETL_LOG_FORMAT is invalid"),
        (
            &[("ETL_PLAN_MENTIONS_IN_MEMORY", "-1")],
            "ETL_PLAN_MENTIONS_IN_MEMORY is invalid",
        ),
        (
            &[("ETL_MAX_CONCURRENT_ACTIVITIES", "0")],
            "ETL_MAX_CONCURRENT_ACTIVITIES is invalid",
        ),
        (
            &[("ETL_METRICS_ADDR", "nowhere")],
            "ETL_METRICS_ADDR is invalid",
        ),
        (
            &[("CLICKHOUSE_CA_FILE", "/no/such/ca.pem")],
            "CLICKHOUSE_CA_FILE is invalid",
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
            elapsed < Duration::from_secs(30),
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
