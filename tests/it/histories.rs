//! Records the workflow histories `tests/replay.rs` replays: real runs of every workflow type
//! and of each way a job ends, written to `tests/histories/`. Run it after a deliberate,
//! guarded workflow change (`make record-histories`), never as part of `make test`.

use std::{path::PathBuf, time::Duration};

use activities::{
    config::{Config, Needs},
    temporal::Patience,
};
use serde_json::Value;
use temporalio_client::{
    UntypedWorkflow, WorkflowExecutionInfo, WorkflowFetchHistoryOptions, WorkflowHandle,
};

use crate::{
    harness::TestEnv,
    ingest::{catalog, wait_until_final},
};
use generator::GeneratorConfig;

fn histories_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("histories")
}

/// The runs of `workflow_id` (the newest `keep`, oldest first) as `<name>-<n>.json`, in the
/// SDK's JSON history format, which `WorkflowHistory::from_json` reads back.
async fn record(env: &TestEnv, workflow_id: &str, name: &str, keep: usize) {
    let config = Config::from_env(Needs {
        temporal: true,
        ..Needs::NONE
    })
    .expect("Temporal settings");
    let client = activities::temporal::connect(&config, "record-histories", Patience::Command)
        .await
        .expect("Temporal");
    let mut runs: Vec<Value> = env.temporal_list(&format!("WorkflowId = '{workflow_id}'"));
    runs.sort_by_key(|run| run["startTime"].as_str().unwrap_or_default().to_owned());
    assert!(!runs.is_empty(), "no runs of {workflow_id}");
    let runs = &runs[runs.len().saturating_sub(keep)..];
    for (n, run) in runs.iter().enumerate() {
        let info = WorkflowExecutionInfo::builder()
            .namespace(config.temporal.namespace())
            .workflow_id(workflow_id)
            .run_id(run["execution"]["runId"].as_str().unwrap().to_owned())
            .build();
        let handle: WorkflowHandle<_, UntypedWorkflow> = WorkflowHandle::new(client.clone(), info);
        let json = handle
            .fetch_history(WorkflowFetchHistoryOptions::default())
            .to_json()
            .await
            .expect("history JSON");
        std::fs::write(histories_dir().join(format!("{name}-{n}.json")), json).unwrap();
    }
}

fn ingest(env: &TestEnv, source: &str, key: &str, extra: &[&str]) -> Value {
    let uri = env.uri(key);
    let mut args = vec!["ingest", uri.as_str(), "--source", source, "--json"];
    args.extend_from_slice(extra);
    let out = env.etlctl(&args);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    out.json()
}

#[tokio::test]
#[ignore = "writes tests/histories: `make record-histories`"]
async fn record_histories() {
    std::fs::create_dir_all(histories_dir()).unwrap();
    let mut env = TestEnv::new("histories").await;
    env.start_worker();
    let source = env.source_name();
    let (body, _) = catalog(GeneratorConfig {
        rows: 40,
        seed: 3,
        invalid_per_mille: 100,
        ..GeneratorConfig::default()
    });
    env.put("h/continued.csv", body.clone()).await;
    env.put("src/a.csv", body.clone()).await;
    env.put("src/b.csv", "sku,name\nA,b\n").await;

    // Continue-as-new: one chunk per few records and a small history budget.
    let continued = ingest(
        &env,
        &source,
        "h/continued.csv",
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
    assert_eq!(continued["status"], "completed", "{continued}");
    let dry = ingest(&env, &source, "h/continued.csv", &["--wait", "--dry-run"]);

    // A source run with a good and a bad object (its children end completed and failed).
    let source_run = env.etlctl(&[
        "ingest-source",
        "--uri",
        &env.uri("src/"),
        "--source",
        &source,
        "--wait",
        "--json",
    ]);
    let report = source_run.json();
    let child = |key: &str| {
        report["objects"]
            .as_array()
            .unwrap()
            .iter()
            .find(|o| o["key"] == key)
            .unwrap()["job_id"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let (good, bad) = (child("src/a.csv"), child("src/b.csv"));
    let workflow_of = |job: &str| {
        env.etlctl(&["jobs", "show", job, "--json"]).json()["workflow_id"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let (good, bad) = (workflow_of(&good), workflow_of(&bad));

    let reconcile = env.etlctl(&["reconcile", continued["job_id"].as_str().unwrap(), "--json"]);
    assert_eq!(
        reconcile.code, 0,
        "{}{}",
        reconcile.stdout, reconcile.stderr
    );
    let retention = env.etlctl(&[
        "retention",
        "run",
        "--days",
        "0",
        "--batch-size",
        "5",
        "--max-rows",
        "1000",
        "--json",
    ]);
    assert_eq!(
        retention.code, 0,
        "{}{}",
        retention.stdout, retention.stderr
    );

    // Cancelled while a chunk is held after its read.
    env.kill_workers();
    env.start_worker_pausing_at("chunk-after-read");
    env.put("h/cancelled.csv", body).await;
    let cancelled = ingest(
        &env,
        &source,
        "h/cancelled.csv",
        &["--chunk-bytes", "200", "--parallel", "1"],
    );
    let cancelled_job = cancelled["job_id"].as_str().unwrap();
    env.wait_for_log("paused at chunk-after-read", Duration::from_secs(60))
        .await;
    let cancel = env.etlctl(&["cancel", cancelled_job, "--no-wait", "--json"]);
    assert_eq!(cancel.code, 0, "{}{}", cancel.stdout, cancel.stderr);
    env.release_pause();
    assert_eq!(
        wait_until_final(&env, cancelled_job).await["status"],
        "cancelled"
    );

    // The previous recording is replaced; histories kept in subdirectories stay.
    for file in std::fs::read_dir(histories_dir()).unwrap() {
        let path = file.unwrap().path();
        if path.extension().is_some_and(|ext| ext == "json") {
            std::fs::remove_file(path).unwrap();
        }
    }
    let all = usize::MAX;
    record(
        &env,
        continued["workflow_id"].as_str().unwrap(),
        "ingest-continued-as-new",
        all,
    )
    .await;
    record(
        &env,
        dry["workflow_id"].as_str().unwrap(),
        "ingest-dry-run",
        all,
    )
    .await;
    record(
        &env,
        &format!("source-{source}-manual"),
        "source-ingest",
        all,
    )
    .await;
    record(&env, &good, "ingest-child-completed", all).await;
    record(&env, &bad, "ingest-child-failed", all).await;
    let reconcile_id = format!("reconcile-{}", continued["job_id"].as_str().unwrap());
    record(&env, &reconcile_id, "reconcile", all).await;
    // Other tests run retention under the same id: this test's run is the newest.
    record(&env, "retention-manual", "retention", 1).await;
    record(
        &env,
        cancelled["workflow_id"].as_str().unwrap(),
        "ingest-cancelled",
        all,
    )
    .await;
}
