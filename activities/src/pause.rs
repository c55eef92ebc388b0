//! Pause points for fault-injection tests: with `ETL_PAUSE_AT=<point>` the worker logs
//! "paused at <point>" when an activity reaches that step and then never finishes it, so a test
//! can SIGKILL the process at an exact place (inside an open Postgres transaction, between the
//! Postgres commit and the ClickHouse write, ...). Unset, each point is one load of a `OnceLock`.

use std::{fmt, str::FromStr, sync::OnceLock};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PausePoint {
    /// The object has been scanned, the plan is not stored yet.
    Plan,
    /// A chunk's rows are written inside its Postgres transaction, which is not committed.
    ChunkBeforeCommit,
    /// A chunk is committed in Postgres, its ClickHouse write has not started.
    ChunkBeforeClickHouse,
    /// Every chunk is done; the job totals are not stored yet.
    Aggregate,
}

const POINTS: [(PausePoint, &str); 4] = [
    (PausePoint::Plan, "plan"),
    (PausePoint::ChunkBeforeCommit, "chunk-before-commit"),
    (PausePoint::ChunkBeforeClickHouse, "chunk-before-clickhouse"),
    (PausePoint::Aggregate, "aggregate"),
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

static PAUSE_AT: OnceLock<Option<PausePoint>> = OnceLock::new();

/// Sets the process's pause point once, at worker start-up.
pub fn arm(point: Option<PausePoint>) {
    let _ = PAUSE_AT.set(point);
}

/// Never returns if the worker was armed at `point`.
pub async fn reached(point: PausePoint) {
    if PAUSE_AT.get().copied().flatten() == Some(point) {
        tracing::warn!(%point, "paused at {point} (ETL_PAUSE_AT); waiting to be killed");
        std::future::pending::<()>().await;
    }
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
