//! What operators watch: search attributes and summaries in Temporal, the worker's Prometheus
//! metrics, JSON logs, the progress bar of `--wait`, and the Web UI in a real browser.

use std::{
    io::{Read, Write},
    path::PathBuf,
    process::Command,
    time::{Duration, Instant},
};

use generator::GeneratorConfig;
use serde_json::Value;

use crate::{
    harness::{TestEnv, u},
    ingest::{catalog, wait_until_final},
};

/// A search attribute of a listed workflow, decoded from its JSON payload.
fn attribute(workflow: &Value, name: &str) -> Value {
    use base64::Engine;
    let Some(data) = workflow["searchAttributes"]["indexedFields"][name]["data"].as_str() else {
        return Value::Null;
    };
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(data)
        .expect("base64 payload");
    serde_json::from_slice(&bytes).expect("JSON payload")
}

fn workflow_id(workflow: &Value) -> String {
    workflow["execution"]["workflowId"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// Visibility is eventually consistent: lists until `query` returns `expected` workflows.
pub(crate) async fn listed(env: &TestEnv, query: &str, expected: usize) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let found = env.temporal_list(query);
        if found.len() == expected {
            return found;
        }
        assert!(
            Instant::now() < deadline,
            "{query}: {} workflows, expected {expected}: {found:#?}",
            found.len()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn csv(rows: u64, seed: u64) -> Vec<u8> {
    catalog(GeneratorConfig {
        rows,
        seed,
        invalid_per_mille: 50,
        ..GeneratorConfig::default()
    })
    .0
}

#[tokio::test]
async fn runs_are_found_by_source_outcome_and_job_with_their_summaries() {
    let mut env = TestEnv::new("search_attributes").await;
    env.start_worker();
    let source = env.source_name();
    env.put("in/good.csv", csv(300, 1)).await;
    env.put("in/bad.csv", "sku,name\nA,b\n").await;

    let run = env.etlctl(&[
        "ingest-source",
        "--uri",
        &env.uri("in/"),
        "--source",
        &source,
        "--chunk-bytes",
        "8000",
        "--wait",
        "--json",
    ]);
    let report = run.json();
    let job = |key: &str| {
        report["objects"]
            .as_array()
            .unwrap()
            .iter()
            .find(|o| o["key"] == key)
            .unwrap_or_else(|| panic!("{key} in {report}"))
            .clone()
    };
    let (good, bad) = (job("in/good.csv"), job("in/bad.csv"));
    assert_eq!(
        (good["status"].as_str(), bad["status"].as_str()),
        (Some("completed"), Some("failed"))
    );
    let good_job = good["job_id"].as_str().unwrap();
    let summary = wait_until_final(&env, good_job).await;
    let dry = env.etlctl(&[
        "ingest",
        &env.uri("in/good.csv"),
        "--source",
        &source,
        "--dry-run",
        "--wait",
        "--json",
    ]);
    assert_eq!(dry.code, 0, "{}{}", dry.stdout, dry.stderr);
    let dry_job = dry.json()["job_id"].as_str().unwrap().to_owned();

    // The source run, its two objects and the dry run.
    let all = listed(&env, &format!("CatalogSource = \"{source}\""), 4).await;
    let types: Vec<&str> = all
        .iter()
        .filter_map(|w| w["type"]["name"].as_str())
        .collect();
    assert_eq!(
        types.iter().filter(|t| **t == "CatalogIngest").count(),
        3,
        "{types:?}"
    );
    assert_eq!(
        types.iter().filter(|t| **t == "SourceIngest").count(),
        1,
        "{types:?}"
    );

    let failed = listed(
        &env,
        &format!("CatalogSource = \"{source}\" AND CatalogOutcome = \"failed\""),
        1,
    )
    .await;
    assert_eq!(attribute(&failed[0], "CatalogObjectKey"), "in/bad.csv");
    assert_eq!(attribute(&failed[0], "CatalogJobId"), bad["job_id"]);

    let by_job = listed(&env, &format!("CatalogJobId = \"{good_job}\""), 1).await;
    let good_run = &by_job[0];
    assert_eq!(attribute(good_run, "CatalogSource"), source.as_str());
    assert_eq!(attribute(good_run, "CatalogDryRun"), false);
    assert_eq!(attribute(good_run, "CatalogOutcome"), "completed");
    assert_eq!(
        attribute(good_run, "CatalogRowsTotal"),
        summary["rows_total"]
    );
    assert_eq!(
        attribute(good_run, "CatalogRowsInvalid"),
        summary["rows_invalid"]
    );
    assert!(u(&summary["rows_invalid"]) > 0, "{summary}");

    let dry_runs = listed(
        &env,
        &format!("CatalogSource = \"{source}\" AND CatalogDryRun = true"),
        1,
    )
    .await;
    assert_eq!(attribute(&dry_runs[0], "CatalogJobId"), dry_job.as_str());

    // The summary names source, object, size and mode; the details the object version.
    let described = env.temporal_describe(&workflow_id(good_run));
    let metadata = &described["executionConfig"]["userMetadata"];
    let line = metadata["summary"].as_str().unwrap_or_default();
    let object = format!("{source}: s3://{}/in/good.csv (", env.bucket);
    assert!(
        line.starts_with(&object) && line.ends_with(", snapshot)"),
        "{metadata}"
    );
    let details = metadata["details"].as_str().unwrap_or_default();
    assert!(
        details.contains(&format!(
            "**ETag** `{}`",
            summary["object"]["etag"].as_str().unwrap()
        )),
        "{details}"
    );
    assert!(details.contains("**Chunking** 7.8 KiB chunks"), "{details}");

    // Each chunk's activity says which bytes it ingests.
    let history = env.temporal_history(&workflow_id(good_run));
    let chunks = u(&summary["chunks"]);
    assert!(chunks > 1);
    assert!(
        history.contains(&format!("chunk 1 of {chunks}: bytes ")),
        "no chunk summary"
    );
    assert!(history.contains(&format!("chunk {chunks} of {chunks}: bytes ")));

    // `jobs show` links to every run of the job in the Web UI.
    let shown = env.etlctl(&["jobs", "show", good_job, "--json"]).json();
    let runs_link = shown["web_ui_runs_url"].as_str().unwrap_or_default();
    assert!(
        runs_link.ends_with(&format!(
            "workflows?query=CatalogJobId%20%3D%20%22{good_job}%22"
        )),
        "{shown}"
    );
    let listing = env
        .etlctl(&["jobs", "list", "--source", &source, "--json"])
        .json();
    assert!(
        listing
            .as_array()
            .unwrap()
            .iter()
            .all(|j| j["web_ui_runs_url"].is_string())
    );
}

/// Prometheus text format: the sum of the samples of `name` whose labels include `labels`.
fn sample(metrics: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    metrics
        .lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (metric, label_text) = match series.split_once('{') {
                Some((metric, rest)) => (metric, rest.trim_end_matches('}')),
                None => (series, ""),
            };
            let matches = metric == name
                && labels
                    .iter()
                    .all(|(k, v)| label_text.split(',').any(|kv| kv == format!("{k}=\"{v}\"")));
            matches.then(|| value.parse::<f64>().ok()).flatten()
        })
        .sum()
}

fn scrape(url: &str) -> String {
    let address = url
        .trim_start_matches("http://")
        .trim_end_matches("/metrics");
    let mut stream = std::net::TcpStream::connect(address).expect("metrics endpoint");
    write!(stream, "GET /metrics HTTP/1.0\r\nHost: {address}\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").expect("HTTP response");
    assert!(
        head.starts_with("HTTP/1.0 200") || head.starts_with("HTTP/1.1 200"),
        "{head}"
    );
    body.to_owned()
}

/// Item 7 of the ordering issue: the dashboard's "rows committed" and "jobs completed" count
/// what was stored: a dry run carries `dry_run="true"`, and asking again for a job that exists
/// counts nothing more.
#[tokio::test]
async fn committed_rows_and_completed_jobs_leave_out_dry_runs_and_repeated_requests() {
    let mut env = TestEnv::new("metrics_dry_run").await;
    env.start_worker_with(&[("ETL_METRICS_ADDR", "127.0.0.1:0")]);
    let (body, stats) = catalog(GeneratorConfig {
        rows: 300,
        seed: 14,
        invalid_per_mille: 50,
        ..GeneratorConfig::default()
    });
    env.put("dry/catalog.csv", body).await;
    let source = env.source_name();
    let ingest = |extra: &[&str]| {
        let mut args = vec![
            "ingest".to_owned(),
            env.uri("dry/catalog.csv"),
            "--source".to_owned(),
            source.clone(),
            "--wait".to_owned(),
            "--json".to_owned(),
        ];
        args.extend(extra.iter().map(|a| (*a).to_owned()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = env.etlctl(&args);
        assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
        out.json()
    };
    ingest(&["--dry-run"]);
    let real = ingest(&[]);
    let again = ingest(&[]);
    assert_eq!(again["job_id"], real["job_id"]);
    let metrics = scrape(&env.metrics_url(0));
    let rows = |dry_run: &str, outcome: &str| {
        sample(
            &metrics,
            "catalog_job_rows_total",
            &[
                ("source", source.as_str()),
                ("dry_run", dry_run),
                ("outcome", outcome),
            ],
        )
    };
    assert_eq!(rows("false", "valid"), stats.rows_valid as f64);
    assert_eq!(rows("false", "invalid"), stats.rows_invalid as f64);
    assert_eq!(rows("true", "valid"), stats.rows_valid as f64);
    let completed = |dry_run: &str| {
        sample(
            &metrics,
            "catalog_jobs_finished_total",
            &[
                ("source", source.as_str()),
                ("status", "completed"),
                ("dry_run", dry_run),
            ],
        )
    };
    assert_eq!((completed("false"), completed("true")), (1.0, 1.0));
}

/// A worker killed after committing a chunk counted it; the worker that retries the chunk
/// finds it committed and counts nothing. Both workers' counters add up to the job's totals.
#[tokio::test]
async fn metrics_count_each_committed_chunk_once_across_a_kill() {
    let mut env = TestEnv::new("metrics_kill").await;
    let metrics = [("ETL_METRICS_ADDR", "127.0.0.1:0")];
    env.start_worker_pausing_at_with("chunk-before-clickhouse", &metrics);
    let (body, stats) = catalog(GeneratorConfig {
        rows: 400,
        seed: 12,
        invalid_per_mille: 40,
        ..GeneratorConfig::default()
    });
    env.put("m/catalog.csv", body).await;
    let source = env.source_name();
    let started = env.etlctl(&[
        "ingest",
        &env.uri("m/catalog.csv"),
        "--source",
        &source,
        "--chunk-bytes",
        "20000",
        "--parallel",
        "1",
        "--heartbeat-timeout",
        "3",
        "--json",
    ]);
    let job_id = started.json()["job_id"].as_str().unwrap().to_owned();
    env.wait_for_log("paused at chunk-before-clickhouse", Duration::from_secs(60))
        .await;
    let first = scrape(&env.metrics_url(0));
    let committed = env
        .scalar(
            "SELECT count(*) FROM etl_chunks WHERE job_id = $1 AND status = 'committed'",
            &job_id,
        )
        .await as f64;
    let by_source = [("source", source.as_str())];
    assert!(committed >= 1.0);
    assert_eq!(
        sample(&first, "catalog_chunks_committed_total", &by_source),
        committed
    );
    env.kill_workers();

    env.start_worker_with(&metrics);
    let summary = wait_until_final(&env, &job_id).await;
    assert_eq!(summary["status"], "completed", "{summary}");
    let second = scrape(&env.metrics_url(1));
    let both = |name: &str, labels: &[(&str, &str)]| {
        sample(&first, name, labels) + sample(&second, name, labels)
    };
    let valid = [("source", source.as_str()), ("outcome", "valid")];
    let invalid = [("source", source.as_str()), ("outcome", "invalid")];
    assert_eq!(both("catalog_rows_total", &valid), stats.rows_valid as f64);
    assert_eq!(
        both("catalog_rows_total", &invalid),
        stats.rows_invalid as f64
    );
    assert_eq!(
        both("catalog_chunks_committed_total", &by_source),
        u(&summary["chunks"]) as f64
    );
    let bytes = env
        .scalar(
            "SELECT sum(byte_end - byte_start)::bigint FROM etl_chunks WHERE job_id = $1",
            &job_id,
        )
        .await as f64;
    assert_eq!(both("catalog_bytes_read_total", &by_source), bytes);
    for phase in ["read", "parse", "postgres"] {
        assert_eq!(
            both("catalog_chunk_phase_seconds_count", &[("phase", phase)]),
            u(&summary["chunks"]) as f64,
            "{phase}"
        );
    }
    let finished = [("source", source.as_str()), ("status", "completed")];
    assert_eq!(both("catalog_jobs_finished_total", &finished), 1.0);
    // The SDK's own metrics share the endpoint.
    assert!(
        sample(&second, "temporal_worker_start", &[]) >= 1.0,
        "{second}"
    );
}

fn refs(args: &[String]) -> Vec<&str> {
    args.iter().map(String::as_str).collect()
}

fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let groups: Vec<&str> = digits
        .as_bytes()
        .rchunks(3)
        .rev()
        .map(|group| std::str::from_utf8(group).unwrap())
        .collect();
    groups.join(",")
}

/// The final state of the progress bar in a terminal transcript.
fn last_bar(transcript: &str) -> String {
    let after = transcript.rsplit("\r\x1b[2K").next().unwrap();
    strip_escapes(after.split(['\r', '\n']).next().unwrap())
}

/// The bar is drawn on a terminal, never into `--json` output or a pipe; JSON logs carry the
/// job, source and chunk of every chunk's lines.
#[tokio::test]
async fn the_progress_bar_is_drawn_on_a_terminal_only_and_logs_name_the_chunk() {
    let mut env = TestEnv::new("progress").await;
    env.start_worker_with(&[("ETL_LOG_FORMAT", "json")]);
    let source = env.source_name();
    env.put("p/one.csv", csv(600, 3)).await;
    env.put("p/two.csv", csv(500, 4)).await;
    env.put("q/a.csv", csv(300, 6)).await;
    env.put("q/b.csv", csv(300, 7)).await;
    let ingest = |key: &str, extra: &[&str]| -> Vec<String> {
        let mut args: Vec<String> = ["ingest", &env.uri(key), "--source", &source]
            .iter()
            .map(|a| (*a).to_owned())
            .collect();
        args.extend(["--chunk-bytes", "8000", "--wait"].map(str::to_owned));
        args.extend(extra.iter().map(|a| (*a).to_owned()));
        args
    };

    let shown = env.etlctl_on_terminal(&refs(&ingest("p/one.csv", &[])), 140);
    assert_eq!(shown.code, 0, "{}", shown.stdout);
    assert!(
        shown.stdout.contains("\r\x1b[2K"),
        "no progress line: {:?}",
        shown.stdout
    );
    let job = &env
        .etlctl(&["jobs", "list", "--source", &source, "--json"])
        .json()[0];
    let job = env
        .etlctl(&["jobs", "show", job["job_id"].as_str().unwrap(), "--json"])
        .json();
    let (chunks, rows) = (u(&job["chunks"]), u(&job["rows_total"]));
    assert!(chunks > 3, "{job}");
    let bar = last_bar(&shown.stdout);
    assert!(bar.starts_with("completed "), "{bar:?}");
    assert!(bar.contains("100.0%"), "{bar:?}");
    assert!(
        bar.contains(&format!("{chunks}/{chunks} chunks")),
        "{bar:?}"
    );
    assert!(
        bar.contains(&format!("{} rows", thousands(rows))),
        "{bar:?}"
    );
    assert!(
        shown.stdout.contains("reconciliation ok"),
        "the summary follows the bar"
    );

    // A narrow terminal gets lines that fit: a wrapped line could not be redrawn.
    let narrow = env.etlctl_on_terminal(&refs(&ingest("p/two.csv", &[])), 60);
    assert_eq!(narrow.code, 0, "{}", narrow.stdout);
    for line in narrow.stdout.split("\r\x1b[2K").skip(1) {
        let visible = strip_escapes(line.split(['\r', '\n']).next().unwrap());
        assert!(visible.chars().count() <= 60, "{visible:?}");
    }

    // A source run counts objects, chunks and rows of all its objects.
    let uri = env.uri("q/");
    let source_run = env.etlctl_on_terminal(
        &[
            "ingest-source",
            "--uri",
            &uri,
            "--source",
            &source,
            "--chunk-bytes",
            "8000",
            "--wait",
        ],
        140,
    );
    assert_eq!(source_run.code, 0, "{}", source_run.stdout);
    let bar = last_bar(&source_run.stdout);
    assert!(
        bar.contains("100.0%") && bar.contains("2/2 objects"),
        "{bar:?}"
    );

    // --json on a terminal, and a pipe: no bar (dry runs, so each is a new job).
    let json_run =
        env.etlctl_on_terminal(&refs(&ingest("p/one.csv", &["--dry-run", "--json"])), 140);
    assert!(!json_run.stdout.contains('\x1b'), "{:?}", json_run.stdout);
    let json_text = json_run.stdout.replace('\r', "");
    let parsed: Value = serde_json::from_str(json_text.trim()).expect("only JSON on stdout");
    assert_eq!(parsed["status"], "completed");
    assert!(u(&parsed["chunks"]) > 3);
    let piped = env.etlctl(&refs(&ingest("p/two.csv", &["--dry-run"])));
    assert_eq!(piped.code, 0, "{}", piped.stderr);
    assert!(!piped.stderr.contains('\x1b') && !piped.stdout.contains('\x1b'));

    // Every log line is one JSON object; a chunk's lines name job, source and chunk.
    let log = env.worker_log();
    let lines: Vec<Value> = log
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
        .collect();
    let chunk_done = lines
        .iter()
        .find(|l| l["message"] == "chunk done")
        .expect("a chunk done line");
    assert_eq!(chunk_done["source"], source.as_str(), "{chunk_done}");
    assert!(
        chunk_done["job_id"].is_string() && chunk_done["chunk"].is_u64(),
        "{chunk_done}"
    );
}

fn strip_escapes(text: &str) -> String {
    let mut out = String::new();
    let mut in_escape = false;
    for c in text.chars() {
        match (in_escape, c) {
            (false, '\x1b') => in_escape = true,
            (true, c) if c.is_ascii_alphabetic() => in_escape = false,
            (true, _) => {}
            (false, c) => out.push(c),
        }
    }
    out
}

fn temporal_operator(args: &[&str]) -> std::process::Output {
    let address = std::env::var("TEMPORAL_ADDRESS").unwrap_or_else(|_| "127.0.0.1:7233".to_owned());
    Command::new("temporal")
        .arg("operator")
        .args(args)
        .args(["--address", &address])
        .output()
        .expect("temporal CLI")
}

/// A namespace without the attributes: the worker refuses to start and says what to run;
/// `etlctl setup` registers them, and running it again changes nothing.
#[tokio::test]
async fn setup_registers_the_search_attributes_and_the_worker_requires_them() {
    let mut env = TestEnv::new("setup").await;
    let namespace = format!("etl-setup-{}", std::process::id());
    let created = temporal_operator(&["namespace", "create", "--namespace", &namespace]);
    assert!(
        created.status.success(),
        "{}",
        String::from_utf8_lossy(&created.stderr)
    );
    let on_namespace = [("TEMPORAL_NAMESPACE", namespace.as_str())];
    let deadline = Instant::now() + Duration::from_secs(60);
    let refusal = loop {
        let (code, output, _) = env.failing_worker(&on_namespace);
        if output.contains("run `etlctl setup`") {
            break (code, output);
        }
        // A namespace just created takes a moment to be served.
        assert!(Instant::now() < deadline, "{output}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert_ne!(refusal.0, 0);
    assert!(
        refusal.1.contains(&format!(
            "Temporal namespace {namespace} lacks the search attributes CatalogSource"
        )),
        "{}",
        refusal.1
    );

    let setup = |env: &TestEnv| {
        let mut command = env.etlctl_command(&["setup", "--json"]);
        command.env("TEMPORAL_NAMESPACE", &namespace);
        let output = command.output().unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        serde_json::from_slice::<Value>(&output.stdout).unwrap()
    };
    let first = setup(&env);
    assert_eq!(first["registered"].as_array().unwrap().len(), 7, "{first}");
    let again = setup(&env);
    assert_eq!(again["registered"], serde_json::json!([]), "{again}");
    assert_eq!(again["present"].as_array().unwrap().len(), 7);
    env.start_worker_with(&on_namespace);
    env.kill_workers();
    let _ = temporal_operator(&["namespace", "delete", "--namespace", &namespace, "--yes"]);
}

/// Headless Chromium on the real Web UI: the list filtered by `CatalogSource` shows the run,
/// and its page shows the summary and details. `ETL_SCREENSHOTS_DIR` keeps the screenshots
/// (`make screenshots` writes them to `docs/`).
#[tokio::test]
async fn the_web_ui_lists_the_run_by_source_and_shows_its_summary() {
    let mut env = TestEnv::new("webui").await;
    env.start_worker();
    let source = env.source_name();
    let object = env.put("ui/2026-11-28.csv", csv(2_000, 5)).await;
    let run = env.etlctl(&[
        "ingest",
        &env.uri("ui/2026-11-28.csv"),
        "--source",
        &source,
        "--wait",
        "--json",
    ]);
    let summary = run.json();
    assert_eq!(summary["status"], "completed", "{summary}");
    let workflow = summary["workflow_id"].as_str().unwrap();

    let webui = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("webui");
    assert!(
        webui.join("node_modules/playwright-core").is_dir(),
        "tests/webui/node_modules is missing: `make test` installs it (npm ci)"
    );
    let screenshots = std::env::var("ETL_SCREENSHOTS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| std::env::temp_dir().join(format!("etl-webui-{}", std::process::id())));
    std::fs::create_dir_all(&screenshots).unwrap();
    let ui = env
        .setting("TEMPORAL_UI_URL")
        .unwrap_or_else(|| "http://127.0.0.1:8233".to_owned());
    let namespace = env
        .setting("TEMPORAL_NAMESPACE")
        .unwrap_or_else(|| "default".to_owned());
    let output = Command::new("node")
        .current_dir(&webui)
        .args([
            "check.mjs",
            "--ui",
            &ui,
            "--namespace",
            &namespace,
            "--source",
            &source,
        ])
        .args(["--workflow-id", workflow])
        .args([
            "--expect-summary",
            &format!("{source}: s3://{}/{} (", env.bucket, object.key),
        ])
        .args(["--expect-details", &format!("ETag {}", object.etag)])
        .args(["--expect-details", "Mode snapshot"])
        .arg("--screenshots")
        .arg(&screenshots)
        .output()
        .expect("node");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "Web UI check failed:\n{text}");
    for shot in ["webui-list.png", "webui-workflow.png"] {
        let size = std::fs::metadata(screenshots.join(shot))
            .map(|m| m.len())
            .unwrap_or(0);
        assert!(size > 10_000, "{shot}: {size} bytes\n{text}");
    }
}
