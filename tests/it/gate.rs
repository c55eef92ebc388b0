//! The pause gate (`ETL_PAUSE_GATE`): a worker holds each chunk before its transaction, and a
//! test opens the gate chunk by chunk to force the order in which they commit.

use std::{
    path::{Path, PathBuf},
    process::{Child, Stdio},
    time::{Duration, Instant},
};

use serde_json::Value;

use catalog_model::scenario::CommitOrder;

use crate::harness::TestEnv;

/// How long a released chunk may take to commit.
const COMMIT_TIMEOUT: Duration = Duration::from_secs(120);

/// Runs `etlctl` in the background and opens the gate (`dir`) for the chunks it holds in the
/// order's way, until it exits. Returns its JSON, or `{"refused": <its message>}` when it
/// printed none.
pub async fn etlctl_releasing(
    env: &TestEnv,
    dir: &Path,
    args: &[&str],
    order: CommitOrder,
) -> Value {
    let parallel = parallel_arg(args).unwrap_or(activities::model::DEFAULT_MAX_PARALLEL_CHUNKS);
    let mut child = spawn_etlctl(env, args);
    let mut gate = Gate::new(dir, order, parallel);
    let deadline = Instant::now() + COMMIT_TIMEOUT;
    loop {
        if gate.release_next(env).await {
            continue;
        }
        if child.try_wait().unwrap().is_some() {
            break;
        }
        assert!(Instant::now() < deadline, "etlctl {args:?} never ended");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    printed(child)
}

/// The value of `--parallel` in an `etlctl` argument list.
pub fn parallel_arg(args: &[&str]) -> Option<u32> {
    args.iter()
        .position(|a| *a == "--parallel")
        .and_then(|at| args.get(at + 1)?.parse().ok())
}

/// `etlctl args` in the background, its output captured for [`printed`].
pub fn spawn_etlctl(env: &TestEnv, args: &[&str]) -> Child {
    env.etlctl_command(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("etlctl")
}

/// The JSON an `etlctl` run printed, or `{"refused": <its message>}` when it printed none.
pub fn printed(child: Child) -> Value {
    let output = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    serde_json::from_str(stdout.trim())
        .unwrap_or_else(|_| serde_json::json!({"refused": String::from_utf8_lossy(&output.stderr)}))
}

/// A directory for a worker's `ETL_PAUSE_GATE`, empty.
pub fn gate_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("etl-gate-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The pause gate's directory: which chunks are held, and opening them in an order.
pub struct Gate {
    pub dir: PathBuf,
    order: CommitOrder,
    /// The job's `--parallel`: the order is chosen once that many chunks (or all that are left)
    /// wait at the gate, so "last first" is the last of them all, not of the first to arrive.
    parallel: u32,
    rng: u64,
    pub released: usize,
}

impl Gate {
    pub fn new(dir: &Path, order: CommitOrder, parallel: u32) -> Self {
        Self {
            dir: dir.to_owned(),
            parallel,
            rng: match order {
                CommitOrder::Random(seed) => seed | 1,
                _ => 1,
            },
            order,
            released: 0,
        }
    }

    pub fn order(&self) -> CommitOrder {
        self.order
    }

    pub fn parallel(&self) -> u32 {
        self.parallel
    }

    /// (job id, chunk index) of every chunk waiting at the gate.
    pub fn held(&self) -> Vec<(String, u32)> {
        let mut held: Vec<(String, u32)> = std::fs::read_dir(&self.dir)
            .unwrap()
            .filter_map(|entry| {
                let name = entry.ok()?.file_name().into_string().ok()?;
                let key = name.strip_suffix(".held")?;
                if self.dir.join(format!("{key}.go")).exists() {
                    return None;
                }
                let (job, chunk) = key.rsplit_once('.')?;
                Some((job.to_owned(), chunk.parse().ok()?))
            })
            .collect();
        held.sort_by_key(|(_, chunk)| *chunk);
        held
    }

    fn next_random(&mut self, below: usize) -> usize {
        // xorshift64*: enough to shuffle, and the same for the same seed.
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        (self.rng.wrapping_mul(0x2545_f491_4f6c_dd1d) % below as u64) as usize
    }

    /// Whether every chunk the job runs at once is at the gate: `--parallel` of them, or all
    /// that are left uncommitted.
    async fn all_arrived(&self, env: &TestEnv, held: &[(String, u32)]) -> bool {
        let Some((job, _)) = held.first() else {
            return false;
        };
        let (chunks, committed): (Option<i32>, i64) = sqlx::query_as(
            "SELECT chunks, (SELECT count(*) FROM etl_chunks
                             WHERE job_id = $1::uuid AND status = 'committed')
             FROM etl_jobs WHERE id = $1::uuid",
        )
        .bind(job)
        .fetch_one(&env.pg)
        .await
        .unwrap();
        let left = i64::from(chunks.unwrap_or(0)) - committed;
        held.len() as i64 >= left.min(i64::from(self.parallel))
    }

    /// Opens the gate for the chunks the order picks among those held (all of them at once
    /// for `Concurrent`) once every chunk in flight has arrived, and waits until they have
    /// committed. False when it released nothing yet.
    pub async fn release_next(&mut self, env: &TestEnv) -> bool {
        let held = self.held();
        if held.is_empty() || !self.all_arrived(env, &held).await {
            return false;
        }
        let picked: Vec<(String, u32)> = match self.order {
            CommitOrder::InOrder => vec![held[0].clone()],
            CommitOrder::LastFirst => vec![held[held.len() - 1].clone()],
            CommitOrder::Random(_) => {
                let at = self.next_random(held.len());
                vec![held[at].clone()]
            }
            CommitOrder::Concurrent => held,
        };
        self.open(env, &picked).await;
        true
    }

    /// Opens the gate for every chunk held now (a cancelled job's chunks in flight).
    pub async fn release_held(&mut self, env: &TestEnv) {
        let held = self.held();
        self.open(env, &held).await;
    }

    /// Opens the gate for one held chunk (the order's pick).
    pub async fn release_one(&mut self, env: &TestEnv) -> bool {
        let held = self.held();
        if held.is_empty() || !self.all_arrived(env, &held).await {
            return false;
        }
        let at = match self.order {
            CommitOrder::LastFirst => held.len() - 1,
            CommitOrder::Random(_) => self.next_random(held.len()),
            CommitOrder::InOrder | CommitOrder::Concurrent => 0,
        };
        self.open(env, &held[at..=at]).await;
        true
    }

    /// Opens the gate for every chunk held now and returns at once: they go on while a fault
    /// is injected (a service is down, their workflow terminated), whatever becomes of them.
    pub fn open_held_now(&mut self) {
        let held = self.held();
        for (job, chunk) in &held {
            std::fs::write(self.dir.join(format!("{job}.{chunk}.go")), b"").unwrap();
        }
        self.released += held.len();
    }

    pub async fn open(&mut self, env: &TestEnv, chunks: &[(String, u32)]) {
        for (job, chunk) in chunks {
            std::fs::write(self.dir.join(format!("{job}.{chunk}.go")), b"").unwrap();
        }
        self.released += chunks.len();
        let deadline = Instant::now() + COMMIT_TIMEOUT;
        for (job, chunk) in chunks {
            loop {
                let status: Option<String> = sqlx::query_scalar(
                    "SELECT status FROM etl_chunks WHERE job_id = $1::uuid AND chunk_index = $2",
                )
                .bind(job)
                .bind(*chunk as i32)
                .fetch_optional(&env.pg)
                .await
                .unwrap();
                // A chunk of a job that was sealed meanwhile (cancelled) never commits.
                let sealed: bool = sqlx::query_scalar(
                    "SELECT NOT accepting_commits FROM etl_jobs WHERE id = $1::uuid",
                )
                .bind(job)
                .fetch_one(&env.pg)
                .await
                .unwrap();
                if status.as_deref() == Some("committed") || sealed {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "chunk {chunk} of job {job} never committed"
                );
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    }
}
