//! Safe deploys: histories recorded from real runs (`tests/histories/`, written by
//! `make record-histories`) replay against the current workflow code. A change that running
//! workflows could not replay fails here; guard it with `ctx.patched(..)` and record again.

use std::path::{Path, PathBuf};

use temporalio_client::WorkflowHistory;
use temporalio_sdk::workflow_replayer::{WorkflowReplayer, WorkflowReplayerOptions};
use workflows::{CatalogIngest, Reconcile, Retention, SourceIngest};

fn replayer() -> WorkflowReplayer {
    let options = WorkflowReplayerOptions::new()
        .register_workflow::<CatalogIngest>()
        .and_then(|o| o.register_workflow::<SourceIngest>())
        .and_then(|o| o.register_workflow::<Retention>())
        .and_then(|o| o.register_workflow::<Reconcile>())
        .expect("workflows register")
        .build();
    WorkflowReplayer::new(options).expect("replayer")
}

/// (path under `tests/histories/`, JSON) of every recorded history, subdirectories (histories
/// kept from earlier versions) included.
fn recorded() -> Vec<(String, Vec<u8>)> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<(String, Vec<u8>)>) {
        for entry in std::fs::read_dir(dir).unwrap_or_else(|err| panic!("{}: {err}", dir.display()))
        {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(root, &path, out);
            } else if path.extension().is_some_and(|ext| ext == "json") {
                let name = path
                    .strip_prefix(root)
                    .unwrap()
                    .to_string_lossy()
                    .into_owned();
                out.push((name, std::fs::read(&path).unwrap()));
            }
        }
    }
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("histories");
    let mut files = Vec::new();
    walk(&root, &root, &mut files);
    files.sort();
    files
}

#[tokio::test]
async fn recorded_histories_replay_against_the_current_workflows() {
    let files = recorded();
    let names: Vec<&str> = files.iter().map(|(name, _)| name.as_str()).collect();
    // Every workflow type, each way a job ends, and a job that continued as new.
    for expected in [
        "ingest-continued-as-new-1.json",
        "ingest-dry-run-0.json",
        "ingest-child-completed-0.json",
        "ingest-child-failed-0.json",
        "ingest-cancelled-0.json",
        "source-ingest-0.json",
        "reconcile-0.json",
        "retention-0.json",
    ] {
        assert!(
            names.contains(&expected),
            "{expected} missing from {names:?}"
        );
    }
    let histories: Vec<WorkflowHistory> = files
        .iter()
        .map(|(name, json)| {
            WorkflowHistory::from_json(json).unwrap_or_else(|err| panic!("{name}: {err}"))
        })
        .collect();
    let results = replayer()
        .replay_workflows(histories)
        .await
        .expect("replay ran");
    let failures: Vec<String> = results
        .iter()
        .zip(&names)
        .filter_map(|(result, name)| {
            result
                .replay_failure
                .as_ref()
                .map(|failure| format!("{name}: {failure}"))
        })
        .collect();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The replayer does catch a history the code would not write: the same history with one
/// scheduled activity renamed.
#[tokio::test]
async fn a_history_the_workflows_would_not_write_fails_to_replay() {
    let (name, json) = recorded()
        .into_iter()
        .find(|(name, _)| name == "ingest-child-completed-0.json")
        .expect("a recorded ingest");
    let text = String::from_utf8(json).unwrap();
    let tampered = text.replacen("EtlActivities::settle", "EtlActivities::tampered", 1);
    assert_ne!(tampered, text, "{name} schedules the settle activity");
    let history = WorkflowHistory::from_json(tampered.as_bytes()).unwrap();
    let replayed = replayer().replay_workflow(history).await;
    let error = replayed
        .expect_err("a renamed activity is nondeterministic")
        .to_string();
    assert!(error.contains("nondetermin"), "{error}");
}
