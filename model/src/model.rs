//! The reference model: what the stores must hold after a sequence of operations on one source.
//!
//! It follows `shared/CATALOG_CSV.md` and the team's decisions; object versions come from
//! outside (the test uploads the objects and reports their real versions). In short:
//! - A job is identified by object version and mode; asking again for an identity that has a
//!   job returns the job its first ingest started, and changes nothing. A job has at most one
//!   retry or repair: asking again returns it.
//! - A snapshot job (neither dry run nor partial) with a good header registers its version as
//!   the source's newest snapshot when it starts, if it is newer; that stays whatever the job's
//!   end. Its write mode follows: nothing if a newer snapshot is registered, `Snapshot` if its
//!   own version is, `Forward` otherwise (dry runs write nothing).
//! - Per sku, the last committed valid record wins. It is written unless the stored version is
//!   as new or newer; in `Snapshot` mode only if the item is delisted, its content differs, or
//!   the object mentions the sku more than once.
//! - Every committed valid record is observed once per (object version, row), over all jobs.
//! - A completed snapshot job whose version is the registered one, with no completed job of a
//!   newer version, delists the listed items its object does not mention, unless the guard
//!   refuses (more than 10 and more than a fifth of the listed items).

use std::collections::BTreeMap;
use std::fmt;
use std::ops::RangeInclusive;

use rust_decimal::Decimal;

/// The mass-delist guard refuses when a job would delist more than this many items...
const GUARD_MIN_ITEMS: usize = 10;
/// ...and more than one in this many of the source's listed items.
const GUARD_FRACTION_DENOMINATOR: usize = 5;

/// One version of a source's CSV object.
///
/// The field order is the contract's order of versions (derived `Ord`): last-modified time at
/// the store's full precision, then key bytes, then ETag bytes.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectVersion {
    pub modified_at_micros: i64,
    pub key: String,
    pub etag: String,
}

impl fmt::Display for ObjectVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}[{}]", self.key, self.modified_at_micros, self.etag)
    }
}

/// The version of an item or observation: an object version and a row of it. Row 0 (no data
/// record has it) is the version a delisting gives.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ItemVersion {
    pub object: ObjectVersion,
    pub row_number: u64,
}

/// Normalised availability, as the validator names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Availability {
    InStock,
    OutOfStock,
    Preorder,
    Discontinued,
    Unknown,
}

impl Availability {
    pub const ALL: [Self; 5] = [
        Self::InStock,
        Self::OutOfStock,
        Self::Preorder,
        Self::Discontinued,
        Self::Unknown,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::InStock => "in_stock",
            Self::OutOfStock => "out_of_stock",
            Self::Preorder => "preorder",
            Self::Discontinued => "discontinued",
            Self::Unknown => "unknown",
        }
    }
}

/// A valid record's values, normalised as the validator normalises them.
///
/// `PartialEq` is the contract's "same content" (plus the sku, which is the item's key anyway):
/// `Decimal` compares by value, so a price of 1.50 equals 1.5.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    pub sku: String,
    pub name: String,
    pub brand: Option<String>,
    pub category: Option<String>,
    pub description: Option<String>,
    /// Scale as written (`$1,234.50` is 1234.50).
    pub price: Option<Decimal>,
    /// Upper-case; `USD` when not given.
    pub currency: String,
    /// Exact grams rounded to 6 decimals half away from zero, trailing zeros dropped.
    pub weight_grams: Option<Decimal>,
    pub availability: Option<Availability>,
    pub product_url: String,
    pub image_urls: Vec<String>,
    /// Attribute columns with a non-empty value, keyed by the header name as written (trimmed).
    pub attributes: BTreeMap<String, String>,
}

/// One failure the validator reports for a record: the canonical field name (or `record`) and
/// the contract's code.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Failure {
    pub field: String,
    pub code: String,
}

impl Failure {
    pub fn new(field: &str, code: &str) -> Self {
        Self {
            field: field.to_owned(),
            code: code.to_owned(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidRecord {
    /// The sku field as read (NUL bytes removed, trimmed); `None` when that is empty or not
    /// UTF-8, or when the record has no field at the sku column.
    pub mentioned_sku: Option<String>,
    /// In the order the validator reports them.
    pub failures: Vec<Failure>,
}

/// One data record of an object, as the pipeline reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[expect(
    clippy::large_enum_variant,
    reason = "most records are valid: boxing would only add an allocation to each"
)]
pub enum Record {
    Valid(Item),
    Invalid(InvalidRecord),
}

impl Record {
    /// The sku this record carries, for "mentions" (valid or invalid alike).
    pub fn mentioned_sku(&self) -> Option<&str> {
        match self {
            Self::Valid(item) => Some(&item.sku),
            Self::Invalid(invalid) => invalid.mentioned_sku.as_deref(),
        }
    }
}

/// How an object is ingested. Together with the object version it is a job's identity.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Mode {
    pub dry_run: bool,
    pub partial: bool,
    pub allow_mass_delist: bool,
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let flags: Vec<&str> = [
            (self.dry_run, "dry"),
            (self.partial, "partial"),
            (self.allow_mass_delist, "mass"),
        ]
        .into_iter()
        .filter_map(|(on, name)| on.then_some(name))
        .collect();
        if flags.is_empty() {
            f.write_str("snapshot")
        } else {
            f.write_str(&flags.join("+"))
        }
    }
}

/// An object added with [`Model::add_object`], by position of addition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectRef(pub usize);

/// A job, by order of creation; the test maps these to real job ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct JobRef(pub usize);

impl fmt::Display for JobRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "j{}", self.0)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// A job that runs to its end (unless a job of the same identity exists already).
    Ingest { object: ObjectRef, mode: Mode },
    /// A job of which only the records in `committed_rows` (1-based row numbers) were
    /// committed before it was cancelled.
    IngestPartly {
        object: ObjectRef,
        mode: Mode,
        committed_rows: Vec<RangeInclusive<u64>>,
    },
    /// A job of which only the records in `committed_rows` were committed before it failed
    /// (its workflow terminated, a store refused it for good).
    IngestFailed {
        object: ObjectRef,
        mode: Mode,
        committed_rows: Vec<RangeInclusive<u64>>,
    },
    /// A new job of a failed or cancelled job's object version and mode, run to its end (not
    /// of a dry run).
    Retry(JobRef),
    /// A new job of a completed job's object version and mode, run to its end (not of a dry
    /// run).
    Repair(JobRef),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpResult {
    Started(JobRef),
    /// A job of the requested identity exists (the latest one is named); nothing changed.
    AlreadyExists(JobRef),
    /// The job's status does not allow the retry or repair; nothing changed.
    Refused {
        job: JobRef,
        status: JobStatus,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum JobStatus {
    Completed,
    Failed,
    Cancelled,
}

impl JobStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Completed => "completed",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
        }
    }
}

/// The counts of a guard refusal, as the job reports them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DelistRefusal {
    pub would_delist: u64,
    pub listed: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidRow {
    pub row_number: u64,
    /// Sorted.
    pub codes: Vec<String>,
}

/// A job's summary. Counts cover its committed records only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobSummary {
    pub job: JobRef,
    pub object: ObjectRef,
    pub version: ObjectVersion,
    pub mode: Mode,
    pub status: JobStatus,
    pub rows_total: u64,
    pub rows_valid: u64,
    pub rows_invalid: u64,
    /// Distinct skus among the valid records; `None` for dry runs.
    pub items: Option<u64>,
    /// `None` for dry runs; `Some(0)` when the job was not eligible or the guard refused.
    pub items_delisted: Option<u64>,
    /// `None` for dry runs.
    pub items_relisted: Option<u64>,
    pub delist_refused: Option<DelistRefusal>,
    /// In row order.
    pub invalid_rows: Vec<InvalidRow>,
}

/// An item of the source's catalog (Postgres `items`, ClickHouse current catalog).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredItem {
    pub item: Item,
    pub version: ItemVersion,
    pub first_job: JobRef,
    /// The last job that wrote its content (a delisting does not count).
    pub last_job: JobRef,
    pub listed: bool,
    pub delisted_by: Option<JobRef>,
    /// The job whose write listed it again after a delisting; cleared by a later write.
    pub relisted_by: Option<JobRef>,
}

/// One row of the price and availability history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observation {
    pub version: ObjectVersion,
    pub row_number: u64,
    pub sku: String,
    pub price: Option<Decimal>,
    pub currency: String,
    /// The normalised name, `""` when not given, or `delisted`.
    pub availability: String,
    pub in_stock: bool,
}

/// The availability of the observation a delisting adds.
pub const DELISTED: &str = "delisted";

/// The stores' expected state after the operations applied so far.
#[derive(Debug, Clone, Default)]
pub struct Model {
    objects: Vec<StoredObject>,
    stores: Stores,
}

#[derive(Debug, Clone)]
struct StoredObject {
    version: ObjectVersion,
    records: Vec<Record>,
    bad_header: bool,
    /// How many records (valid or invalid) carry each sku.
    mentions: BTreeMap<String, usize>,
}

/// Everything that operations change, apart from the objects they read.
#[derive(Debug, Clone, Default)]
struct Stores {
    items: BTreeMap<String, StoredItem>,
    /// Keyed by version and sku, which makes "at most once" hold by construction.
    observations: BTreeMap<(ItemVersion, String), Observation>,
    jobs: Vec<JobSummary>,
    /// The job an `Ingest` of each identity started: asking again returns it (a retry or repair
    /// of it is a job of its own, never found this way).
    started: BTreeMap<(ObjectVersion, Mode), JobRef>,
    /// A job's retry or repair: a job has one, so asking again returns it.
    successors: BTreeMap<JobRef, JobRef>,
    newest_snapshot: Option<ObjectVersion>,
}

/// What a job may do to the catalog, decided when it starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CatalogWrite {
    Nothing,
    /// The job's version is the registered snapshot: unchanged items keep their version.
    Snapshot,
    /// The job's version is newer than any registered snapshot: every item it carries moves
    /// forward.
    Forward,
}

/// How a job ends: run to its end, or cancelled after some of its chunks committed.
enum JobEnd {
    Completed,
    /// The row ranges committed before the cancel. A cancel that comes after every chunk
    /// committed still cancels the job (it never completes, so it never delists).
    Cancelled(Vec<RangeInclusive<u64>>),
    /// The same, ended failed.
    Failed(Vec<RangeInclusive<u64>>),
}

impl JobEnd {
    fn committed(&self, row_number: u64) -> bool {
        match self {
            Self::Completed => true,
            Self::Cancelled(ranges) | Self::Failed(ranges) => {
                ranges.iter().any(|range| range.contains(&row_number))
            }
        }
    }

    fn status(&self) -> JobStatus {
        match self {
            Self::Completed => JobStatus::Completed,
            Self::Cancelled(_) => JobStatus::Cancelled,
            Self::Failed(_) => JobStatus::Failed,
        }
    }
}

impl Model {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds an object version; `records` are its data records in row order. A `bad_header`
    /// object's header lacks a required column (or repeats one): its jobs fail before reading.
    ///
    /// # Panics
    /// When `version` was added already: the test must report each upload's own version.
    pub fn add_object(
        &mut self,
        version: ObjectVersion,
        records: Vec<Record>,
        bad_header: bool,
    ) -> ObjectRef {
        assert!(
            self.objects.iter().all(|o| o.version != version),
            "object version {version} added twice"
        );
        let mut mentions = BTreeMap::new();
        for sku in records.iter().filter_map(Record::mentioned_sku) {
            *mentions.entry(sku.to_owned()).or_insert(0) += 1;
        }
        self.objects.push(StoredObject {
            version,
            records,
            bad_header,
            mentions,
        });
        ObjectRef(self.objects.len() - 1)
    }

    /// Applies one operation.
    ///
    /// # Panics
    /// On an `ObjectRef` or `JobRef` that this model never handed out.
    pub fn apply(&mut self, op: Op) -> OpResult {
        match op {
            Op::Ingest { object, mode } => self.start(object, mode, JobEnd::Completed),
            Op::IngestPartly {
                object,
                mode,
                committed_rows,
            } => self.start(object, mode, JobEnd::Cancelled(committed_rows)),
            Op::IngestFailed {
                object,
                mode,
                committed_rows,
            } => self.start(object, mode, JobEnd::Failed(committed_rows)),
            Op::Retry(job) => self.rerun(job, |status| status != JobStatus::Completed),
            Op::Repair(job) => self.rerun(job, |status| status == JobStatus::Completed),
        }
    }

    /// Items by sku.
    pub fn items(&self) -> &BTreeMap<String, StoredItem> {
        &self.stores.items
    }

    /// Every observation once, ordered by version, row and sku.
    pub fn observations(&self) -> impl Iterator<Item = &Observation> {
        self.stores.observations.values()
    }

    pub fn jobs(&self) -> &[JobSummary] {
        &self.stores.jobs
    }

    pub fn job(&self, job: JobRef) -> &JobSummary {
        &self.stores.jobs[job.0]
    }

    /// The source's newest snapshot version registered so far.
    pub fn newest_snapshot(&self) -> Option<&ObjectVersion> {
        self.stores.newest_snapshot.as_ref()
    }

    fn start(&mut self, object: ObjectRef, mode: Mode, end: JobEnd) -> OpResult {
        let identity = (self.objects[object.0].version.clone(), mode);
        if let Some(&job) = self.stores.started.get(&identity) {
            return OpResult::AlreadyExists(job);
        }
        let job = self.stores.run(object, &self.objects[object.0], mode, &end);
        self.stores.started.insert(identity, job);
        OpResult::Started(job)
    }

    fn rerun(&mut self, job: JobRef, allowed: impl Fn(JobStatus) -> bool) -> OpResult {
        let JobSummary {
            object,
            mode,
            status,
            ..
        } = *self
            .stores
            .jobs
            .get(job.0)
            .unwrap_or_else(|| panic!("unknown job {job}"));
        // A dry run is run again as a new dry run, never retried or repaired.
        if mode.dry_run || !allowed(status) {
            return OpResult::Refused { job, status };
        }
        if let Some(&successor) = self.stores.successors.get(&job) {
            return OpResult::AlreadyExists(successor);
        }
        let successor = self
            .stores
            .run(object, &self.objects[object.0], mode, &JobEnd::Completed);
        self.stores.successors.insert(job, successor);
        OpResult::Started(successor)
    }
}

impl Stores {
    /// Runs a new job to `end`.
    fn run(
        &mut self,
        object_ref: ObjectRef,
        object: &StoredObject,
        mode: Mode,
        end: &JobEnd,
    ) -> JobRef {
        let job = JobRef(self.jobs.len());
        let version = &object.version;
        let mut summary = JobSummary {
            job,
            object: object_ref,
            version: version.clone(),
            mode,
            status: end.status(),
            rows_total: 0,
            rows_valid: 0,
            rows_invalid: 0,
            items: None,
            items_delisted: None,
            items_relisted: None,
            delist_refused: None,
            invalid_rows: Vec::new(),
        };
        if !mode.dry_run {
            summary.items = Some(0);
            summary.items_delisted = Some(0);
            summary.items_relisted = Some(0);
        }
        if object.bad_header {
            summary.status = JobStatus::Failed;
            self.jobs.push(summary);
            return job;
        }

        let is_snapshot = !mode.dry_run && !mode.partial;
        if is_snapshot
            && self
                .newest_snapshot
                .as_ref()
                .is_none_or(|newest| version > newest)
        {
            self.newest_snapshot = Some(version.clone());
        }
        let write = self.write_mode(version, mode);

        // The winning (last) valid record of each sku among the committed ones.
        let mut winners: BTreeMap<&str, (u64, &Item)> = BTreeMap::new();
        for (row_number, record) in (1u64..).zip(&object.records) {
            if !end.committed(row_number) {
                continue;
            }
            summary.rows_total += 1;
            match record {
                Record::Valid(item) => {
                    summary.rows_valid += 1;
                    winners.insert(&item.sku, (row_number, item));
                    if !mode.dry_run {
                        self.observe_record(version, row_number, item);
                    }
                }
                Record::Invalid(invalid) => {
                    summary.rows_invalid += 1;
                    let mut codes: Vec<String> =
                        invalid.failures.iter().map(|f| f.code.clone()).collect();
                    codes.sort();
                    summary.invalid_rows.push(InvalidRow { row_number, codes });
                }
            }
        }

        if !mode.dry_run {
            summary.items = Some(winners.len() as u64);
            let mut relisted = 0;
            for (sku, (row_number, item)) in winners {
                let candidate = ItemVersion {
                    object: version.clone(),
                    row_number,
                };
                let mentioned_more_than_once = object.mentions.get(sku).is_some_and(|&n| n > 1);
                if self.write_item(write, job, candidate, item, mentioned_more_than_once) {
                    relisted += 1;
                }
            }
            summary.items_relisted = Some(relisted);
        }

        if is_snapshot && summary.status == JobStatus::Completed && self.may_delist(version) {
            let listed = self.items.values().filter(|stored| stored.listed).count();
            let candidates: Vec<String> = self
                .items
                .iter()
                .filter(|(sku, stored)| {
                    stored.listed
                        && stored.version.object <= *version
                        && !object.mentions.contains_key(*sku)
                })
                .map(|(sku, _)| sku.clone())
                .collect();
            let would_delist = candidates.len();
            if would_delist > GUARD_MIN_ITEMS
                && would_delist * GUARD_FRACTION_DENOMINATOR > listed
                && !mode.allow_mass_delist
            {
                summary.delist_refused = Some(DelistRefusal {
                    would_delist: would_delist as u64,
                    listed: listed as u64,
                });
            } else {
                for sku in &candidates {
                    self.delist(sku, version, job);
                }
                summary.items_delisted = Some(would_delist as u64);
            }
        }

        self.jobs.push(summary);
        job
    }

    fn write_mode(&self, version: &ObjectVersion, mode: Mode) -> CatalogWrite {
        if mode.dry_run {
            return CatalogWrite::Nothing;
        }
        match &self.newest_snapshot {
            Some(newest) if newest > version => CatalogWrite::Nothing,
            Some(newest) if newest == version => CatalogWrite::Snapshot,
            _ => CatalogWrite::Forward,
        }
    }

    /// Writes the item if the rules allow; returns whether the write listed it again.
    fn write_item(
        &mut self,
        write: CatalogWrite,
        job: JobRef,
        candidate: ItemVersion,
        item: &Item,
        mentioned_more_than_once: bool,
    ) -> bool {
        let stored = self.items.get(&item.sku);
        let should_write = match (write, stored) {
            (CatalogWrite::Nothing, _) => false,
            (_, None) => true,
            // Older never overwrites newer, and a re-run never rewrites what it wrote.
            (_, Some(stored)) if stored.version >= candidate => false,
            (CatalogWrite::Forward, _) => true,
            (CatalogWrite::Snapshot, Some(stored)) => {
                !stored.listed || stored.item != *item || mentioned_more_than_once
            }
        };
        if !should_write {
            return false;
        }
        let was_delisted = stored.is_some_and(|stored| !stored.listed);
        let first_job = stored.map_or(job, |stored| stored.first_job);
        self.items.insert(
            item.sku.clone(),
            StoredItem {
                item: item.clone(),
                version: candidate,
                first_job,
                last_job: job,
                listed: true,
                delisted_by: None,
                relisted_by: was_delisted.then_some(job),
            },
        );
        was_delisted
    }

    /// Whether a completed snapshot job of `version` is the newest of its source: registered as
    /// the snapshot, and no completed job (partial ones too) has ingested a newer object.
    fn may_delist(&self, version: &ObjectVersion) -> bool {
        self.newest_snapshot.as_ref() == Some(version)
            && !self.jobs.iter().any(|job| {
                job.status == JobStatus::Completed && !job.mode.dry_run && job.version > *version
            })
    }

    fn delist(&mut self, sku: &str, version: &ObjectVersion, job: JobRef) {
        let stored = self
            .items
            .get_mut(sku)
            .expect("candidates are stored items");
        stored.listed = false;
        stored.delisted_by = Some(job);
        stored.relisted_by = None;
        stored.version = ItemVersion {
            object: version.clone(),
            row_number: 0,
        };
        let observation = Observation {
            version: version.clone(),
            row_number: 0,
            sku: sku.to_owned(),
            price: stored.item.price,
            currency: stored.item.currency.clone(),
            availability: DELISTED.to_owned(),
            in_stock: false,
        };
        self.observe(observation);
    }

    fn observe_record(&mut self, version: &ObjectVersion, row_number: u64, item: &Item) {
        self.observe(Observation {
            version: version.clone(),
            row_number,
            sku: item.sku.clone(),
            price: item.price,
            currency: item.currency.clone(),
            availability: item
                .availability
                .map_or("", Availability::as_str)
                .to_owned(),
            in_stock: item.availability == Some(Availability::InStock),
        });
    }

    fn observe(&mut self, observation: Observation) {
        let key = (
            ItemVersion {
                object: observation.version.clone(),
                row_number: observation.row_number,
            },
            observation.sku.clone(),
        );
        self.observations.entry(key).or_insert(observation);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn version(day: i64) -> ObjectVersion {
        ObjectVersion {
            modified_at_micros: day * 86_400_000_000,
            key: format!("catalog/shop/day-{day}.csv"),
            etag: format!("\"etag-{day}\""),
        }
    }

    fn price(text: &str) -> Decimal {
        text.parse().expect("test decimal")
    }

    fn item(sku: &str, price_text: &str) -> Item {
        Item {
            sku: sku.to_owned(),
            name: format!("Product {sku}"),
            brand: None,
            category: None,
            description: None,
            price: Some(price(price_text)),
            currency: "USD".to_owned(),
            weight_grams: None,
            availability: Some(Availability::InStock),
            product_url: format!("https://shop.example.com/p/{sku}"),
            image_urls: Vec::new(),
            attributes: BTreeMap::new(),
        }
    }

    fn valid(sku: &str, price_text: &str) -> Record {
        Record::Valid(item(sku, price_text))
    }

    fn invalid(sku: Option<&str>, code: &str) -> Record {
        Record::Invalid(InvalidRecord {
            mentioned_sku: sku.map(str::to_owned),
            failures: vec![Failure::new("price", code)],
        })
    }

    /// Valid records `SKU-0`..`SKU-{n-1}` at price 10.
    fn catalog_of(n: usize) -> Vec<Record> {
        (0..n).map(|i| valid(&format!("SKU-{i}"), "10")).collect()
    }

    const SNAPSHOT: Mode = Mode {
        dry_run: false,
        partial: false,
        allow_mass_delist: false,
    };
    const PARTIAL: Mode = Mode {
        partial: true,
        ..SNAPSHOT
    };
    const DRY_RUN: Mode = Mode {
        dry_run: true,
        ..SNAPSHOT
    };
    const MASS: Mode = Mode {
        allow_mass_delist: true,
        ..SNAPSHOT
    };

    fn ingest(model: &mut Model, object: ObjectRef, mode: Mode) -> JobRef {
        match model.apply(Op::Ingest { object, mode }) {
            OpResult::Started(job) => job,
            other => panic!("expected a new job, got {other:?}"),
        }
    }

    fn stored<'a>(model: &'a Model, sku: &str) -> &'a StoredItem {
        &model.items()[sku]
    }

    fn at(day: i64, row_number: u64) -> ItemVersion {
        ItemVersion {
            object: version(day),
            row_number,
        }
    }

    fn observation_count(model: &Model) -> usize {
        model.observations().count()
    }

    #[test]
    fn versions_order_by_time_then_key_then_etag() {
        let base = ObjectVersion {
            modified_at_micros: 5,
            key: "b".into(),
            etag: "b".into(),
        };
        let earlier = ObjectVersion {
            modified_at_micros: 4,
            key: "z".into(),
            etag: "z".into(),
        };
        let smaller_key = ObjectVersion {
            key: "a".into(),
            etag: "z".into(),
            ..base.clone()
        };
        let smaller_etag = ObjectVersion {
            etag: "a".into(),
            ..base.clone()
        };
        assert!(earlier < smaller_key && smaller_key < smaller_etag && smaller_etag < base);
        assert!(at(1, 99) < at(2, 0));
    }

    #[test]
    fn sku_mentioned_twice_is_written_with_its_last_row_whatever_the_content() {
        let mut model = Model::new();
        let day1 = model.add_object(version(1), vec![valid("X", "5.00")], false);
        let day2 = model.add_object(
            version(2),
            vec![valid("X", "7.00"), valid("Y", "1"), valid("X", "5.00")],
            false,
        );
        ingest(&mut model, day1, SNAPSHOT);
        let job2 = ingest(&mut model, day2, SNAPSHOT);
        let x = stored(&model, "X");
        assert_eq!(x.item.price, Some(price("5.00")));
        assert_eq!(x.version, at(2, 3));
        assert_eq!(x.last_job, job2);
        assert_eq!(model.job(job2).items, Some(2));
        assert_eq!(model.job(job2).rows_valid, 3);
        // Both rows of X are history.
        assert_eq!(observation_count(&model), 4);
    }

    #[test]
    fn repair_never_rewrites_what_its_object_version_wrote() {
        let mut model = Model::new();
        let day1 = model.add_object(version(1), vec![valid("X", "1"), valid("X", "1")], false);
        let job1 = ingest(&mut model, day1, SNAPSHOT);
        let repair = model.apply(Op::Repair(job1));
        let OpResult::Started(repair) = repair else {
            panic!("repair refused: {repair:?}");
        };
        let x = stored(&model, "X");
        assert_eq!((x.version.clone(), x.last_job), (at(1, 2), job1));
        assert_eq!(model.job(repair).items_relisted, Some(0));
    }

    #[test]
    fn unchanged_item_mentioned_once_keeps_its_version_and_last_job() {
        let mut model = Model::new();
        let day1 = model.add_object(version(1), vec![valid("A", "1"), valid("B", "2")], false);
        let day2 = model.add_object(version(2), vec![valid("B", "3"), valid("A", "1")], false);
        let job1 = ingest(&mut model, day1, SNAPSHOT);
        let job2 = ingest(&mut model, day2, SNAPSHOT);
        let a = stored(&model, "A");
        assert_eq!((a.version.clone(), a.last_job), (at(1, 1), job1));
        let b = stored(&model, "B");
        assert_eq!((b.version.clone(), b.last_job), (at(2, 1), job2));
        assert_eq!((a.first_job, b.first_job), (job1, job1));
        // Unwritten or not, every valid record is an observation.
        assert_eq!(observation_count(&model), 4);
    }

    #[test]
    fn equal_prices_of_another_scale_are_unchanged_in_a_snapshot_but_move_forward() {
        let mut model = Model::new();
        let day1 = model.add_object(version(1), vec![valid("A", "1.5")], false);
        let day2 = model.add_object(version(2), vec![valid("A", "1.50")], false);
        let day3 = model.add_object(version(3), vec![valid("A", "1.50")], false);
        ingest(&mut model, day1, SNAPSHOT);
        ingest(&mut model, day2, SNAPSHOT);
        assert_eq!(stored(&model, "A").version, at(1, 1));
        assert_eq!(stored(&model, "A").item.price.map(|p| p.scale()), Some(1));
        // Partial: the registered snapshot (day 2) is older, so day 3 writes forward.
        ingest(&mut model, day3, PARTIAL);
        assert_eq!(stored(&model, "A").version, at(3, 1));
        assert_eq!(stored(&model, "A").item.price.map(|p| p.scale()), Some(2));
    }

    #[test]
    fn older_object_after_a_newer_snapshot_writes_nothing_but_observes() {
        let mut model = Model::new();
        let day1 = model.add_object(
            version(1),
            vec![
                valid("A", "1"),
                valid("OLD", "9"),
                invalid(Some("C"), "price_invalid"),
            ],
            false,
        );
        let day2 = model.add_object(version(2), vec![valid("A", "2")], false);
        ingest(&mut model, day2, SNAPSHOT);
        let old = ingest(&mut model, day1, SNAPSHOT);
        assert_eq!(model.newest_snapshot(), Some(&version(2)));
        assert_eq!(stored(&model, "A").version, at(2, 1));
        assert!(!model.items().contains_key("OLD"), "not even new items");
        let summary = model.job(old);
        assert_eq!(summary.status, JobStatus::Completed);
        assert_eq!((summary.items, summary.items_delisted), (Some(2), Some(0)));
        assert_eq!(observation_count(&model), 3);
        assert!(
            model
                .observations()
                .any(|o| o.sku == "OLD" && o.version == version(1))
        );
    }

    #[test]
    fn partial_newer_object_moves_even_unchanged_items_forward_and_delists_nothing() {
        let mut model = Model::new();
        let day1 = model.add_object(version(1), vec![valid("A", "1"), valid("B", "2")], false);
        let day2 = model.add_object(version(2), vec![valid("A", "1")], false);
        ingest(&mut model, day1, SNAPSHOT);
        let partial = ingest(&mut model, day2, PARTIAL);
        assert_eq!(
            model.newest_snapshot(),
            Some(&version(1)),
            "never registers"
        );
        let a = stored(&model, "A");
        assert_eq!((a.version.clone(), a.last_job), (at(2, 1), partial));
        assert!(stored(&model, "B").listed);
        assert_eq!(model.job(partial).items_delisted, Some(0));
    }

    #[test]
    fn completed_partial_of_a_newer_object_makes_an_older_snapshot_ineligible() {
        let mut model = Model::new();
        let day1 = model.add_object(version(1), vec![valid("A", "1")], false);
        let day2 = model.add_object(version(2), vec![valid("B", "1")], false);
        let day3 = model.add_object(version(3), vec![valid("C", "1")], false);
        ingest(&mut model, day1, SNAPSHOT);
        ingest(&mut model, day3, PARTIAL);
        let day2_job = ingest(&mut model, day2, SNAPSHOT);
        assert_eq!(model.newest_snapshot(), Some(&version(2)));
        assert!(stored(&model, "A").listed, "day 3 was ingested already");
        assert_eq!(model.job(day2_job).items_delisted, Some(0));
        assert_eq!(stored(&model, "C").version, at(3, 1));
        assert_eq!(
            stored(&model, "B").version,
            at(2, 1),
            "new items are written"
        );
    }

    #[test]
    fn snapshot_delists_what_it_does_not_mention_and_a_later_snapshot_relists_it() {
        let mut model = Model::new();
        let day1 = model.add_object(version(1), vec![valid("A", "1"), valid("B", "2")], false);
        let day2 = model.add_object(version(2), vec![valid("A", "1")], false);
        let day3 = model.add_object(version(3), vec![valid("A", "1"), valid("B", "2")], false);
        let job1 = ingest(&mut model, day1, SNAPSHOT);
        let job2 = ingest(&mut model, day2, SNAPSHOT);
        let b = stored(&model, "B");
        assert!(!b.listed);
        assert_eq!(b.delisted_by, Some(job2));
        assert_eq!(b.version, at(2, 0));
        assert_eq!(b.last_job, job1, "a delisting is not a content write");
        assert_eq!(model.job(job2).items_delisted, Some(1));
        let delisted: Vec<&Observation> = model
            .observations()
            .filter(|o| o.availability == DELISTED)
            .collect();
        assert_eq!(delisted.len(), 1);
        assert_eq!(
            (
                delisted[0].row_number,
                delisted[0].price,
                delisted[0].in_stock
            ),
            (0, Some(price("2")), false)
        );

        let job3 = ingest(&mut model, day3, SNAPSHOT);
        let b = stored(&model, "B");
        assert!(b.listed);
        assert_eq!(
            (b.delisted_by, b.relisted_by, b.last_job, b.first_job),
            (None, Some(job3), job3, job1)
        );
        assert_eq!(b.version, at(3, 2));
        assert_eq!(model.job(job3).items_relisted, Some(1));
        assert_eq!(stored(&model, "A").version, at(1, 1), "unchanged A stays");
    }

    #[test]
    fn a_later_write_clears_relisted_by() {
        let mut model = Model::new();
        let day1 = model.add_object(version(1), vec![valid("A", "1"), valid("B", "1")], false);
        let day2 = model.add_object(version(2), vec![valid("A", "1")], false);
        let day3 = model.add_object(version(3), vec![valid("A", "1"), valid("B", "1")], false);
        let day4 = model.add_object(version(4), vec![valid("A", "1"), valid("B", "2")], false);
        for object in [day1, day2, day3] {
            ingest(&mut model, object, SNAPSHOT);
        }
        let job4 = ingest(&mut model, day4, SNAPSHOT);
        let b = stored(&model, "B");
        assert_eq!((b.relisted_by, b.last_job), (None, job4));
        assert_eq!(model.job(job4).items_relisted, Some(0));
    }

    #[test]
    fn guard_refuses_a_mass_delist_until_a_job_allows_it() {
        let mut model = Model::new();
        let day1 = model.add_object(version(1), catalog_of(20), false);
        let day2 = model.add_object(version(2), catalog_of(5), false);
        ingest(&mut model, day1, SNAPSHOT);
        let refused = ingest(&mut model, day2, SNAPSHOT);
        let summary = model.job(refused);
        assert_eq!(summary.status, JobStatus::Completed);
        assert_eq!(
            summary.delist_refused,
            Some(DelistRefusal {
                would_delist: 15,
                listed: 20
            })
        );
        assert_eq!(summary.items_delisted, Some(0));
        assert!(model.items().values().all(|stored| stored.listed));

        // The same request again is the same job; lifting the guard is a new identity.
        assert_eq!(
            model.apply(Op::Ingest {
                object: day2,
                mode: SNAPSHOT
            }),
            OpResult::AlreadyExists(refused)
        );
        let allowed = ingest(&mut model, day2, MASS);
        assert_eq!(model.job(allowed).items_delisted, Some(15));
        assert_eq!(model.job(allowed).delist_refused, None);
        assert_eq!(
            model
                .items()
                .values()
                .filter(|stored| stored.listed)
                .count(),
            5
        );
        // The first job of day 2 observed its rows; the second adds only the delistings.
        assert_eq!(observation_count(&model), 20 + 5 + 15);
    }

    #[test]
    fn guard_needs_more_than_ten_items_and_more_than_a_fifth() {
        let cases = [
            // (listed before, mentioned again, refused)
            // 10 candidates: not more than ten.
            (10, 0, false),
            (11, 0, true),
            // 11 of 55 listed (NEW included) is exactly a fifth.
            (54, 43, false),
            (53, 42, true),
        ];
        for (listed, kept, refused) in cases {
            let mut model = Model::new();
            let day1 = model.add_object(version(1), catalog_of(listed), false);
            let mut kept_records = catalog_of(kept);
            kept_records.push(valid("NEW", "1"));
            let day2 = model.add_object(version(2), kept_records, false);
            ingest(&mut model, day1, SNAPSHOT);
            let job = ingest(&mut model, day2, SNAPSHOT);
            let summary = model.job(job);
            assert_eq!(summary.delist_refused.is_some(), refused, "{listed}/{kept}");
            // `listed` counts the items just written too.
            if let Some(refusal) = summary.delist_refused {
                assert_eq!(refusal.listed, listed as u64 + 1);
            }
        }
    }

    #[test]
    fn repair_delists_nothing_twice_and_observes_nothing_twice() {
        let mut model = Model::new();
        let day1 = model.add_object(version(1), vec![valid("A", "1"), valid("B", "1")], false);
        let day2 = model.add_object(version(2), vec![valid("A", "2")], false);
        ingest(&mut model, day1, SNAPSHOT);
        let job2 = ingest(&mut model, day2, SNAPSHOT);
        let items_before = model.items().clone();
        let observations_before = observation_count(&model);
        let OpResult::Started(repair) = model.apply(Op::Repair(job2)) else {
            panic!("repair of a completed job runs");
        };
        let summary = model.job(repair);
        assert_eq!(
            (
                summary.items_delisted,
                summary.items_relisted,
                summary.items
            ),
            (Some(0), Some(0), Some(1))
        );
        assert_eq!(model.items(), &items_before);
        assert_eq!(observation_count(&model), observations_before);
        assert_eq!(stored(&model, "B").delisted_by, Some(job2));
    }

    #[test]
    fn invalid_row_mentioning_a_sku_keeps_it_listed() {
        let mut model = Model::new();
        let day1 = model.add_object(version(1), vec![valid("A", "1"), valid("B", "1")], false);
        let day2 = model.add_object(
            version(2),
            vec![valid("A", "1"), invalid(Some("B"), "price_invalid")],
            false,
        );
        ingest(&mut model, day1, SNAPSHOT);
        let job2 = ingest(&mut model, day2, SNAPSHOT);
        let b = stored(&model, "B");
        assert!(b.listed);
        assert_eq!(b.version, at(1, 2));
        let summary = model.job(job2);
        assert_eq!(summary.items_delisted, Some(0));
        assert_eq!(
            summary.invalid_rows,
            [InvalidRow {
                row_number: 2,
                codes: vec!["price_invalid".into()]
            }]
        );
    }

    #[test]
    fn invalid_row_mentioning_a_sku_counts_as_a_second_mention() {
        let mut model = Model::new();
        let day1 = model.add_object(version(1), vec![valid("A", "1")], false);
        let day2 = model.add_object(
            version(2),
            vec![invalid(Some("A"), "price_invalid"), valid("A", "1")],
            false,
        );
        ingest(&mut model, day1, SNAPSHOT);
        let job2 = ingest(&mut model, day2, SNAPSHOT);
        let a = stored(&model, "A");
        assert_eq!((a.version.clone(), a.last_job), (at(2, 2), job2));
    }

    #[test]
    fn dry_run_only_counts() {
        let mut model = Model::new();
        let day1 = model.add_object(
            version(1),
            vec![
                valid("A", "1"),
                invalid(None, "sku_missing"),
                valid("A", "2"),
            ],
            false,
        );
        let dry = ingest(&mut model, day1, DRY_RUN);
        assert!(model.items().is_empty());
        assert_eq!(observation_count(&model), 0);
        assert_eq!(model.newest_snapshot(), None);
        let summary = model.job(dry);
        assert_eq!(
            (summary.rows_total, summary.rows_valid, summary.rows_invalid),
            (3, 2, 1)
        );
        assert_eq!(
            (
                summary.items,
                summary.items_delisted,
                summary.items_relisted
            ),
            (None, None, None)
        );
        assert_eq!(summary.invalid_rows[0].row_number, 2);
        // A real run of the same object is another identity.
        let real = ingest(&mut model, day1, SNAPSHOT);
        assert_eq!(model.job(real).items, Some(1));
        assert_eq!(stored(&model, "A").version, at(1, 3));
    }

    #[test]
    fn cancelled_job_keeps_its_committed_rows_and_its_retry_completes_the_rest() {
        let mut model = Model::new();
        let day1 = model.add_object(version(1), catalog_of(3), false);
        let day2 = model.add_object(
            version(2),
            vec![
                valid("SKU-0", "11"),
                valid("SKU-1", "12"),
                valid("SKU-0", "13"),
                valid("NEW", "1"),
            ],
            false,
        );
        ingest(&mut model, day1, SNAPSHOT);
        let OpResult::Started(cancelled) = model.apply(Op::IngestPartly {
            object: day2,
            mode: SNAPSHOT,
            committed_rows: vec![1..=2],
        }) else {
            panic!("a new identity starts a job");
        };
        let summary = model.job(cancelled);
        assert_eq!(summary.status, JobStatus::Cancelled);
        assert_eq!(
            (summary.rows_total, summary.items, summary.items_delisted),
            (2, Some(2), Some(0))
        );
        assert_eq!(
            model.newest_snapshot(),
            Some(&version(2)),
            "registered at start"
        );
        assert_eq!(stored(&model, "SKU-0").version, at(2, 1));
        assert!(stored(&model, "SKU-2").listed);
        assert_eq!(observation_count(&model), 3 + 2);

        assert_eq!(
            model.apply(Op::Repair(cancelled)),
            OpResult::Refused {
                job: cancelled,
                status: JobStatus::Cancelled
            }
        );
        let OpResult::Started(retry) = model.apply(Op::Retry(cancelled)) else {
            panic!("a cancelled job can be retried");
        };
        let summary = model.job(retry);
        assert_eq!(summary.status, JobStatus::Completed);
        assert_eq!((summary.rows_total, summary.items), (4, Some(3)));
        assert_eq!(summary.items_delisted, Some(1));
        assert_eq!(stored(&model, "SKU-0").version, at(2, 3));
        assert_eq!(stored(&model, "SKU-1").last_job, cancelled);
        assert!(!stored(&model, "SKU-2").listed);
        assert_eq!(observation_count(&model), 3 + 4 + 1);
        assert_eq!(
            model.apply(Op::Ingest {
                object: day2,
                mode: SNAPSHOT
            }),
            OpResult::AlreadyExists(cancelled),
            "an ingest names the job an ingest of the identity started, not its retry"
        );
        assert_eq!(
            model.apply(Op::Retry(cancelled)),
            OpResult::AlreadyExists(retry),
            "a job has one retry"
        );
    }

    #[test]
    fn cancel_after_every_chunk_committed_still_cancels_and_delists_nothing() {
        let mut model = Model::new();
        let day1 = model.add_object(version(1), vec![valid("A", "1"), valid("B", "1")], false);
        let day2 = model.add_object(version(2), vec![valid("A", "1")], false);
        ingest(&mut model, day1, SNAPSHOT);
        let OpResult::Started(cancelled) = model.apply(Op::IngestPartly {
            object: day2,
            mode: SNAPSHOT,
            committed_rows: vec![1..=1],
        }) else {
            panic!("a new identity starts a job");
        };
        let summary = model.job(cancelled);
        assert_eq!(summary.status, JobStatus::Cancelled);
        assert_eq!((summary.rows_total, summary.items_delisted), (1, Some(0)));
        assert!(stored(&model, "B").listed);
    }

    #[test]
    fn registered_snapshot_of_a_cancelled_job_blocks_older_writes() {
        let mut model = Model::new();
        let day1 = model.add_object(version(1), vec![valid("A", "1")], false);
        let day2 = model.add_object(version(2), vec![valid("B", "1")], false);
        model.apply(Op::IngestPartly {
            object: day2,
            mode: SNAPSHOT,
            committed_rows: Vec::new(),
        });
        ingest(&mut model, day1, SNAPSHOT);
        assert!(model.items().is_empty());
        assert_eq!(observation_count(&model), 1);
    }

    #[test]
    fn bad_header_fails_and_neither_registers_nor_writes() {
        let mut model = Model::new();
        let day1 = model.add_object(version(1), vec![valid("A", "1")], true);
        let failed = ingest(&mut model, day1, SNAPSHOT);
        let summary = model.job(failed);
        assert_eq!(summary.status.as_str(), "failed");
        assert_eq!((summary.rows_total, summary.items), (0, Some(0)));
        assert_eq!(model.newest_snapshot(), None);
        assert!(model.items().is_empty());
        assert_eq!(
            model.apply(Op::Repair(failed)),
            OpResult::Refused {
                job: failed,
                status: JobStatus::Failed
            }
        );
        assert_eq!(model.apply(Op::Retry(failed)), OpResult::Started(JobRef(1)));
        assert_eq!(model.job(JobRef(1)).status, JobStatus::Failed);
    }
}
