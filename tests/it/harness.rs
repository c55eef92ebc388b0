//! A test's private slice of the local stack: its own Postgres database, ClickHouse database,
//! S3 bucket and Temporal task queue, with real `etl-worker` processes and real `etlctl` runs.

use std::{
    io::{BufRead, BufReader},
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use activities::{
    config::{Config, Needs},
    model::ObjectMeta,
    s3::ObjectStore,
};
use generator::{GeneratedStats, GeneratorConfig, write_catalog};
use serde_json::Value;
use sqlx::{Connection, PgConnection, PgPool, Row};

pub struct TestEnv {
    pub name: String,
    pub bucket: String,
    env: Vec<(String, String)>,
    pub pg: PgPool,
    pub ch: clickhouse::Client,
    pub s3: ObjectStore,
    workers: Vec<Child>,
    /// The workers held at a pause point until SIGUSR1 (the others would die of it).
    paused_pids: std::collections::HashSet<u32>,
    /// Every line the workers of this test wrote to stderr (their log).
    worker_log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

/// Output of one `etlctl` run.
pub struct CtlOutput {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl CtlOutput {
    /// The command failed with `code` and said `needle` on stderr.
    pub fn assert_refused(&self, code: i32, needle: &str) {
        assert_eq!(self.code, code, "{}\n{}", self.stdout, self.stderr);
        assert!(
            self.stderr.contains(needle),
            "stderr lacks {needle:?}: {}",
            self.stderr
        );
    }

    pub fn json(&self) -> Value {
        serde_json::from_str(self.stdout.trim()).unwrap_or_else(|err| {
            panic!(
                "etlctl printed no JSON ({err}):\n{}\n{}",
                self.stdout, self.stderr
            )
        })
    }
}

/// A generated catalog and the generator's own expected counts.
pub fn generated(config: &GeneratorConfig) -> (Vec<u8>, GeneratedStats) {
    let mut body = Vec::new();
    let stats = write_catalog(config, &mut body).unwrap();
    (body, stats)
}

/// A JSON number, or a panic that shows what was there.
pub fn u(value: &Value) -> u64 {
    value
        .as_u64()
        .unwrap_or_else(|| panic!("expected a number, got {value}"))
}

pub(crate) fn bin_dir() -> PathBuf {
    std::env::var_os("ETL_BIN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/debug"))
}

fn base_database_url() -> String {
    std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/catalog_etl".to_owned())
}

/// The local Postgres' `postgres` database, for administration.
pub(crate) fn admin_database_url() -> String {
    with_database(&base_database_url(), "postgres")
}

fn with_database(url: &str, database: &str) -> String {
    let (base, _) = url.rsplit_once('/').expect("DATABASE_URL has a database");
    format!("{base}/{database}")
}

impl TestEnv {
    pub async fn new(name: &str) -> Self {
        activities::tls::install_crypto_provider();
        let unique = format!("{name}_{}", std::process::id());
        let database = format!("etl_t_{unique}");
        let base_url = base_database_url();
        let mut admin = PgConnection::connect(&with_database(&base_url, "postgres"))
            .await
            .expect("Postgres is up (make up)");
        sqlx::query(&format!(
            "DROP DATABASE IF EXISTS \"{database}\" WITH (FORCE)"
        ))
        .execute(&mut admin)
        .await
        .unwrap();
        sqlx::query(&format!("CREATE DATABASE \"{database}\""))
            .execute(&mut admin)
            .await
            .unwrap();
        let database_url = with_database(&base_url, &database);
        let bucket = format!("t-{}", unique.replace('_', "-"));
        let env = vec![
            ("DATABASE_URL".to_owned(), database_url.clone()),
            ("CLICKHOUSE_DATABASE".to_owned(), database.clone()),
            ("ETL_TASK_QUEUE".to_owned(), format!("test-{unique}")),
            ("ETL_CHECK_BUCKETS".to_owned(), bucket.clone()),
            // Many workers run at once: none serves metrics unless a test asks.
            ("ETL_METRICS_ADDR".to_owned(), String::new()),
            (
                "RUST_LOG".to_owned(),
                "info,temporalio_sdk_core=warn".to_owned(),
            ),
        ];
        let mut config = Config::from_env(Needs::ALL).expect("test configuration (make env)");
        config.clickhouse_database = database.clone();
        let s3 = ObjectStore::new(&config).expect("S3 settings");
        s3.ensure_bucket(&bucket).await.expect("S3 is up (make up)");
        let ch_admin = clickhouse::Client::default()
            .with_url(&config.clickhouse_url)
            .with_user(&config.clickhouse_user)
            .with_password(config.clickhouse_password.expose());
        ch_admin
            .query(&format!("DROP DATABASE IF EXISTS {database}"))
            .execute()
            .await
            .expect("ClickHouse is up (make up)");
        let ch = ch_admin.with_database(&database);
        let pg = PgPool::connect(&database_url).await.unwrap();
        Self {
            name: name.to_owned(),
            bucket,
            env,
            pg,
            ch,
            s3,
            workers: Vec::new(),
            paused_pids: Default::default(),
            worker_log: Default::default(),
        }
    }

    /// A source name no other test (or test run) uses: Temporal ids of source runs and
    /// schedules are namespace-wide.
    pub fn source_name(&self) -> String {
        format!("{}-{}", self.name.replace('_', "-"), std::process::id())
    }

    pub fn uri(&self, key: &str) -> String {
        format!("s3://{}/{key}", self.bucket)
    }

    pub async fn put(&self, key: &str, body: impl Into<bytes::Bytes>) -> ObjectMeta {
        self.s3.put(&self.bucket, key, body.into()).await.unwrap()
    }

    /// `count` small objects `{prefix}{n:05}.csv`, uploaded a few at a time (no HEAD each).
    pub async fn put_many(&self, prefix: &str, count: usize, body: &str) {
        let keys: Vec<String> = (0..count).map(|n| format!("{prefix}{n:05}.csv")).collect();
        for batch in keys.chunks(16) {
            let puts = batch.iter().map(|key| {
                self.s3
                    .put_only(&self.bucket, key, bytes::Bytes::from(body.to_owned()))
            });
            for put in futures::future::join_all(puts).await {
                put.unwrap();
            }
        }
    }

    /// The kernel's high-water mark of the resident memory of the newest worker.
    pub fn worker_peak_rss_kib(&self) -> u64 {
        let worker = self.workers.last().expect("a worker");
        let status = std::fs::read_to_string(format!("/proc/{}/status", worker.id())).unwrap();
        status
            .lines()
            .find_map(|line| line.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmHWM")
    }

    /// Starts a worker and returns once it is polling (it prints "etl-worker ready").
    pub fn start_worker(&mut self) {
        self.start_worker_with(&[]);
    }

    /// The same, with some settings overridden; every later `etlctl` run gets them too.
    pub fn start_worker_with(&mut self, overrides: &[(&str, &str)]) {
        for (key, value) in overrides {
            self.env.retain(|(k, _)| k != key);
            self.env.push(((*key).to_owned(), (*value).to_owned()));
        }
        self.spawn_worker(&[]);
    }

    /// A worker with settings of its own (another task queue, another ClickHouse URL); later
    /// `etlctl` runs keep the test's settings.
    pub fn start_worker_alone_with(&mut self, only_this_worker: &[(&str, &str)]) {
        self.spawn_worker(only_this_worker);
    }

    /// A worker that stops at `point` (`ETL_PAUSE_AT`), for a test to kill it there; workers
    /// started later do not pause.
    pub fn start_worker_pausing_at(&mut self, point: &str) {
        self.spawn_worker(&[("ETL_PAUSE_AT", point)]);
    }

    /// The same, with settings that apply to this worker only.
    pub fn start_worker_pausing_at_with(&mut self, point: &str, overrides: &[(&str, &str)]) {
        let mut only_this_worker = vec![("ETL_PAUSE_AT", point)];
        only_this_worker.extend_from_slice(overrides);
        self.spawn_worker(&only_this_worker);
    }

    fn spawn_worker(&mut self, only_this_worker: &[(&str, &str)]) {
        let mut child = Command::new(bin_dir().join("etl-worker"))
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .envs(only_this_worker.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("etl-worker binary (cargo build --bins)");
        let stderr = child.stderr.take().unwrap();
        let (ready_tx, ready_rx) = mpsc::channel();
        let name = self.name.clone();
        let log = self.worker_log.clone();
        std::thread::spawn(move || {
            let mut ready_tx = Some(ready_tx);
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                log.lock().unwrap().push(line.clone());
                if line.contains("etl-worker ready")
                    && let Some(tx) = ready_tx.take()
                {
                    let _ = tx.send(());
                }
                if std::env::var_os("ETL_TEST_WORKER_LOGS").is_some() {
                    eprintln!("[worker {name}] {line}");
                }
            }
        });
        ready_rx
            .recv_timeout(Duration::from_secs(60))
            .expect("worker became ready");
        let setting = |name: &str| {
            only_this_worker.iter().any(|(k, _)| *k == name)
                || self.env.iter().any(|(k, _)| k == name)
        };
        if setting("ETL_PAUSE_AT") && !setting("ETL_PAUSE_GATE") {
            self.paused_pids.insert(child.id());
        }
        self.workers.push(child);
    }

    pub fn worker_log(&self) -> String {
        self.worker_log.lock().unwrap().join("\n")
    }

    /// Polls the workers' log until a line contains `needle`; panics after `timeout`.
    pub async fn wait_for_log(&self, needle: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while !self
            .worker_log
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.contains(needle))
        {
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {needle:?} in the worker log:\n{}",
                self.worker_log()
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// A setting as this test's processes see it.
    pub fn setting(&self, key: &str) -> Option<String> {
        self.env
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
            .or_else(|| std::env::var(key).ok())
    }

    /// Runs a worker with `overrides` that must make it fail at start-up; returns its exit
    /// code, its output and how long it took.
    pub fn failing_worker(&self, overrides: &[(&str, &str)]) -> (i32, String, Duration) {
        let started = Instant::now();
        let output = Command::new(bin_dir().join("etl-worker"))
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .envs(overrides.iter().copied())
            .output()
            .expect("etl-worker binary");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        (output.status.code().unwrap_or(-1), text, started.elapsed())
    }

    /// SIGUSR1 to every worker started with a pause point: activities held there go on.
    pub fn release_pause(&self) {
        for worker in self
            .workers
            .iter()
            .filter(|w| self.paused_pids.contains(&w.id()))
        {
            let status = Command::new("kill")
                .args(["-USR1", &worker.id().to_string()])
                .status()
                .expect("kill");
            assert!(status.success(), "SIGUSR1 to worker {}", worker.id());
        }
    }

    /// SIGKILL: the worker gets no chance to finish or report anything.
    pub fn kill_workers(&mut self) {
        for mut worker in self.workers.drain(..) {
            worker.kill().unwrap();
            worker.wait().unwrap();
        }
    }

    /// SIGKILL to the `index`th of the running workers, in the order they were started.
    pub fn kill_worker(&mut self, index: usize) {
        let mut worker = self.workers.remove(index);
        worker.kill().unwrap();
        worker.wait().unwrap();
    }

    /// SIGKILL to the oldest running worker only.
    pub fn kill_first_worker(&mut self) {
        let mut worker = self.workers.remove(0);
        worker.kill().unwrap();
        worker.wait().unwrap();
    }

    /// Stops a shared service; it is started again by [`StoppedService::start`], or when the
    /// guard drops (a failing test must not leave the stack down for the next one).
    pub fn stop_service<'a>(&self, service: &'a str) -> StoppedService<'a> {
        stack("stop", service);
        StoppedService {
            service,
            started: false,
        }
    }

    pub fn restart_service(&self, service: &str) {
        stack("restart", service);
    }

    /// An `etlctl` run with this test's settings, for a test that runs it in the background.
    pub fn etlctl_command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(bin_dir().join("etlctl"));
        command
            .args(args)
            .envs(self.env.iter().map(|(k, v)| (k, v)));
        command
    }

    pub fn etlctl(&self, args: &[&str]) -> CtlOutput {
        self.etlctl_with(&[], args)
    }

    /// `etlctl` with some settings of its own (e.g. another task queue).
    pub fn etlctl_with(&self, settings: &[(&str, &str)], args: &[&str]) -> CtlOutput {
        let output = self
            .etlctl_command(args)
            .envs(settings.iter().copied())
            .output()
            .expect("etlctl binary (cargo build --bins)");
        CtlOutput {
            code: output.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }

    pub fn ingest(&self, key: &str, extra: &[&str]) -> CtlOutput {
        let uri = self.uri(key);
        let mut args = vec!["ingest", uri.as_str(), "--source", "cotopaxi", "--json"];
        args.extend_from_slice(extra);
        self.etlctl(&args)
    }

    /// The full event history of every run of a workflow id, as the Temporal CLI prints it.
    pub fn temporal_history(&self, workflow_id: &str) -> String {
        let output = temporal_cli(&["show", "--workflow-id", workflow_id]);
        assert!(
            output.status.success(),
            "temporal workflow show {workflow_id}"
        );
        let mut history = String::from_utf8_lossy(&output.stdout).into_owned();
        // Payloads are base64 in the CLI's JSON: append them decoded, so a search sees them.
        fn decode_payloads(value: &Value, out: &mut String) {
            use base64::Engine;
            match value {
                Value::Object(map) => {
                    for (key, v) in map {
                        match (key.as_str(), v) {
                            ("data", Value::String(data)) => {
                                if let Ok(bytes) =
                                    base64::engine::general_purpose::STANDARD.decode(data)
                                {
                                    out.push('\n');
                                    out.push_str(&String::from_utf8_lossy(&bytes));
                                }
                            }
                            _ => decode_payloads(v, out),
                        }
                    }
                }
                Value::Array(items) => items.iter().for_each(|v| decode_payloads(v, out)),
                _ => {}
            }
        }
        let parsed: Value = serde_json::from_str(&history).unwrap_or(Value::Null);
        decode_payloads(&parsed, &mut history);
        history
    }

    /// History length of each closed run (continued-as-new ones included) of a workflow id.
    pub fn history_lengths(&self, workflow_id: &str) -> Vec<u64> {
        self.workflow_runs(workflow_id)
            .iter()
            .filter_map(|run| match &run["historyLength"] {
                Value::String(n) => n.parse().ok(),
                n => n.as_u64(),
            })
            .collect()
    }

    fn workflow_runs(&self, workflow_id: &str) -> Vec<Value> {
        let query = format!("WorkflowId = '{workflow_id}'");
        let output = temporal_cli(&["list", "--query", &query]);
        match serde_json::from_slice(&output.stdout) {
            Ok(Value::Array(runs)) => runs,
            _ => Vec::new(),
        }
    }

    /// Workflows (every run) matching a visibility query, as the Temporal CLI lists them.
    pub fn temporal_list(&self, query: &str) -> Vec<Value> {
        let output = temporal_cli(&["list", "--query", query]);
        assert!(
            output.status.success(),
            "temporal workflow list --query {query}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        match serde_json::from_slice(&output.stdout) {
            Ok(Value::Array(runs)) => runs,
            _ => Vec::new(),
        }
    }

    /// `temporal workflow <args>`: a successful run's JSON output.
    pub fn temporal_workflow(&self, args: &[&str]) -> String {
        let output = temporal_cli(args);
        assert!(
            output.status.success(),
            "temporal workflow {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// `temporal workflow describe` of a workflow's latest run.
    pub fn temporal_describe(&self, workflow_id: &str) -> Value {
        let output = temporal_cli(&["describe", "--workflow-id", workflow_id]);
        assert!(
            output.status.success(),
            "temporal workflow describe {workflow_id}"
        );
        serde_json::from_slice(&output.stdout).expect("describe prints JSON")
    }

    /// Whether the workflow's latest run is still open.
    pub fn workflow_running(&self, workflow_id: &str) -> bool {
        let described = self.temporal_describe(workflow_id);
        described["workflowExecutionInfo"]["status"] == "WORKFLOW_EXECUTION_STATUS_RUNNING"
    }

    /// The Prometheus metrics endpoint of the `n`th worker started with
    /// `ETL_METRICS_ADDR=127.0.0.1:0` (it logs the address it bound).
    pub fn metrics_url(&self, n: usize) -> String {
        self.worker_log
            .lock()
            .unwrap()
            .iter()
            .filter(|line| line.contains("serving Prometheus metrics"))
            .filter_map(|line| {
                let start = line.find("http://")?;
                let end = line[start..].find("/metrics")? + start + "/metrics".len();
                Some(line[start..end].to_owned())
            })
            .nth(n)
            .unwrap_or_else(|| panic!("worker {n} serves no metrics:\n{}", self.worker_log()))
    }

    /// An `etlctl` run on a pseudo-terminal (`script`) as wide as `columns`: what a person at a
    /// terminal sees, escape sequences included.
    pub fn etlctl_on_terminal(&self, args: &[&str], columns: u16) -> CtlOutput {
        let quoted: Vec<String> = std::iter::once(bin_dir().join("etlctl").display().to_string())
            .chain(args.iter().map(|a| (*a).to_owned()))
            .map(|a| format!("'{}'", a.replace('\'', r"'\''")))
            .collect();
        let command = format!("stty cols {columns} rows 40; {}", quoted.join(" "));
        let output = Command::new("script")
            .args(["-qfec", &command, "/dev/null"])
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .output()
            .expect("script (util-linux)");
        CtlOutput {
            code: output.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }

    /// Runs (including continued-as-new ones) of a workflow id, from the Temporal CLI.
    pub fn temporal_runs(&self, workflow_id: &str) -> usize {
        self.workflow_runs(workflow_id).len()
    }

    pub async fn scalar(&self, sql: &str, job_id: &str) -> i64 {
        let job: uuid_like::Uuid = job_id.parse().unwrap();
        sqlx::query(sql)
            .bind(job)
            .fetch_one(&self.pg)
            .await
            .unwrap_or_else(|err| panic!("{sql}: {err}"))
            .get::<i64, _>(0)
    }

    /// Polls a condition on Postgres (never a fixed sleep); panics after `timeout`.
    pub async fn wait_for(&self, what: &str, timeout: Duration, mut check: impl AsyncCheck) {
        let deadline = Instant::now() + timeout;
        loop {
            if check.check(&self.pg).await {
                return;
            }
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
}

pub trait AsyncCheck {
    fn check(&mut self, pg: &PgPool) -> impl std::future::Future<Output = bool>;
}

/// Chunks of a job committed so far.
pub struct CommittedChunks<'a> {
    pub job_id: &'a str,
    pub at_least: i64,
}

impl AsyncCheck for CommittedChunks<'_> {
    async fn check(&mut self, pg: &PgPool) -> bool {
        let job: uuid_like::Uuid = self.job_id.parse().unwrap();
        sqlx::query_scalar::<_, i64>(
            "SELECT count(*) FROM etl_chunks WHERE job_id = $1 AND status = 'committed'",
        )
        .bind(job)
        .fetch_one(pg)
        .await
        .map(|n| n >= self.at_least)
        .unwrap_or(false)
    }
}

/// A count about one job (`$1`) that must reach `at_least`.
pub struct JobCount<'a> {
    pub sql: &'a str,
    pub job_id: &'a str,
    pub at_least: i64,
}

impl AsyncCheck for JobCount<'_> {
    async fn check(&mut self, pg: &PgPool) -> bool {
        let job: uuid_like::Uuid = self.job_id.parse().unwrap();
        sqlx::query_scalar::<_, i64>(self.sql)
            .bind(job)
            .fetch_one(pg)
            .await
            .map(|n| n >= self.at_least)
            .unwrap_or(false)
    }
}

pub struct StoppedService<'a> {
    service: &'a str,
    started: bool,
}

impl StoppedService<'_> {
    pub fn start(mut self) {
        self.started = true;
        stack("start", self.service);
    }
}

impl Drop for StoppedService<'_> {
    fn drop(&mut self) {
        if !self.started {
            stack("start", self.service);
        }
    }
}

/// `temporal workflow <args> --output json` against the test stack's Temporal server.
fn temporal_cli(args: &[&str]) -> std::process::Output {
    let address = std::env::var("TEMPORAL_ADDRESS").unwrap_or_else(|_| "127.0.0.1:7233".to_owned());
    Command::new("temporal")
        .arg("workflow")
        .args(args)
        .args(["--output", "json", "--address"])
        .arg(address.trim_start_matches("http://"))
        .output()
        .expect("temporal CLI")
}

/// `scripts/stack.sh stop|start|restart <service>` against the shared local stack.
fn stack(action: &str, service: &str) {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/stack.sh");
    let output = Command::new("bash")
        .arg(script)
        .args([action, service])
        .output()
        .expect("bash");
    assert!(
        output.status.success(),
        "stack.sh {action} {service}:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

impl Drop for TestEnv {
    fn drop(&mut self) {
        self.kill_workers();
    }
}

/// sqlx's uuid type, named once.
pub mod uuid_like {
    pub use sqlx::types::Uuid;
}
