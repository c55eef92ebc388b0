//! Seeded scenarios: a source's CSV objects (structured records and the bytes the pipeline
//! reads) and the operations a test runs on them.
//!
//! Object versions (ETag, Last-Modified) only exist once the test has uploaded the objects, in
//! [`Scenario::upload_order`]; the test then builds the oracle with [`Scenario::model`] from the
//! versions it got. Job handles in the steps are the ones the model hands out when the steps are
//! applied in order, so the test maps each [`JobRef`] to the real job the step created.

mod draft;
mod render;

use std::fmt;
use std::ops::RangeInclusive;

use crate::model::{
    JobRef, JobStatus, Mode, Model, ObjectRef, ObjectVersion, Op, OpResult, Record,
};
use crate::rng::Rng;
use draft::{Catalog, ObjectKind};

/// One object of the scenario.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScenarioObject {
    /// A file name for the object's key. Names sort in upload order, so objects whose
    /// Last-Modified times tie are still ordered as uploaded (time, then key).
    pub name: String,
    /// What the pipeline reads, in row order; empty for a bad header (nothing is read).
    pub records: Vec<Record>,
    pub csv: Vec<u8>,
    /// The header lacks the `name` column: every job of the object fails before reading.
    pub bad_header: bool,
}

/// How the test releases chunk commits. The model ignores it: the outcome must not depend on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommitOrder {
    InOrder,
    LastFirst,
    /// A shuffle drawn from this seed.
    Random(u64),
    /// Several at once.
    Concurrent,
}

/// Execution knobs of a job, which the model ignores.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Execution {
    pub chunk_bytes: u64,
    pub parallel: u32,
    pub commit_order: CommitOrder,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Ingest {
        object: ObjectRef,
        mode: Mode,
    },
    /// A new job, cancelled once `chunks` of its chunks have committed (fewer than it has).
    /// The test reports the row ranges that committed; see [`Step::op`].
    CancelAfterChunks {
        object: ObjectRef,
        mode: Mode,
        chunks: u32,
    },
    Retry(JobRef),
    Repair(JobRef),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub action: Action,
    pub execution: Execution,
}

impl Step {
    /// The model's operation for this step. `committed_rows` is called for a
    /// `CancelAfterChunks` step only: the row ranges of the chunks that committed before the
    /// cancel.
    pub fn op(&self, committed_rows: impl FnOnce() -> Vec<RangeInclusive<u64>>) -> Op {
        match self.action {
            Action::Ingest { object, mode } => Op::Ingest { object, mode },
            Action::CancelAfterChunks { object, mode, .. } => Op::IngestPartly {
                object,
                mode,
                committed_rows: committed_rows(),
            },
            Action::Retry(job) => Op::Retry(job),
            Action::Repair(job) => Op::Repair(job),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scenario {
    pub seed: u64,
    /// Indexed by `ObjectRef`.
    pub objects: Vec<ScenarioObject>,
    /// Oldest first: each object must be uploaded after (and so be newer than) the ones before.
    pub upload_order: Vec<ObjectRef>,
    pub steps: Vec<Step>,
}

impl Scenario {
    pub fn generate(seed: u64) -> Self {
        let mut rng = Rng::new(seed);
        let object_count = rng.between(2..=5);
        let bad_header_at = rng.percent(10).then(|| rng.below(object_count));
        // A truncated scrape needs a good one before it.
        let mass_vanish_at = rng
            .percent(25)
            .then(|| rng.between(1..=object_count - 1))
            .filter(|&at| bad_header_at.is_none_or(|bad| at != bad && !(bad == 0 && at == 1)));

        let mut catalog = Catalog::new(&mut rng, mass_vanish_at.is_some());
        let mut drafted_a_good_object = false;
        let mut drafts = Vec::with_capacity(object_count);
        for index in 0..object_count {
            let kind = if Some(index) == bad_header_at {
                ObjectKind::BadHeader
            } else if Some(index) == mass_vanish_at {
                ObjectKind::MassVanish
            } else {
                ObjectKind::Next
            };
            drafts.push(catalog.next_object(&mut rng, kind, !drafted_a_good_object));
            drafted_a_good_object |= kind != ObjectKind::BadHeader;
        }

        // Objects are drafted as the catalog evolves; now and then a scrape is uploaded late.
        let mut upload_order: Vec<ObjectRef> = (0..object_count).map(ObjectRef).collect();
        if rng.percent(20) {
            let at = rng.below(object_count - 1);
            upload_order.swap(at, at + 1);
        }

        let mut objects = Vec::with_capacity(object_count);
        let mut chunking = Vec::with_capacity(object_count);
        for (index, draft) in drafts.into_iter().enumerate() {
            let records: Vec<&[Vec<u8>]> = draft.records.iter().map(|r| &r.fields[..]).collect();
            let rendered = render::render(&mut rng, &draft.header.fields, &records);
            let upload_position = upload_position(&upload_order, ObjectRef(index));
            chunking.push((rendered.data_bytes, rendered.longest_record_span));
            objects.push(ScenarioObject {
                name: format!("snapshot-{upload_position:02}.csv"),
                records: if draft.bad_header {
                    Vec::new()
                } else {
                    draft.records.into_iter().map(|r| r.record).collect()
                },
                csv: rendered.csv,
                bad_header: draft.bad_header,
            });
        }

        let mut scenario = Self {
            seed,
            objects,
            upload_order,
            steps: Vec::new(),
        };
        scenario.steps = StepPlanner::new(&scenario, &chunking).plan(&mut rng);
        scenario
    }

    /// The oracle for this scenario; `versions[i]` is the version the upload of `objects[i]` got.
    ///
    /// # Panics
    /// When `versions` does not hold one version per object.
    pub fn model(&self, versions: &[ObjectVersion]) -> Model {
        assert_eq!(versions.len(), self.objects.len(), "one version per object");
        let mut model = Model::new();
        for (object, version) in self.objects.iter().zip(versions) {
            model.add_object(version.clone(), object.records.clone(), object.bad_header);
        }
        model
    }

    /// Versions ordered as the upload order says, for running the model without a store.
    pub fn placeholder_versions(&self) -> Vec<ObjectVersion> {
        (0..self.objects.len())
            .map(|index| {
                let position = upload_position(&self.upload_order, ObjectRef(index));
                ObjectVersion {
                    modified_at_micros: 1_000_000 * (position as i64 + 1),
                    key: self.objects[index].name.clone(),
                    etag: format!("\"placeholder-{position}\""),
                }
            })
            .collect()
    }
}

fn upload_position(upload_order: &[ObjectRef], object: ObjectRef) -> usize {
    upload_order
        .iter()
        .position(|&o| o == object)
        .expect("every object is uploaded")
}

impl fmt::Display for Scenario {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "seed {:#018x}: objects [", self.seed)?;
        for (index, object) in self.objects.iter().enumerate() {
            let invalid = object
                .records
                .iter()
                .filter(|r| matches!(r, Record::Invalid(_)))
                .count();
            if index > 0 {
                f.write_str(", ")?;
            }
            write!(
                f,
                "o{index} {} {}B {} rows ({invalid} invalid)",
                object.name,
                object.csv.len(),
                object.records.len()
            )?;
            if object.bad_header {
                f.write_str(" bad header")?;
            }
        }
        let uploads: Vec<String> = self
            .upload_order
            .iter()
            .map(|o| format!("o{}", o.0))
            .collect();
        write!(f, "], uploads [{}], steps [", uploads.join(" "))?;
        for (index, step) in self.steps.iter().enumerate() {
            if index > 0 {
                f.write_str(", ")?;
            }
            match &step.action {
                Action::Ingest { object, mode } => write!(f, "ingest o{} {mode}", object.0)?,
                Action::CancelAfterChunks {
                    object,
                    mode,
                    chunks,
                } => write!(f, "cancel o{} {mode} after {chunks} chunk(s)", object.0)?,
                Action::Retry(job) => write!(f, "retry {job}")?,
                Action::Repair(job) => write!(f, "repair {job}")?,
            }
            let Execution {
                chunk_bytes,
                parallel,
                commit_order,
            } = step.execution;
            write!(f, " ({chunk_bytes}B x{parallel} {commit_order:?})")?;
        }
        f.write_str("]")
    }
}

/// Plans steps by applying them to a model with placeholder versions as it goes: whether a step
/// creates a job, and that job's status, depend only on identities and statuses, which the real
/// versions order the same way, so the job handles it predicts are the test's.
struct StepPlanner<'a> {
    scenario: &'a Scenario,
    /// Per object: data bytes and longest record span, to keep cancels before the last chunk.
    chunking: &'a [(usize, usize)],
    model: Model,
    /// Upload position of the next object never ingested.
    next_upload: usize,
    retried: Vec<JobRef>,
    /// The job the last step started, if it started one.
    last_started: Option<JobRef>,
}

/// Chunks committed before a cancel, at most.
const MAX_CHUNKS_BEFORE_CANCEL: usize = 2;

impl<'a> StepPlanner<'a> {
    fn new(scenario: &'a Scenario, chunking: &'a [(usize, usize)]) -> Self {
        Self {
            scenario,
            chunking,
            model: scenario.model(&scenario.placeholder_versions()),
            next_upload: 0,
            retried: Vec::new(),
            last_started: None,
        }
    }

    fn plan(mut self, rng: &mut Rng) -> Vec<Step> {
        let count = rng.between(3..=8);
        let mut steps: Vec<Step> = Vec::with_capacity(count);
        while steps.len() < count {
            let step = self.next_step(rng);
            let result = self.model.apply(step.op(Vec::new));
            self.last_started = match result {
                OpResult::Started(job) => Some(job),
                OpResult::AlreadyExists(_) | OpResult::Refused { .. } => None,
            };
            if let (Action::Retry(job), Some(_)) = (&step.action, self.last_started) {
                self.retried.push(*job);
            }
            steps.push(step);
        }
        steps
    }

    fn next_step(&mut self, rng: &mut Rng) -> Step {
        if let Some(refused) = self.refused_identity()
            && rng.percent(75)
        {
            let (object, mode) = refused;
            let mode = Mode {
                allow_mass_delist: true,
                ..mode
            };
            return self.ingest(rng, object, mode);
        }
        let jobs = self.model.jobs();
        let object_count = self.scenario.objects.len();
        let completed: Vec<JobRef> = jobs
            .iter()
            .filter(|j| j.status == JobStatus::Completed)
            .map(|j| j.job)
            .collect();
        let retryable: Vec<JobRef> = jobs
            .iter()
            .filter(|j| j.status != JobStatus::Completed && !self.retried.contains(&j.job))
            .map(|j| j.job)
            .collect();
        let weights = [
            // The next object in upload order.
            if self.next_upload < object_count {
                50
            } else {
                0
            },
            // An object older than the newest ingested.
            if self.next_upload >= 2 { 10 } else { 0 },
            if completed.is_empty() { 0 } else { 8 },
            if retryable.is_empty() { 0 } else { 40 },
            // The same identity again, or a retry or repair that the job's status refuses.
            if jobs.is_empty() { 0 } else { 6 },
            if jobs.is_empty() { 0 } else { 2 },
        ];
        match rng.weighted(&weights) {
            0 => {
                let object = self.scenario.upload_order[self.next_upload];
                self.next_upload += 1;
                let mode = Mode {
                    dry_run: rng.percent(12),
                    partial: rng.percent(15),
                    allow_mass_delist: rng.percent(5),
                };
                if !mode.dry_run && rng.percent(15) && !self.scenario.objects[object.0].bad_header {
                    self.cancel(rng, object, mode)
                } else {
                    self.ingest(rng, object, mode)
                }
            }
            1 => {
                let object = self.scenario.upload_order[rng.below(self.next_upload - 1)];
                let mode = Mode {
                    partial: rng.percent(30),
                    ..Mode::default()
                };
                self.ingest(rng, object, mode)
            }
            2 => {
                let job = *rng.pick(&completed);
                self.rerun(rng, Action::Repair(job))
            }
            3 => {
                let job = *rng.pick(&retryable);
                self.rerun(rng, Action::Retry(job))
            }
            4 => {
                let job = rng.pick(self.model.jobs());
                let (object, mode) = (job.object, job.mode);
                self.ingest(rng, object, mode)
            }
            _ => {
                let job = rng.pick(self.model.jobs());
                let action = match job.status {
                    JobStatus::Completed => Action::Retry(job.job),
                    JobStatus::Failed | JobStatus::Cancelled => Action::Repair(job.job),
                };
                self.rerun(rng, action)
            }
        }
    }

    /// The identity of the job the last step started, if the guard refused its delisting.
    fn refused_identity(&self) -> Option<(ObjectRef, Mode)> {
        let job = self.model.job(self.last_started?);
        job.delist_refused.map(|_| (job.object, job.mode))
    }

    fn ingest(&self, rng: &mut Rng, object: ObjectRef, mode: Mode) -> Step {
        Step {
            action: Action::Ingest { object, mode },
            execution: execution(rng),
        }
    }

    fn rerun(&self, rng: &mut Rng, action: Action) -> Step {
        Step {
            action,
            execution: execution(rng),
        }
    }

    /// Small chunks, and a cancel before the last of them: every chunk but the last is shorter
    /// than the chunk size plus twice the longest record span.
    fn cancel(&self, rng: &mut Rng, object: ObjectRef, mode: Mode) -> Step {
        let chunk_bytes = rng.between(40..=120);
        let (data_bytes, longest_span) = self.chunking[object.0];
        let chunks_at_least = (data_bytes / (chunk_bytes + 2 * longest_span)).max(1);
        let chunks = rng.between(0..=MAX_CHUNKS_BEFORE_CANCEL.min(chunks_at_least - 1));
        Step {
            action: Action::CancelAfterChunks {
                object,
                mode,
                chunks: chunks as u32,
            },
            execution: Execution {
                chunk_bytes: chunk_bytes as u64,
                ..execution(rng)
            },
        }
    }
}

fn execution(rng: &mut Rng) -> Execution {
    let chunk_bytes = if rng.percent(15) {
        // One record per chunk.
        1
    } else {
        rng.between(40..=400) as u64
    };
    let commit_order = match rng.weighted(&[40, 20, 25, 15]) {
        0 => CommitOrder::InOrder,
        1 => CommitOrder::LastFirst,
        2 => CommitOrder::Random(rng.next_u64()),
        _ => CommitOrder::Concurrent,
    };
    Execution {
        chunk_bytes,
        parallel: rng.between(1..=8) as u32,
        commit_order,
    }
}

#[cfg(test)]
mod tests;
