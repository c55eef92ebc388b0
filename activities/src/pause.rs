//! Pause points for fault-injection tests. With `ETL_PAUSE_AT=<point>` the worker holds every
//! activity that reaches that step, logs "paused at <point>", and stops heartbeating it, as a
//! worker frozen there would. A test can then SIGKILL the worker at an exact place (inside an
//! open Postgres transaction, between a commit and the ClickHouse copy, ...), or take a
//! service down while the job is held, or let the attempt lose its lease to a retry (a zombie).
//! SIGUSR1 releases the held activities and disarms the point. Unset, each point is one load of
//! a `OnceLock`.
//!
//! With `ETL_PAUSE_GATE=<directory>` as well, the point becomes a gate that a test opens one
//! activity at a time, to force an order (the model-based test commits an object's chunks last
//! first, or in a random order): an activity that reaches it writes `<key>.held` into the
//! directory and waits, heartbeating as usual, until `<key>.go` exists. A chunk's key is
//! `<job id>.<chunk index>` (at `chunk-after-read` and `chunk-before-ledger`).

use std::{
    fmt,
    path::{Path, PathBuf},
    str::FromStr,
    sync::{
        Arc, OnceLock,
        atomic::{AtomicBool, Ordering},
    },
};

use tokio::sync::Notify;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PausePoint {
    /// The object has been scanned, the plan is not stored yet.
    Plan,
    /// A chunk is read and parsed; its transaction has not begun.
    ChunkAfterRead,
    /// A chunk's catalog rows, invalid rows and ledger row are written inside its Postgres
    /// transaction, which is not committed; ClickHouse has nothing of it yet.
    ChunkBeforeCommit,
    /// A chunk is committed; the ClickHouse copy of the catalog rows it changed is not made.
    ChunkBeforeClickHouse,
    /// The ClickHouse copy is made; the ledger does not say so yet.
    ChunkBeforeLedger,
    /// Every chunk is done; the job totals are not stored yet.
    Aggregate,
    /// The delisting is committed in Postgres; its ClickHouse copy is not made.
    Delist,
}

const POINTS: [(PausePoint, &str); 7] = [
    (PausePoint::Plan, "plan"),
    (PausePoint::ChunkAfterRead, "chunk-after-read"),
    (PausePoint::ChunkBeforeCommit, "chunk-before-commit"),
    (PausePoint::ChunkBeforeClickHouse, "chunk-before-clickhouse"),
    (PausePoint::ChunkBeforeLedger, "chunk-before-ledger"),
    (PausePoint::Aggregate, "aggregate"),
    (PausePoint::Delist, "delist"),
];

impl fmt::Display for PausePoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = POINTS.iter().find(|(p, _)| p == self).map(|(_, n)| *n);
        f.write_str(name.unwrap_or_default())
    }
}

impl FromStr for PausePoint {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        POINTS
            .iter()
            .find(|(_, name)| *name == s)
            .map(|(point, _)| *point)
            .ok_or_else(|| {
                let names: Vec<&str> = POINTS.iter().map(|(_, n)| *n).collect();
                format!("expected one of {}, got {s:?}", names.join(", "))
            })
    }
}

struct Armed {
    point: Option<PausePoint>,
    gate: Option<PathBuf>,
    released: AtomicBool,
    release: Notify,
}

static ARMED: OnceLock<Armed> = OnceLock::new();

tokio::task_local! {
    /// Set while the current activity is held: its heartbeats stop.
    static FROZEN: Arc<AtomicBool>;
}

/// Sets the process's pause point once, at worker start-up; SIGUSR1 releases it, or, with a
/// `gate` directory, each held activity's `<key>.go` file does.
pub fn arm(point: Option<PausePoint>, gate: Option<PathBuf>) -> std::io::Result<()> {
    let armed = ARMED.get_or_init(|| Armed {
        point,
        gate,
        released: AtomicBool::new(false),
        release: Notify::new(),
    });
    if armed.point.is_some() && armed.gate.is_none() {
        let mut signal =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::user_defined1())?;
        tokio::spawn(async move {
            signal.recv().await;
            if let Some(armed) = ARMED.get() {
                armed.released.store(true, Ordering::SeqCst);
                armed.release.notify_waiters();
                tracing::warn!("pause released (SIGUSR1)");
            }
        });
    }
    Ok(())
}

/// Holds the activity here while the worker is armed at `point` and not released.
pub async fn reached(point: PausePoint) {
    reached_as(point, || point.to_string()).await;
}

/// The same for an activity that a gate knows by `key` (made only when the point is armed).
pub async fn reached_as(point: PausePoint, key: impl FnOnce() -> String) {
    let Some(armed) = ARMED.get() else { return };
    if armed.point != Some(point) {
        return;
    }
    if let Some(gate) = &armed.gate {
        pass_gate(gate, &key()).await;
        return;
    }
    // Registered before the flag is read, so a release in between is not missed.
    let mut released = std::pin::pin!(armed.release.notified());
    released.as_mut().enable();
    if armed.released.load(Ordering::SeqCst) {
        return;
    }
    let frozen = FROZEN.try_with(Arc::clone).ok();
    if let Some(frozen) = &frozen {
        frozen.store(true, Ordering::SeqCst);
    }
    tracing::warn!(%point, "paused at {point} (ETL_PAUSE_AT); SIGUSR1 releases");
    released.await;
    if let Some(frozen) = &frozen {
        frozen.store(false, Ordering::SeqCst);
    }
}

/// Waits until the test opens the gate for `key` (a test-only path: it polls).
async fn pass_gate(gate: &Path, key: &str) {
    let go = gate.join(format!("{key}.go"));
    if let Err(err) = std::fs::write(gate.join(format!("{key}.held")), b"") {
        tracing::error!("pause gate {}: {err}", gate.display());
        return;
    }
    tracing::warn!(key, "held at the pause gate; {} opens it", go.display());
    while !go.exists() {
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

/// Runs `work` with a flag that [`reached`] sets while it holds the work; heartbeats check it.
pub async fn freezable<T>(frozen: Arc<AtomicBool>, work: impl Future<Output = T>) -> T {
    FROZEN.scope(frozen, work).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_unknown_names_are_refused() {
        for (point, name) in POINTS {
            assert_eq!(name.parse::<PausePoint>(), Ok(point));
            assert_eq!(point.to_string(), name);
        }
        let err = "mid-chunk".parse::<PausePoint>().unwrap_err();
        assert!(err.contains("chunk-before-commit"), "{err}");
    }
}
