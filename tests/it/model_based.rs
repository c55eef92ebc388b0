//! Exact under every ordering: seeded scenarios (`model/src/scenario`) run against the real
//! pipeline, and both stores compared field by field with the reference model
//! (`model/src/model.rs`), which is written from the contract alone.
//!
//! Each scenario uploads 2–5 objects of one source, then applies its steps in order: ingests
//! (snapshot, partial, dry run, allow-mass-delist), an older object after a newer one, repairs,
//! retries, re-ingests of an identity, cancels after some chunks. Every chunk stops at a pause
//! gate (`ETL_PAUSE_GATE`) before its transaction, and the test releases the chunks in the
//! step's order: in order, last first, a seeded shuffle, or several at once. After every step,
//! Postgres and ClickHouse (raw and `FINAL`) are compared with the model: every item with every
//! field, listed or delisted and by which job; every observation; every job's counts and
//! invalid rows. A failing scenario prints its seed and the command that replays it.

use std::{
    collections::{BTreeMap, HashMap},
    ops::RangeInclusive,
    path::PathBuf,
    time::{Duration, Instant},
};

use activities::{model::object_version_id, pg::PgStore};
use catalog_model::{
    model::{ItemVersion, JobRef, Model, ObjectRef, ObjectVersion, Op, OpResult, StoredItem},
    scenario::{Action, CommitOrder, Scenario, Step},
};
use rust_decimal::{Decimal, prelude::FromPrimitive};
use serde::Deserialize;
use serde_json::Value;
use sqlx::Row;

use crate::{
    gate::{Gate, gate_dir},
    harness::TestEnv,
};

mod chaos;

/// The scenarios `make test` runs. Each was drawn once from a random seed and kept.
pub const TEST_SEEDS: [u64; 12] = [
    0x0d47_1c2e_9b83_f001,
    0x5a3e_19c0_7f21_aa02,
    0x91b7_4e08_c3d5_6203,
    0x27f0_aa91_1c4e_8b04,
    0xe4c2_5b7d_0a19_3f05,
    0x3b89_d1e4_62fa_0c06,
    0x7c15_08b3_e9a7_d407,
    0xa0de_f372_4b1c_9508,
    0x1f63_9c28_d7e0_4a09,
    0xc8a4_3e6f_b215_700a,
    0x6e2b_f8d9_0354_c10b,
    0xb351_742a_e8c6_9f0c,
];

fn replay_command(seed: u64, with_faults: bool) -> String {
    let faults = if with_faults { 1 } else { 0 };
    format!("make soak SEED={seed:#x} N=1 FAULTS={faults}")
}

/// How long one job may take here (a few dozen chunks of a few hundred bytes).
const JOB_TIMEOUT: Duration = Duration::from_secs(120);

/// Runs a scenario end to end; panics with its seed, the differences and the replay command.
pub async fn run_scenario(seed: u64) {
    run_scenario_with(seed, None).await;
}

/// The same, with `chaos` injecting faults into its ingests.
async fn run_scenario_with(seed: u64, chaos: Option<chaos::Chaos>) {
    let with_faults = chaos.is_some();
    let scenario = Scenario::generate(seed);
    let mut run = ScenarioRun::start(&scenario, chaos).await;
    let replay = replay_command(seed, with_faults);
    for (index, step) in scenario.steps.iter().enumerate() {
        let mut label = format!("step {index} ({})", describe(step));
        run.apply(step, &mut label).await;
        let differences = run.compare().await;
        if !differences.is_empty() {
            panic!(
                "{scenario}\nafter {label}, the stores differ from the model:\n  {}\n\
                 replay: {}",
                differences
                    .iter()
                    .take(40)
                    .cloned()
                    .collect::<Vec<_>>()
                    .join("\n  "),
                replay
            );
        }
    }
}

fn describe(step: &Step) -> String {
    let order = match step.execution.commit_order {
        CommitOrder::InOrder => "in order".to_owned(),
        CommitOrder::LastFirst => "last first".to_owned(),
        CommitOrder::Random(seed) => format!("shuffled {seed:#x}"),
        CommitOrder::Concurrent => "concurrently".to_owned(),
    };
    let action = match &step.action {
        Action::Ingest { object, mode } => format!("ingest o{} {mode}", object.0),
        Action::CancelAfterChunks {
            object,
            mode,
            chunks,
        } => format!("cancel o{} {mode} after {chunks} chunk(s)", object.0),
        Action::Retry(job) => format!("retry {job}"),
        Action::Repair(job) => format!("repair {job}"),
    };
    format!(
        "{action}, chunks of {} bytes, --parallel {}, committed {order}",
        step.execution.chunk_bytes, step.execution.parallel
    )
}

struct ScenarioRun {
    env: TestEnv,
    gate: PathBuf,
    source: String,
    /// `s3://bucket/key` and version of each object, by `ObjectRef`.
    objects: Vec<(String, ObjectVersion)>,
    model: Model,
    /// The real job id of each model job.
    jobs: HashMap<JobRef, String>,
    /// Faults to inject into the scenario's ingests (`make soak`, the chaos tests).
    chaos: Option<chaos::Chaos>,
}

impl ScenarioRun {
    async fn start(scenario: &Scenario, chaos: Option<chaos::Chaos>) -> Self {
        let name = format!("model_{:x}", scenario.seed & 0xffff_ffff);
        let env = TestEnv::new(&name).await;
        let gate = gate_dir(&name);
        let mut run = Self {
            env,
            gate,
            source: String::new(),
            objects: Vec::new(),
            model: Model::new(),
            jobs: HashMap::new(),
            chaos,
        };
        run.start_gated_worker();
        run.upload(scenario).await;
        run
    }

    /// A worker that holds every chunk at the gate, before its transaction.
    fn start_gated_worker(&mut self) {
        self.env.start_worker_pausing_at_with(
            "chunk-after-read",
            &[
                ("ETL_PAUSE_GATE", self.gate.to_str().unwrap()),
                ("ETL_MAX_CONCURRENT_ACTIVITIES", "16"),
            ],
        );
    }

    /// Uploads the scenario's objects and builds the model of what the stores must hold.
    async fn upload(&mut self, scenario: &Scenario) {
        let env = &self.env;
        let source = env.source_name();
        let mut objects = vec![(String::new(), placeholder()); scenario.objects.len()];
        // Oldest first: each upload is newer than the ones before (names break time ties).
        for &ObjectRef(index) in &scenario.upload_order {
            let object = &scenario.objects[index];
            let key = format!("{source}/{}", object.name);
            let meta = env.put(&key, object.csv.clone()).await;
            let modified = chrono::DateTime::parse_from_rfc3339(&meta.last_modified)
                .expect("Last-Modified")
                .timestamp_micros();
            objects[index] = (
                env.uri(&key),
                ObjectVersion {
                    modified_at_micros: modified,
                    key,
                    etag: meta.etag,
                },
            );
        }
        let versions: Vec<ObjectVersion> = objects.iter().map(|(_, v)| v.clone()).collect();
        self.model = scenario.model(&versions);
        self.source = source;
        self.objects = objects;
    }

    /// Runs the step in the pipeline and in the model, and checks both named the same job.
    /// With chaos, the label says which fault was injected.
    async fn apply(&mut self, step: &Step, label: &mut String) {
        let execution = step.execution;
        let ingest_args = |object: ObjectRef, mode: catalog_model::model::Mode, wait: bool| {
            let mut args = vec![
                "ingest".to_owned(),
                self.objects[object.0].0.clone(),
                "--source".to_owned(),
                self.source.clone(),
                "--json".to_owned(),
                "--chunk-bytes".to_owned(),
                execution.chunk_bytes.to_string(),
                "--parallel".to_owned(),
                execution.parallel.to_string(),
            ];
            for (set, flag) in [
                (wait, "--wait"),
                (mode.dry_run, "--dry-run"),
                (mode.partial, "--partial"),
                (mode.allow_mass_delist, "--allow-mass-delist"),
            ] {
                if set {
                    args.push(flag.to_owned());
                }
            }
            args
        };
        let (op, printed) = match &step.action {
            Action::Ingest { object, mode } => {
                let mut args = ingest_args(*object, *mode, true);
                let fault = self
                    .chaos
                    .as_mut()
                    .and_then(|chaos| chaos.next_fault(mode.dry_run));
                let ingest = Op::Ingest {
                    object: *object,
                    mode: *mode,
                };
                match fault {
                    Some(fault) => {
                        args.extend(chaos::QUICK_RECOVERY.iter().map(|a| (*a).to_owned()));
                        label.push_str(&format!(", {fault}"));
                        let faulted = self
                            .run_with_fault(&args, execution.commit_order, fault, label)
                            .await;
                        match faulted {
                            chaos::Faulted::ByItself(printed) => (ingest, printed),
                            chaos::Faulted::Retried { failed_job, retry } => {
                                let failed = Op::IngestFailed {
                                    object: *object,
                                    mode: *mode,
                                    committed_rows: self.committed_rows(&failed_job).await,
                                };
                                let OpResult::Started(job) = self.model.apply(failed) else {
                                    panic!("{label}: the model started no job for {failed_job}");
                                };
                                self.jobs.insert(job, failed_job);
                                (Op::Retry(job), retry)
                            }
                        }
                    }
                    None => (
                        ingest,
                        self.run_releasing(&args, execution.commit_order).await,
                    ),
                }
            }
            Action::CancelAfterChunks {
                object,
                mode,
                chunks,
            } => {
                let args = ingest_args(*object, *mode, false);
                let started = self.etlctl_json(&args);
                let job_id = started["job_id"].as_str().unwrap().to_owned();
                // `etlctl cancel` needs the job's row, which the workflow's plan creates.
                self.env
                    .wait_for(
                        "the job to be planned",
                        JOB_TIMEOUT,
                        crate::harness::JobCount {
                            sql: "SELECT count(*) FROM etl_jobs WHERE id = $1 AND planned_at IS NOT NULL",
                            job_id: &job_id,
                            at_least: 1,
                        },
                    )
                    .await;
                let summary = if started["status"] == "running" {
                    self.cancel_after(&job_id, *chunks, execution.commit_order, execution.parallel)
                        .await
                } else {
                    started
                };
                let op = if summary["status"] == "cancelled" {
                    Op::IngestPartly {
                        object: *object,
                        mode: *mode,
                        committed_rows: self.committed_rows(&job_id).await,
                    }
                } else {
                    Op::Ingest {
                        object: *object,
                        mode: *mode,
                    }
                };
                (op, summary)
            }
            Action::Retry(job) | Action::Repair(job) => {
                let verb = if matches!(step.action, Action::Retry(_)) {
                    "retry"
                } else {
                    "repair"
                };
                let real = self.jobs[job].clone();
                let args: Vec<String> = [
                    verb,
                    &real,
                    "--wait",
                    "--json",
                    "--parallel",
                    &execution.parallel.to_string(),
                ]
                .iter()
                .map(|s| (*s).to_owned())
                .collect();
                let printed = self.run_releasing(&args, execution.commit_order).await;
                let op = if verb == "retry" {
                    Op::Retry(*job)
                } else {
                    Op::Repair(*job)
                };
                (op, printed)
            }
        };
        match self.model.apply(op) {
            OpResult::Started(job) => {
                let real = printed["job_id"]
                    .as_str()
                    .unwrap_or_else(|| panic!("{label}: no job started: {printed}"))
                    .to_owned();
                assert!(
                    !self.jobs.values().any(|known| *known == real),
                    "{label}: the model started a new job, etlctl named job {real} again"
                );
                self.jobs.insert(job, real);
            }
            OpResult::AlreadyExists(job) => {
                assert_eq!(
                    printed["job_id"].as_str(),
                    Some(self.jobs[&job].as_str()),
                    "{label}: the model names the existing job {job}: {printed}"
                );
            }
            OpResult::Refused { job, status } => {
                assert!(
                    printed.get("refused").is_some(),
                    "{label}: the model refuses (job {job} is {}), etlctl printed {printed}",
                    status.as_str()
                );
            }
        }
    }

    fn etlctl_json(&self, args: &[String]) -> Value {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = self.env.etlctl(&args);
        serde_json::from_str(out.stdout.trim())
            .unwrap_or_else(|_| panic!("etlctl {args:?}: {}{}", out.stdout, out.stderr))
    }

    async fn run_releasing(&self, args: &[String], order: CommitOrder) -> Value {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        crate::gate::etlctl_releasing(&self.env, &self.gate, &args, order).await
    }

    /// Releases `chunks` chunks of the running job, cancels it, lets what was in flight finish
    /// and returns the job's summary once its workflow closed.
    async fn cancel_after(
        &self,
        job_id: &str,
        chunks: u32,
        order: CommitOrder,
        parallel: u32,
    ) -> Value {
        let mut gate = Gate::new(&self.gate, order, parallel);
        let deadline = Instant::now() + JOB_TIMEOUT;
        while gate.released < chunks as usize {
            if !gate.release_one(&self.env).await {
                assert!(
                    Instant::now() < deadline,
                    "job {job_id}: no chunk reached the gate"
                );
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        let cancel = self.env.etlctl(&["cancel", job_id, "--no-wait", "--json"]);
        assert!(
            cancel.code == 0 || cancel.stderr.contains("not running"),
            "cancel: {}{}",
            cancel.stdout,
            cancel.stderr
        );
        loop {
            gate.release_held(&self.env).await;
            let summary = crate::ingest::wait_until_ended(&self.env, job_id).await;
            if let Some(summary) = summary {
                return summary;
            }
            assert!(Instant::now() < deadline, "job {job_id} never ended");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// The row ranges of the job's committed chunks.
    async fn committed_rows(&self, job_id: &str) -> Vec<RangeInclusive<u64>> {
        let rows: Vec<(i64, i64)> = sqlx::query_as(
            "SELECT first_row, planned_rows FROM etl_chunks
             WHERE job_id = $1::uuid AND status = 'committed' AND planned_rows > 0
             ORDER BY chunk_index",
        )
        .bind(job_id)
        .fetch_all(&self.env.pg)
        .await
        .unwrap();
        rows.into_iter()
            .map(|(first, n)| first as u64..=(first + n - 1) as u64)
            .collect()
    }

    fn real(&self, job: JobRef) -> &str {
        self.jobs.get(&job).map_or("?", String::as_str)
    }

    /// Every difference between the stores and the model, in words.
    async fn compare(&self) -> Vec<String> {
        let mut differences = Vec::new();
        self.compare_jobs(&mut differences).await;
        self.compare_postgres_items(&mut differences).await;
        self.compare_clickhouse_items(&mut differences).await;
        self.compare_observations(&mut differences).await;
        differences
    }

    async fn compare_jobs(&self, differences: &mut Vec<String>) {
        let pg = PgStore::from_pool(self.env.pg.clone());
        for expected in self.model.jobs() {
            let id = self.real(expected.job);
            let summary = match pg.job_summary(id).await {
                Ok(summary) => summary,
                Err(err) => {
                    differences.push(format!("job {} ({id}): {err}", expected.job));
                    continue;
                }
            };
            let refused = summary
                .delist_refused
                .as_ref()
                .map(|r| (r["would_delist"].as_u64(), r["listed"].as_u64()));
            let found = (
                summary.status.as_str(),
                summary.rows_total,
                summary.rows_valid,
                summary.rows_invalid,
                summary.items,
                summary.items_delisted,
                summary.items_relisted,
                refused,
            );
            let wanted = (
                expected.status.as_str(),
                expected.rows_total,
                expected.rows_valid,
                expected.rows_invalid,
                expected.items,
                expected.items_delisted,
                expected.items_relisted,
                expected
                    .delist_refused
                    .map(|r| (Some(r.would_delist), Some(r.listed))),
            );
            if found != wanted {
                differences.push(format!(
                    "job {} ({id}) (status, rows, valid, invalid, items, delisted, relisted, \
                     refused): {found:?}, the model {wanted:?}",
                    expected.job
                ));
            }
            let invalid: Vec<(i64, Value)> = sqlx::query_as(
                "SELECT row_number, errors FROM invalid_item_logs WHERE job_id = $1::uuid
                 ORDER BY row_number",
            )
            .bind(id)
            .fetch_all(&self.env.pg)
            .await
            .unwrap();
            let invalid: Vec<(u64, Vec<String>)> = invalid
                .into_iter()
                .map(|(row, errors)| {
                    let mut codes: Vec<String> = errors
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(|e| e["code"].as_str().unwrap_or_default().to_owned())
                        .collect();
                    codes.sort();
                    (row as u64, codes)
                })
                .collect();
            let wanted: Vec<(u64, Vec<String>)> = expected
                .invalid_rows
                .iter()
                .map(|row| (row.row_number, row.codes.clone()))
                .collect();
            if invalid != wanted {
                differences.push(format!(
                    "job {} ({id}) invalid rows {invalid:?}, the model {wanted:?}",
                    expected.job
                ));
            }
        }
    }

    async fn compare_postgres_items(&self, differences: &mut Vec<String>) {
        let rows = sqlx::query(
            "SELECT sku, name, brand, category, description, price, currency, weight_grams,
                    availability, product_url, image_urls, attributes,
                    (extract(epoch FROM version_modified_at) * 1000000)::bigint AS modified,
                    version_key, version_etag, version_row, first_job_id::text AS first_job,
                    last_job_id::text AS last_job, delisted_at IS NULL AS listed,
                    delisted_by_job_id::text AS delisted_by,
                    relisted_by_job_id::text AS relisted_by
             FROM catalog_items WHERE source = $1 ORDER BY sku",
        )
        .bind(&self.source)
        .fetch_all(&self.env.pg)
        .await
        .unwrap();
        let mut found = BTreeMap::new();
        for row in &rows {
            let attributes: Value = row.get("attributes");
            found.insert(
                row.get::<String, _>("sku"),
                ItemFields {
                    name: row.get("name"),
                    brand: row.get("brand"),
                    category: row.get("category"),
                    description: row.get("description"),
                    price: row.get("price"),
                    currency: row.get("currency"),
                    weight_grams: row.get("weight_grams"),
                    availability: row.get("availability"),
                    product_url: row.get("product_url"),
                    image_urls: row.get("image_urls"),
                    attributes: serde_json::from_value(attributes).unwrap_or_default(),
                    version: (
                        row.get("modified"),
                        row.get("version_key"),
                        row.get("version_etag"),
                        row.get::<i64, _>("version_row") as u64,
                    ),
                    last_job: row.get("last_job"),
                    listed: row.get("listed"),
                    first_job: row.get("first_job"),
                    delisted_by: row.get("delisted_by"),
                    relisted_by: row.get("relisted_by"),
                },
            );
        }
        let wanted: BTreeMap<String, ItemFields> = self
            .model
            .items()
            .iter()
            .map(|(sku, item)| (sku.clone(), self.expected_fields(item, true)))
            .collect();
        diff_items("Postgres", &found, &wanted, differences);
    }

    fn expected_fields(&self, stored: &StoredItem, with_jobs: bool) -> ItemFields {
        let item = &stored.item;
        let ItemVersion { object, row_number } = &stored.version;
        let job = |job: Option<JobRef>| job.map(|j| self.real(j).to_owned());
        ItemFields {
            name: item.name.clone(),
            brand: item.brand.clone(),
            category: item.category.clone(),
            description: item.description.clone(),
            price: item.price,
            currency: item.currency.clone(),
            weight_grams: item.weight_grams,
            availability: item.availability.map(|a| a.as_str().to_owned()),
            product_url: item.product_url.clone(),
            image_urls: item.image_urls.clone(),
            attributes: item.attributes.clone(),
            version: (
                object.modified_at_micros,
                object.key.clone(),
                object.etag.clone(),
                *row_number,
            ),
            last_job: self.real(stored.last_job).to_owned(),
            listed: stored.listed,
            first_job: with_jobs.then(|| self.real(stored.first_job).to_owned()),
            delisted_by: if with_jobs {
                job(stored.delisted_by)
            } else {
                None
            },
            relisted_by: if with_jobs {
                job(stored.relisted_by)
            } else {
                None
            },
        }
    }

    async fn compare_clickhouse_items(&self, differences: &mut Vec<String>) {
        let wanted: BTreeMap<String, ItemFields> = self
            .model
            .items()
            .iter()
            .map(|(sku, item)| (sku.clone(), self.expected_fields(item, false)))
            .collect();
        let latest = self
            .clickhouse_items(
                "SELECT * FROM catalog_items WHERE source = ?
                 ORDER BY sku, revision DESC LIMIT 1 BY sku",
            )
            .await;
        diff_items(
            "ClickHouse (latest revision)",
            &latest,
            &wanted,
            differences,
        );
        let listed: BTreeMap<String, ItemFields> =
            wanted.into_iter().filter(|(_, item)| item.listed).collect();
        let final_rows = self
            .clickhouse_items("SELECT * FROM catalog_items FINAL WHERE source = ? ORDER BY sku")
            .await;
        diff_items("ClickHouse (FINAL)", &final_rows, &listed, differences);
    }

    async fn clickhouse_items(&self, rows: &str) -> BTreeMap<String, ItemFields> {
        let query = format!(
            "SELECT sku, name, brand, category, description, toString(price) AS price, currency,
                    weight_grams, availability, product_url, image_urls, attributes,
                    toUnixTimestamp64Micro(object_modified_at) AS modified, object_key,
                    object_etag, row_number, toString(job_id) AS job, is_deleted
             FROM ({rows})"
        );
        let rows: Vec<ChItem> = self
            .env
            .ch
            .query(&query)
            .bind(&self.source)
            .fetch_all()
            .await
            .unwrap();
        rows.into_iter()
            .map(|row| {
                (
                    row.sku,
                    ItemFields {
                        name: row.name,
                        brand: row.brand,
                        category: row.category,
                        description: row.description,
                        price: row.price.map(|p| p.parse().unwrap()),
                        currency: row.currency,
                        weight_grams: row.weight_grams.and_then(micrograms),
                        availability: row.availability,
                        product_url: row.product_url,
                        image_urls: row.image_urls,
                        attributes: serde_json::from_str(&row.attributes).unwrap_or_default(),
                        version: (
                            row.modified,
                            row.object_key,
                            row.object_etag,
                            row.row_number,
                        ),
                        last_job: row.job,
                        listed: row.is_deleted == 0,
                        first_job: None,
                        delisted_by: None,
                        relisted_by: None,
                    },
                )
            })
            .collect()
    }

    async fn compare_observations(&self, differences: &mut Vec<String>) {
        let mut wanted: Vec<ObservationFields> = self
            .model
            .observations()
            .map(|o| {
                let (uri, _) = self
                    .objects
                    .iter()
                    .find(|(_, v)| *v == o.version)
                    .expect("an observed version");
                let bucket = uri
                    .trim_start_matches("s3://")
                    .split('/')
                    .next()
                    .unwrap()
                    .to_owned();
                ObservationFields {
                    object_version: object_version_id(&bucket, &o.version.key, &o.version.etag)
                        .to_string(),
                    observed_at: o.version.modified_at_micros,
                    row_number: o.row_number,
                    sku: o.sku.clone(),
                    object_key: o.version.key.clone(),
                    price: o.price.map(six_decimals),
                    currency: o.currency.clone(),
                    availability: o.availability.clone(),
                    in_stock: u8::from(o.in_stock),
                }
            })
            .collect();
        wanted.sort();
        for table in [
            "catalog_item_observations",
            "catalog_item_observations FINAL",
        ] {
            let query = format!(
                "SELECT toString(object_version) AS object_version,
                        toUnixTimestamp64Micro(observed_at) AS observed_at, row_number, sku,
                        object_key, toString(price) AS price, currency, availability, in_stock
                 FROM {table} WHERE source = ?"
            );
            let mut found: Vec<ObservationFields> = self
                .env
                .ch
                .query(&query)
                .bind(&self.source)
                .fetch_all::<ObservationFields>()
                .await
                .unwrap()
                .into_iter()
                .map(|mut o| {
                    o.price = o.price.map(|p| six_decimals(p.parse().unwrap()));
                    o
                })
                .collect();
            found.sort();
            if found != wanted {
                let extra: Vec<&ObservationFields> = found
                    .iter()
                    .filter(|o| !wanted.contains(o))
                    .take(5)
                    .collect();
                let missing: Vec<&ObservationFields> = wanted
                    .iter()
                    .filter(|o| !found.contains(o))
                    .take(5)
                    .collect();
                differences.push(format!(
                    "{table}: {} observations, the model {}; not in the model (first 5): \
                     {extra:?}; missing (first 5): {missing:?}",
                    found.len(),
                    wanted.len()
                ));
            }
        }
    }
}

fn placeholder() -> ObjectVersion {
    ObjectVersion {
        modified_at_micros: 0,
        key: String::new(),
        etag: String::new(),
    }
}

/// A price as ClickHouse's `Decimal(18, 6)` holds it.
fn six_decimals(price: Decimal) -> String {
    let mut rounded =
        price.round_dp_with_strategy(6, rust_decimal::RoundingStrategy::MidpointAwayFromZero);
    rounded.rescale(6);
    rounded.normalize().to_string()
}

/// A Float64 weight read back as the microgram value it stands for.
fn micrograms(grams: f64) -> Option<Decimal> {
    Decimal::from_f64((grams * 1_000_000.0).round())
        .map(|micro| (micro / Decimal::from(1_000_000)).normalize())
}

/// The fields compared for one item; jobs other than the last are known to Postgres only.
#[derive(Debug, Clone, PartialEq)]
struct ItemFields {
    name: String,
    brand: Option<String>,
    category: Option<String>,
    description: Option<String>,
    price: Option<Decimal>,
    currency: String,
    weight_grams: Option<Decimal>,
    availability: Option<String>,
    product_url: String,
    image_urls: Vec<String>,
    attributes: BTreeMap<String, String>,
    /// (object time in microseconds, key, ETag, row)
    version: (i64, String, String, u64),
    last_job: String,
    listed: bool,
    first_job: Option<String>,
    delisted_by: Option<String>,
    relisted_by: Option<String>,
}

fn diff_items(
    store: &str,
    found: &BTreeMap<String, ItemFields>,
    wanted: &BTreeMap<String, ItemFields>,
    differences: &mut Vec<String>,
) {
    for (sku, expected) in wanted {
        match found.get(sku) {
            None => differences.push(format!(
                "{store}: item {sku} missing; the model {expected:?}"
            )),
            Some(item) if item != expected => differences.push(format!(
                "{store}: item {sku} is\n      {item:?}\n    the model\n      {expected:?}"
            )),
            Some(_) => {}
        }
    }
    for sku in found.keys().filter(|sku| !wanted.contains_key(*sku)) {
        differences.push(format!("{store}: item {sku} is not in the model"));
    }
}

#[derive(Debug, clickhouse::Row, Deserialize)]
struct ChItem {
    sku: String,
    name: String,
    brand: Option<String>,
    category: Option<String>,
    description: Option<String>,
    price: Option<String>,
    currency: String,
    weight_grams: Option<f64>,
    availability: Option<String>,
    product_url: String,
    image_urls: Vec<String>,
    attributes: String,
    modified: i64,
    object_key: String,
    object_etag: String,
    row_number: u64,
    job: String,
    is_deleted: u8,
}

/// One observation, as the model expects it and as ClickHouse returns it (its price as text,
/// normalised to six decimals on both sides).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, clickhouse::Row, Deserialize)]
struct ObservationFields {
    object_version: String,
    observed_at: i64,
    row_number: u64,
    sku: String,
    object_key: String,
    price: Option<String>,
    currency: String,
    availability: String,
    in_stock: u8,
}

macro_rules! scenarios {
    ($($name:ident: $index:expr),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread")]
            async fn $name() {
                run_scenario(TEST_SEEDS[$index]).await;
            }
        )*
    };
}

scenarios! {
    scenario_00: 0, scenario_01: 1, scenario_02: 2, scenario_03: 3,
    scenario_04: 4, scenario_05: 5, scenario_06: 6, scenario_07: 7,
    scenario_08: 8, scenario_09: 9, scenario_10: 10, scenario_11: 11,
}
