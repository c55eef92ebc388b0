//! TLS to every store, with a CA this test makes itself (openssl): Postgres serving TLS
//! (`sslmode=verify-full`), and nginx terminating TLS in front of ClickHouse, Garage (S3) and
//! Temporal's gRPC port. An ingest over TLS everywhere keeps exact counts; a wrong CA or host
//! name fails at start-up, naming the store and the cause, without a secret.

use std::{
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use tokio::sync::OnceCell;

use crate::{
    harness::TestEnv,
    ingest::{assert_reconciled, catalog},
};

struct Tls {
    dir: PathBuf,
    ch_port: u16,
    s3_port: u16,
    temporal_port: u16,
    /// Kept for the test process's lifetime (see `start_nginx`).
    _nginx: Child,
}

static TLS: OnceCell<Tls> = OnceCell::const_new();

fn run(command: &mut Command) {
    let output = command.output().expect("command");
    assert!(
        output.status.success(),
        "{command:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

fn openssl(dir: &Path, args: &[&str]) {
    run(Command::new("openssl").current_dir(dir).args(args));
}

/// A CA, a second CA nobody trusts, and a server certificate for 127.0.0.1 only (so
/// `localhost` is a wrong host name).
fn make_certificates(dir: &Path) {
    let ca_ext = [
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
    ];
    for (name, subject) in [("ca", "/CN=ETL Test CA"), ("wrong-ca", "/CN=ETL Wrong CA")] {
        let (key, crt) = (format!("{name}.key"), format!("{name}.crt"));
        let mut args = vec![
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-days",
            "30",
            "-keyout",
            &key,
            "-out",
            &crt,
            "-subj",
            subject,
        ];
        args.extend_from_slice(&ca_ext);
        openssl(dir, &args);
    }
    std::fs::write(
        dir.join("server.ext"),
        "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n\
         extendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1\n",
    )
    .unwrap();
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=127.0.0.1",
        ],
    );
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "30",
            "-sha256",
            "-extfile",
            "server.ext",
            "-out",
            "server.crt",
        ],
    );
}

/// Turns TLS on in the local Postgres with the test's server certificate (a reload, no
/// restart; clients that do not ask for TLS are unaffected).
async fn enable_postgres_tls(dir: &Path) {
    let pg_dir = "/var/lib/postgresql/etl-test-tls";
    run(Command::new("install").args([
        "-d", "-o", "postgres", "-g", "postgres", "-m", "0700", pg_dir,
    ]));
    for (file, mode) in [("server.key", "0600"), ("server.crt", "0644")] {
        run(Command::new("install").args([
            "-o",
            "postgres",
            "-g",
            "postgres",
            "-m",
            mode,
            dir.join(file).to_str().unwrap(),
            &format!("{pg_dir}/{file}"),
        ]));
    }
    let admin_url = crate::harness::admin_database_url();
    let mut admin = <sqlx::PgConnection as sqlx::Connection>::connect(&admin_url)
        .await
        .unwrap();
    for statement in [
        format!("ALTER SYSTEM SET ssl_cert_file = '{pg_dir}/server.crt'"),
        format!("ALTER SYSTEM SET ssl_key_file = '{pg_dir}/server.key'"),
        "ALTER SYSTEM SET ssl = on".to_owned(),
        "SELECT pg_reload_conf()".to_owned(),
    ] {
        sqlx::query(&statement).execute(&mut admin).await.unwrap();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn start_nginx(dir: &Path, ch_port: u16, s3_port: u16, temporal_port: u16) -> Child {
    let (crt, key) = (dir.join("server.crt"), dir.join("server.key"));
    let config = format!(
        "daemon off;
master_process off;
worker_processes 1;
pid nginx.pid;
error_log stderr warn;
events {{ worker_connections 512; }}
http {{
    access_log off;
    client_body_temp_path tmp/body; proxy_temp_path tmp/proxy;
    fastcgi_temp_path tmp/fastcgi; uwsgi_temp_path tmp/uwsgi; scgi_temp_path tmp/scgi;
    ssl_certificate {crt};
    ssl_certificate_key {key};
    ssl_protocols TLSv1.2 TLSv1.3;
    server {{
        listen 127.0.0.1:{ch_port} ssl;
        client_max_body_size 0;
        location / {{
            proxy_pass http://127.0.0.1:8123;
            proxy_http_version 1.1; proxy_set_header Connection \"\";
            proxy_request_buffering off; proxy_buffering off;
            proxy_read_timeout 600s; proxy_send_timeout 600s;
        }}
    }}
    server {{
        listen 127.0.0.1:{s3_port} ssl;
        client_max_body_size 0;
        ignore_invalid_headers off;
        location / {{
            proxy_pass http://127.0.0.1:3900;
            proxy_http_version 1.1; proxy_set_header Connection \"\";
            proxy_set_header Host $http_host;
            proxy_request_buffering off; proxy_buffering off; proxy_max_temp_file_size 0;
            proxy_read_timeout 600s; proxy_send_timeout 600s;
        }}
    }}
    server {{
        listen 127.0.0.1:{temporal_port} ssl http2;
        client_max_body_size 0;
        location / {{
            grpc_pass grpc://127.0.0.1:7233;
            grpc_read_timeout 3600s; grpc_send_timeout 3600s;
        }}
    }}
}}
",
        crt = crt.display(),
        key = key.display(),
    );
    std::fs::create_dir_all(dir.join("nginx/tmp")).unwrap();
    std::fs::write(dir.join("nginx/nginx.conf"), config).unwrap();
    // nginx lives as long as this test process: the wrapper stops it when its stdin (a pipe
    // from this process) closes, also when the process dies.
    let child = Command::new("sh")
        .args([
            "-c",
            "nginx -p \"$0\" -c nginx.conf & pid=$!; cat >/dev/null; kill $pid",
        ])
        .arg(dir.join("nginx"))
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("nginx (Debian nginx-light; make up installs it)");
    for port in [ch_port, s3_port, temporal_port] {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "nginx not listening on {port}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    child
}

async fn tls() -> &'static Tls {
    TLS.get_or_init(|| async {
        let dir = std::env::temp_dir().join(format!("etl-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        make_certificates(&dir);
        enable_postgres_tls(&dir).await;
        let (ch_port, s3_port, temporal_port) = (free_port(), free_port(), free_port());
        let nginx = start_nginx(&dir, ch_port, s3_port, temporal_port);
        Tls {
            dir,
            ch_port,
            s3_port,
            temporal_port,
            _nginx: nginx,
        }
    })
    .await
}

/// Every store over TLS, trusting `ca` and reaching the stores as `host`.
fn tls_settings(env: &TestEnv, tls: &Tls, ca: &str, host: &str) -> Vec<(String, String)> {
    let ca = tls.dir.join(ca).display().to_string();
    let database_url = env
        .setting("DATABASE_URL")
        .unwrap()
        .replacen("127.0.0.1", host, 1);
    vec![
        (
            "DATABASE_URL".into(),
            format!("{database_url}?sslmode=verify-full&sslrootcert={ca}"),
        ),
        (
            "CLICKHOUSE_URL".into(),
            format!("https://{host}:{}", tls.ch_port),
        ),
        ("CLICKHOUSE_CA_FILE".into(), ca.clone()),
        (
            "S3_ENDPOINT".into(),
            format!("https://{host}:{}", tls.s3_port),
        ),
        ("S3_CA_FILE".into(), ca.clone()),
        (
            "TEMPORAL_ADDRESS".into(),
            format!("{host}:{}", tls.temporal_port),
        ),
        ("TEMPORAL_TLS_SERVER_CA_CERT_PATH".into(), ca),
    ]
}

#[tokio::test(flavor = "multi_thread")]
async fn an_ingest_over_tls_to_every_store_keeps_exact_counts() {
    let tls = tls().await;
    let mut env = TestEnv::new("tls_ingest").await;
    let settings = tls_settings(&env, tls, "ca.crt", "127.0.0.1");
    let overrides: Vec<(&str, &str)> = settings
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    env.start_worker_with(&overrides);
    let (body, stats) = catalog(generator::GeneratorConfig {
        rows: 500,
        seed: 61,
        ..Default::default()
    });
    env.put("tls.csv", body).await;
    let out = env.ingest("tls.csv", &["--wait", "--chunk-bytes", "30000"]);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    assert_reconciled(&env, &out.json(), &stats).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wrong_ca_or_host_name_fails_at_start_up_naming_the_store() {
    let tls = tls().await;
    let env = TestEnv::new("tls_wrong").await;
    let secret = "pg-tls-Secret-1234";
    let good = tls_settings(&env, tls, "ca.crt", "127.0.0.1");
    let wrong_ca = tls_settings(&env, tls, "wrong-ca.crt", "127.0.0.1");
    let wrong_host = tls_settings(&env, tls, "ca.crt", "localhost");
    let pick = |from: &[(String, String)], names: &[&str]| -> Vec<(String, String)> {
        let mut settings: Vec<(String, String)> = good.clone();
        for (name, value) in from.iter().filter(|(n, _)| names.contains(&n.as_str())) {
            settings.retain(|(n, _)| n != name);
            settings.push((name.clone(), value.clone()));
        }
        for (name, value) in &mut settings {
            if name == "DATABASE_URL" {
                *value = value.replacen("://postgres@", &format!("://postgres:{secret}@"), 1);
            }
        }
        settings
    };
    let postgres = ["DATABASE_URL"];
    let clickhouse = ["CLICKHOUSE_URL", "CLICKHOUSE_CA_FILE"];
    let s3 = ["S3_ENDPOINT", "S3_CA_FILE"];
    let temporal = ["TEMPORAL_ADDRESS", "TEMPORAL_TLS_SERVER_CA_CERT_PATH"];
    let cases = [
        (
            pick(&wrong_ca, &postgres),
            "Postgres (DATABASE_URL)",
            "UnknownIssuer",
        ),
        (
            pick(&wrong_host, &postgres),
            "Postgres (DATABASE_URL)",
            "not valid for name",
        ),
        (
            pick(&wrong_ca, &clickhouse),
            "ClickHouse (CLICKHOUSE_URL)",
            "UnknownIssuer",
        ),
        (
            pick(&wrong_host, &clickhouse),
            "ClickHouse (CLICKHOUSE_URL)",
            "not valid for name",
        ),
        (pick(&wrong_ca, &s3), "S3 (S3_ENDPOINT", "UnknownIssuer"),
        (
            pick(&wrong_host, &s3),
            "S3 (S3_ENDPOINT",
            "not valid for name",
        ),
        (
            pick(&wrong_ca, &temporal),
            "Temporal",
            "not signed by a trusted CA",
        ),
        (
            pick(&wrong_host, &temporal),
            "Temporal",
            "does not match the host name",
        ),
    ];
    for (settings, store, cause) in cases {
        let overrides: Vec<(&str, &str)> = settings
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let (code, output, elapsed) = env.failing_worker(&overrides);
        assert_ne!(code, 0, "{store}/{cause}: {output}");
        assert!(output.contains(store), "{output:?} should name {store:?}");
        assert!(output.contains(cause), "{output:?} should say {cause:?}");
        assert!(!output.contains(secret), "a secret leaked: {output}");
        assert!(
            elapsed < Duration::from_secs(30),
            "{store}/{cause} took {elapsed:?}"
        );
    }
}
