//! The model-based scenarios under faults (`make soak`, and the chaos tests `make test` runs
//! after the other tests, because they stop shared services).
//!
//! Some of a scenario's ingests get one fault while their chunks wait at the gate: the worker
//! SIGKILLed, the workflow terminated from outside, ClickHouse or S3 down, Postgres restarted,
//! or (once per scenario) a non-retryable ClickHouse error. A job that a fault leaves without a
//! workflow, or `failed`, gets the one command an operator types (`etlctl retry JOB`); every
//! other job must finish by itself. After every step both stores must equal what the model says
//! a clean run gives: the faults change nothing but the time taken.
//!
//! Sources run at once only without outages: a stopped service would fail the other scenarios'
//! own checks (the test reads both stores), not the pipeline.

use std::fmt;

use super::*;
use crate::ingest::wait_until_ended;

/// The chaos scenarios `make test` runs: three sources at once (no outages), then one with
/// every kind of fault.
const AT_ONCE_SEEDS: [u64; 3] = [
    0x4c1e_77a0_d2b9_3e01,
    0x9a05_3fd4_61c8_b702,
    0x2e7b_c019_84f3_5d03,
];
const WITH_OUTAGES_SEEDS: [u64; 2] = [0x71d3_0b5e_a8c4_2f04, 0x0e98_c6a1_5d27_b305];

/// Ingest options under chaos: a killed worker's chunks are retried after 4 s, not 30 s, and
/// an outage is retried every second.
pub(super) const QUICK_RECOVERY: [&str; 4] =
    ["--heartbeat-timeout", "4", "--retry-max-interval", "1s"];

/// How long an outage lasts at most when nothing notices it (every chunk was read already).
const OUTAGE_UNNOTICED: Duration = Duration::from_secs(20);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Fault {
    /// SIGKILL to the worker; a new one starts.
    KillWorker,
    /// `temporal workflow terminate`, as from the Web UI; then `etlctl retry JOB`.
    Terminate,
    /// The service is stopped until a chunk is retried (it failed against it), or for at
    /// most [`OUTAGE_UNNOTICED`], then started again.
    Outage(&'static str),
    /// Postgres restarts (every open connection breaks).
    RestartPostgres,
    /// ClickHouse's history table is renamed away: the chunk's copy fails for good and the
    /// job ends `failed`; the table comes back, then `etlctl retry JOB`.
    NonRetryable,
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::KillWorker => f.write_str("worker SIGKILLed"),
            Self::Terminate => f.write_str("workflow terminated, then etlctl retry"),
            Self::Outage(service) => write!(f, "{service} down"),
            Self::RestartPostgres => f.write_str("postgres restarted"),
            Self::NonRetryable => f.write_str("non-retryable ClickHouse error, then etlctl retry"),
        }
    }
}

/// How an ingest with a fault ended.
pub(super) enum Faulted {
    /// The job went on by itself (or was never started): what `etlctl ingest` printed.
    ByItself(Value),
    /// The job ended `failed` and `etlctl retry` ran its object again as a new job.
    Retried { failed_job: String, retry: Value },
}

/// Which fault each ingest gets: seeded, so a scenario's faults replay with its seed.
pub(super) struct Chaos {
    seed: u64,
    rng: u64,
    non_retryable_left: bool,
    outages: bool,
}

impl Chaos {
    pub(super) fn new(seed: u64, outages: bool) -> Self {
        Self {
            seed,
            rng: seed ^ 0x9e37_79b9_7f4a_7c15 | 1,
            non_retryable_left: true,
            outages,
        }
    }

    fn next(&mut self) -> u64 {
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        // xorshift64*'s low bits are its weakest: draw from the high half.
        self.rng.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 32
    }

    /// The fault for the next ingest, if any (one in four gets none). A dry run is never
    /// retried (it is run again as a new dry run): it gets no fault that fails its job.
    pub(super) fn next_fault(&mut self, dry_run: bool) -> Option<Fault> {
        let fault = self.draw()?;
        Some(match fault {
            Fault::Terminate | Fault::NonRetryable if dry_run => Fault::KillWorker,
            fault => fault,
        })
    }

    fn draw(&mut self) -> Option<Fault> {
        Some(match self.next() % 8 {
            0 | 1 => return None,
            2 => Fault::KillWorker,
            3 => Fault::Terminate,
            4 if self.outages => Fault::Outage("clickhouse"),
            5 if self.outages => Fault::Outage("garage"),
            6 if self.outages => Fault::RestartPostgres,
            4 => Fault::Terminate,
            7 if self.non_retryable_left => {
                self.non_retryable_left = false;
                Fault::NonRetryable
            }
            _ => Fault::KillWorker,
        })
    }

    /// How many chunks commit before the fault.
    fn chunks_before_fault(&mut self) -> usize {
        (self.next() % 3) as usize
    }
}

impl ScenarioRun {
    /// [`ScenarioRun::run_releasing`] with `fault` injected once the job has committed a few
    /// chunks and holds more at the gate.
    pub(super) async fn run_with_fault(
        &mut self,
        args: &[String],
        order: CommitOrder,
        fault: Fault,
        label: &str,
    ) -> Faulted {
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        let parallel = crate::gate::parallel_arg(&argv).expect("--parallel");
        let before_fault = self.chaos.as_mut().unwrap().chunks_before_fault();
        let mut child = crate::gate::spawn_etlctl(&self.env, &argv);
        let mut gate = Gate::new(&self.gate, order, parallel);
        let deadline = Instant::now() + 2 * JOB_TIMEOUT;
        let mut pending = Some(fault);
        loop {
            if pending.is_some()
                && gate.released >= before_fault
                && let Some((job, _)) = gate.held().first().cloned()
            {
                pending = None;
                eprintln!(
                    "chaos: seed {:#x}, {label}",
                    self.chaos.as_ref().unwrap().seed
                );
                if let Some(resumed) = self.inject(fault, &job, &mut gate, &mut child, label).await
                {
                    return resumed;
                }
                continue;
            }
            if gate.release_next(&self.env).await {
                continue;
            }
            if child.try_wait().unwrap().is_some() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{label}: etlctl {args:?} never ended"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Faulted::ByItself(crate::gate::printed(child))
    }

    /// Injects `fault` into `job`. `None` when the job goes on by itself.
    async fn inject(
        &mut self,
        fault: Fault,
        job: &str,
        gate: &mut Gate,
        child: &mut std::process::Child,
        label: &str,
    ) -> Option<Faulted> {
        match fault {
            Fault::KillWorker => {
                self.env.kill_workers();
                self.start_gated_worker();
                None
            }
            Fault::RestartPostgres => {
                self.env.restart_service("postgres");
                None
            }
            Fault::Outage(service) => {
                let stopped = self.env.stop_service(service);
                let retries_before = self.retries(job).await;
                gate.open_held_now();
                let until = Instant::now() + OUTAGE_UNNOTICED;
                while Instant::now() < until && self.retries(job).await <= retries_before {
                    gate.open_held_now();
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                stopped.start();
                None
            }
            Fault::Terminate => {
                let workflow_id: String =
                    sqlx::query_scalar("SELECT workflow_id FROM etl_jobs WHERE id = $1::uuid")
                        .bind(job)
                        .fetch_one(&self.env.pg)
                        .await
                        .unwrap();
                self.env.temporal_workflow(&[
                    "terminate",
                    "--workflow-id",
                    &workflow_id,
                    "--reason",
                    "chaos",
                ]);
                // The attempts in flight outlive their workflow (zombies): let them run.
                gate.open_held_now();
                child.wait().unwrap();
                Some(Faulted::Retried {
                    failed_job: job.to_owned(),
                    retry: self.retry(job, gate, label).await,
                })
            }
            Fault::NonRetryable => {
                self.rename_history_table("catalog_item_observations", "observations_away")
                    .await;
                let deadline = Instant::now() + JOB_TIMEOUT;
                let ended = loop {
                    gate.open_held_now();
                    if let Some(summary) = wait_until_ended(&self.env, job).await {
                        break summary;
                    }
                    assert!(Instant::now() < deadline, "{label}: job {job} never failed");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                };
                self.rename_history_table("observations_away", "catalog_item_observations")
                    .await;
                child.wait().unwrap();
                if ended["status"] == "failed" {
                    let error_type = ended["error_type"].as_str().unwrap_or_default();
                    assert!(
                        error_type.starts_with("clickhouse"),
                        "{label}: a typed ClickHouse failure: {ended}"
                    );
                    Some(Faulted::Retried {
                        failed_job: job.to_owned(),
                        retry: self.retry(job, gate, label).await,
                    })
                } else {
                    // A job whose chunks had all been copied: nothing failed.
                    Some(Faulted::ByItself(ended))
                }
            }
        }
    }

    /// `etlctl retry JOB`, the gate opened in the step's order; its summary.
    async fn retry(&self, job: &str, gate: &Gate, label: &str) -> Value {
        let parallel = gate.parallel().to_string();
        let args = ["retry", job, "--wait", "--json", "--parallel", &parallel];
        let summary =
            crate::gate::etlctl_releasing(&self.env, &self.gate, &args, gate.order()).await;
        assert_eq!(
            summary["status"], "completed",
            "{label}: etlctl retry: {summary}"
        );
        summary
    }

    /// Retries of the job's chunks so far (attempts after each chunk's first).
    async fn retries(&self, job: &str) -> i64 {
        sqlx::query_scalar(
            "SELECT coalesce(sum(greatest(attempts - 1, 0)), 0)::bigint FROM etl_chunks
             WHERE job_id = $1::uuid",
        )
        .bind(job)
        .fetch_one(&self.env.pg)
        .await
        .unwrap_or(0)
    }

    async fn rename_history_table(&self, from: &str, to: &str) {
        self.env
            .ch
            .query(&format!("RENAME TABLE {from} TO {to}"))
            .execute()
            .await
            .unwrap();
    }
}

/// Runs `seeds` at once, one source each, with faults (outages only when there is one seed);
/// panics with the first failure.
async fn run_with_faults(seeds: &[u64]) {
    let outages = seeds.len() == 1;
    let runs: Vec<_> = seeds
        .iter()
        .map(|&seed| {
            tokio::spawn(async move {
                let started = Instant::now();
                run_scenario_with(seed, Some(Chaos::new(seed, outages))).await;
                eprintln!(
                    "chaos: seed {seed:#x} ok in {:.1} s",
                    started.elapsed().as_secs_f64()
                );
            })
        })
        .collect();
    for run in runs {
        if let Err(err) = run.await {
            std::panic::resume_unwind(err.into_panic());
        }
    }
}

/// Three sources at once, each scenario with faults in its ingests.
#[tokio::test(flavor = "multi_thread", worker_threads = 8)]
async fn chaos_three_sources_at_once() {
    run_with_faults(&AT_ONCE_SEEDS).await;
}

/// Scenarios one at a time, with outages of ClickHouse, S3 and Postgres among their faults.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn chaos_with_outages() {
    for seed in WITH_OUTAGES_SEEDS {
        run_with_faults(&[seed]).await;
    }
}

/// `make soak SEED=… N=… [FAULTS=0] [AT_ONCE=1]`: N scenarios from SEED on, AT_ONCE of them
/// (sources) at a time, with faults unless FAULTS=0 (outages only one at a time).
#[tokio::test(flavor = "multi_thread", worker_threads = 8)]
#[ignore = "many scenarios: make soak"]
async fn soak() {
    let start = std::env::var("SOAK_SEED")
        .ok()
        .filter(|s| !s.trim().is_empty())
        .map(|s| {
            let s = s.trim();
            s.strip_prefix("0x")
                .map_or_else(|| s.parse(), |hex| u64::from_str_radix(hex, 16))
                .expect("SOAK_SEED: a number (decimal or 0x hex)")
        })
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    let setting = |name: &str, default: u64| -> u64 {
        std::env::var(name)
            .ok()
            .filter(|s| !s.trim().is_empty())
            .map_or(default, |n| n.trim().parse().expect("a number"))
    };
    let count = setting("SOAK_N", 20);
    let faults = setting("SOAK_FAULTS", 1) != 0;
    let at_once = setting("SOAK_AT_ONCE", 1).max(1);
    eprintln!(
        "soak: {count} scenarios from seed {start:#x}, {at_once} at a time, faults {}",
        if faults { "on" } else { "off" }
    );
    let started = Instant::now();
    let seeds: Vec<u64> = (start..start + count).collect();
    for batch in seeds.chunks(at_once as usize) {
        if faults {
            run_with_faults(batch).await;
        } else {
            for &seed in batch {
                let one = Instant::now();
                run_scenario(seed).await;
                eprintln!(
                    "soak: seed {seed:#x} ok in {:.1} s",
                    one.elapsed().as_secs_f64()
                );
            }
        }
    }
    eprintln!(
        "soak: {count} scenarios from seed {start:#x} ok in {:.0} s",
        started.elapsed().as_secs_f64()
    );
}
