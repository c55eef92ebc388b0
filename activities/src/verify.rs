//! Verification: the source's current catalog compared between Postgres and ClickHouse (the
//! workflow's reconcile and `etlctl reconcile`), and `etlctl reconcile`'s recount of a job from
//! the live object and both stores, independently of what the job recorded while it ran.

use std::{
    collections::{HashMap, HashSet},
    hash::{DefaultHasher, Hash, Hasher},
};

use serde::{Deserialize, Serialize};

use crate::{
    EtlActivities,
    ch::ChStore,
    chunk::{parse_chunk, parse_header},
    error::EtlError,
    model::{CatalogCheck, CatalogSide, DEFAULT_CHUNK_BYTES, object_version_id},
    pg::{CatalogRead, PgStore},
    planner::ChunkPlanner,
};

/// Counts of one side of the comparison; `None` where that side has no such count.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    pub rows_total: Option<u64>,
    pub rows_valid: Option<u64>,
    pub rows_invalid: Option<u64>,
    pub items: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verification {
    pub job_id: String,
    pub status: String,
    /// The ETag the job ingested and the one the object has now.
    pub etag: String,
    pub current_etag: Option<String>,
    /// Recounted from the object (`None` when it changed or is gone).
    pub object: Counts,
    /// The job's chunk ledger.
    pub ledger: Counts,
    /// Postgres: logged invalid rows, and the object's items present in the catalog.
    pub postgres: Counts,
    /// ClickHouse: observations of the object version (= valid rows) and their items.
    pub clickhouse: Counts,
    /// Invalid-row logs of the job deleted by retention (not a mismatch).
    pub invalid_pruned: u64,
    /// The source's current catalog in both stores; `None` for a dry run, or while another
    /// job of the source has changes in flight (`catalog_note` says which).
    pub catalog: Option<CatalogCheck>,
    pub catalog_note: Option<String>,
    /// Every difference, in words; empty when all counts agree.
    pub deltas: Vec<String>,
    pub ok: bool,
}

/// Compares `source`'s catalog between the stores, inside each store: listed and delisted
/// counts and the checksum of every item's digest (every stored field, the listing and the
/// version). With `recompute` (`etlctl reconcile`), each store computes every digest again from
/// its fields and counts the items whose fields no longer match their recorded digest (changed
/// behind the pipeline's back, so that store is the one that is wrong), and Postgres' kept sums
/// are checked against its items; without (a job's own check), Postgres' side is the sums its
/// triggers keep, and ClickHouse sums its recorded digests. Where the sums disagree with
/// ClickHouse, Postgres' items are scanned to tell a difference between the stores from sums
/// that no longer match the items. Where the checksums differ, buckets of items narrow the
/// difference down to the items themselves. Waits (a retryable `NotYet`) while another running
/// job of the source has changes in flight.
pub async fn compare_catalog(
    pg: &PgStore,
    ch: &ChStore,
    source: &str,
    job_id: &str,
    recompute: bool,
) -> Result<CatalogCheck, EtlError> {
    let busy = |jobs: Vec<String>| {
        EtlError::NotYet(format!(
            "comparing the catalog of source {source} waits for job(s) {} to finish their \
             changes",
            jobs.join(", ")
        ))
    };
    let activity = pg.source_activity(source, job_id).await?;
    if !activity.busy_jobs.is_empty() {
        return Err(busy(activity.busy_jobs));
    }
    let postgres_read = if recompute {
        CatalogRead::Scan { recompute }
    } else {
        CatalogRead::Sums
    };
    let (mut postgres, clickhouse) = tokio::try_join!(
        pg.catalog_side(source, postgres_read),
        ch.catalog_side(source, recompute)
    )?;
    if postgres_read == CatalogRead::Sums && !same_catalog(&postgres, &clickhouse) {
        postgres = pg
            .catalog_side(source, CatalogRead::Scan { recompute })
            .await?;
    }
    // A job that started meanwhile may have changed one store before the other was read.
    let activity = pg.source_activity(source, job_id).await?;
    if !activity.busy_jobs.is_empty() {
        return Err(busy(activity.busy_jobs));
    }
    let same = same_catalog(&postgres, &clickhouse);
    let differing_items = if same {
        0
    } else {
        differing_items(pg, ch, source, recompute).await?
    };
    Ok(CatalogCheck {
        ok: same
            && postgres.inconsistent == 0
            && clickhouse.inconsistent == 0
            && postgres.sums_match != Some(false),
        differing_items,
        postgres,
        clickhouse,
    })
}

fn same_catalog(postgres: &CatalogSide, clickhouse: &CatalogSide) -> bool {
    postgres.listed == clickhouse.listed
        && postgres.delisted == clickhouse.delisted
        && postgres.checksum == clickhouse.checksum
}

/// Items in one store only, or in both with different digests (any field, the listing or the
/// version).
async fn differing_items(
    pg: &PgStore,
    ch: &ChStore,
    source: &str,
    recompute: bool,
) -> Result<u64, EtlError> {
    let pg_buckets = pg.catalog_buckets(source, recompute).await?;
    let ch_buckets: HashMap<String, (u64, String)> = ch
        .catalog_buckets(source, recompute)
        .await?
        .into_iter()
        .map(|(bucket, items, checksum)| (bucket, (items, checksum)))
        .collect();
    let mut differing: Vec<String> = pg_buckets
        .iter()
        .filter(|(bucket, items, checksum)| {
            ch_buckets.get(bucket) != Some(&(*items, checksum.clone()))
        })
        .map(|(bucket, _, _)| bucket.clone())
        .collect();
    let pg_names: HashSet<&String> = pg_buckets.iter().map(|(bucket, _, _)| bucket).collect();
    differing.extend(
        ch_buckets
            .keys()
            .filter(|bucket| !pg_names.contains(bucket))
            .cloned(),
    );
    if differing.is_empty() {
        return Ok(0);
    }
    let in_pg: HashSet<(String, String)> = pg
        .catalog_digests(source, &differing, recompute)
        .await?
        .into_iter()
        .collect();
    let in_ch: HashSet<(String, String)> = ch
        .catalog_digests(source, &differing, recompute)
        .await?
        .into_iter()
        .collect();
    let skus: HashSet<&String> = in_pg
        .symmetric_difference(&in_ch)
        .map(|(sku, _)| sku)
        .collect();
    Ok(skus.len() as u64)
}

/// What a failed catalog comparison says, one sentence per finding.
pub fn catalog_mismatches(check: &CatalogCheck) -> Vec<String> {
    let mut found = Vec::new();
    for (store, side) in [
        ("Postgres", &check.postgres),
        ("ClickHouse", &check.clickhouse),
    ] {
        if side.inconsistent > 0 {
            found.push(format!(
                "{store}: {} item(s) no longer match the digest recorded when they were \
                 written (changed in {store} outside the pipeline)",
                side.inconsistent
            ));
        }
    }
    if check.postgres.sums_match == Some(false) {
        found.push(
            "Postgres: the catalog sums its triggers keep (table catalog_sums) no longer match \
             its items (catalog_items was written with its triggers disabled); the README's \
             Operating section says how to rebuild them"
                .to_owned(),
        );
    }
    if !same_catalog(&check.postgres, &check.clickhouse) {
        found.push(format!(
            "the catalog differs between the stores: Postgres lists {} items ({} delisted), \
             ClickHouse {} ({} delisted); {} item(s) differ",
            check.postgres.listed,
            check.postgres.delisted,
            check.clickhouse.listed,
            check.clickhouse.delisted,
            check.differing_items
        ));
    }
    found
}

/// Stable within one process run, which is all a distinct count needs.
fn sku_hash(sku: &str) -> u64 {
    let mut hasher = DefaultHasher::new();
    sku.hash(&mut hasher);
    hasher.finish()
}

impl EtlActivities {
    /// Recounts the object in chunks read one at a time (memory bounded by one chunk plus
    /// eight bytes per distinct sku), compares with the ledger, Postgres and ClickHouse and the
    /// source's catalog between the stores, and stores the result on the job (`verified_at`).
    pub async fn verify_job(&self, job_id: &str) -> Result<Verification, EtlError> {
        let summary = self.pg.job_summary(job_id).await?;
        let facts = self.pg.job_facts(job_id).await?;
        let object = &summary.object;
        let mut deltas = Vec::new();
        let current = match self.s3.head(&object.bucket, &object.key).await {
            Ok(meta) => Some(meta),
            Err(EtlError::ObjectNotFound { .. }) => {
                deltas.push(format!(
                    "object s3://{}/{} no longer exists: nothing to recount",
                    object.bucket, object.key
                ));
                None
            }
            Err(err) => return Err(err),
        };
        let recount = match &current {
            Some(meta) if meta.etag == object.etag => Some(
                self.recount(
                    &object.bucket,
                    &object.key,
                    &object.etag,
                    facts.max_record_bytes,
                )
                .await?,
            ),
            Some(meta) => {
                deltas.push(format!(
                    "object changed since the job: ETag {} now, {} ingested; nothing to recount",
                    meta.etag, object.etag
                ));
                None
            }
            None => None,
        };
        let mut totals = self.pg.totals(job_id).await?;
        let ledger_pruned = summary.ledger_pruned_at.is_some();
        if ledger_pruned {
            // Retention deleted the ledger of this completed job; its row kept the totals the
            // ledger gave when every chunk had committed.
            totals.chunks = summary.chunks;
            totals.chunks_committed = summary.chunks_committed;
            totals.rows_total = summary.rows_total;
            totals.rows_valid = summary.rows_valid;
            totals.rows_invalid = summary.rows_invalid;
            totals.items = summary.items.unwrap_or(0);
        }
        let (invalid_logged, invalid_pruned) = self.pg.invalid_logged(job_id).await?;
        let ledger = Counts {
            rows_total: Some(totals.rows_total),
            rows_valid: Some(totals.rows_valid),
            rows_invalid: Some(totals.rows_invalid),
            items: Some(totals.items),
        };
        let mut postgres = Counts {
            rows_invalid: Some(invalid_logged + invalid_pruned),
            ..Counts::default()
        };
        let mut clickhouse = Counts::default();
        let (mut catalog, mut catalog_note) = (None, None);
        if !summary.dry_run {
            let stale = self
                .pg
                .snapshot_newer_than(&facts.source, &facts.version)
                .await?;
            // The job's skus were in its ledger: pruned, Postgres' item count is not recounted.
            if !stale && !ledger_pruned {
                let missing = self
                    .pg
                    .job_items_missing_from_catalog(&facts.source, job_id)
                    .await?;
                postgres.items = Some(totals.items.saturating_sub(missing));
            }
            let version_id =
                object_version_id(&facts.bucket, &facts.version.key, &facts.version.etag);
            let counted = self
                .ch
                .version_counts(&facts.source, &facts.version, version_id)
                .await?;
            if counted.raw != counted.rows {
                deltas.push(format!(
                    "ClickHouse stores {} observation rows of the object where {} are distinct \
                     (delta {})",
                    counted.raw,
                    counted.rows,
                    counted.raw as i128 - counted.rows as i128
                ));
            }
            clickhouse.rows_valid = Some(counted.rows);
            clickhouse.items = Some(counted.skus);
            match compare_catalog(&self.pg, &self.ch, &facts.source, job_id, true).await {
                Ok(check) => {
                    deltas.extend(catalog_mismatches(&check));
                    catalog = Some(check);
                }
                Err(EtlError::NotYet(note)) => catalog_note = Some(note),
                Err(err) => return Err(err),
            }
        }
        let object_counts = recount.clone().unwrap_or_default();
        if totals.chunks_committed != totals.chunks {
            deltas.push(format!(
                "{} of {} chunks committed",
                totals.chunks_committed, totals.chunks
            ));
        }
        let items = if summary.dry_run {
            None
        } else {
            object_counts.items
        };
        for (what, a, b) in [
            (
                "rows",
                ("object", object_counts.rows_total),
                ("ledger", ledger.rows_total),
            ),
            (
                "valid rows",
                ("object", object_counts.rows_valid),
                ("ledger", ledger.rows_valid),
            ),
            (
                "invalid rows",
                ("object", object_counts.rows_invalid),
                ("ledger", ledger.rows_invalid),
            ),
            (
                "invalid rows",
                ("ledger", ledger.rows_invalid),
                ("postgres log (with pruned)", postgres.rows_invalid),
            ),
            (
                "valid rows",
                ("ledger", ledger.rows_valid),
                ("clickhouse observations", clickhouse.rows_valid),
            ),
            ("items", ("object", items), ("ledger", ledger.items)),
            (
                "items",
                ("ledger", ledger.items),
                ("postgres", postgres.items),
            ),
            (
                "items",
                ("ledger", ledger.items),
                ("clickhouse", clickhouse.items),
            ),
        ] {
            let ((a_name, a), (b_name, b)) = (a, b);
            if let (Some(a), Some(b)) = (a, b)
                && a != b
            {
                deltas.push(format!(
                    "{what}: {a_name} {a}, {b_name} {b} (delta {})",
                    b as i128 - a as i128
                ));
            }
        }
        if totals.rows_valid + totals.rows_invalid != totals.rows_total {
            deltas.push(format!(
                "ledger: valid {} + invalid {} != total {}",
                totals.rows_valid, totals.rows_invalid, totals.rows_total
            ));
        }
        let verification = Verification {
            job_id: summary.job_id.clone(),
            status: summary.status.clone(),
            etag: object.etag.clone(),
            current_etag: current.map(|meta| meta.etag),
            object: object_counts,
            ledger,
            postgres,
            clickhouse,
            invalid_pruned,
            catalog,
            catalog_note,
            ok: deltas.is_empty(),
            deltas,
        };
        let stored = serde_json::to_value(&verification)
            .map_err(|err| EtlError::Reconciliation(format!("encoding the result: {err}")))?;
        self.pg
            .store_verification(job_id, &stored, verification.ok)
            .await?;
        Ok(verification)
    }

    async fn recount(
        &self,
        bucket: &str,
        key: &str,
        etag: &str,
        max_record_bytes: u64,
    ) -> Result<Counts, EtlError> {
        let too_large = |source| EtlError::RecordTooLarge {
            bucket: bucket.to_owned(),
            key: key.to_owned(),
            source,
        };
        // Pass 1: a fresh plan of the live object, independent of the one the job stored. Its
        // chunks are kept (about 40 bytes per chunk).
        let mut body = self.s3.open_range(bucket, key, etag, 0, None).await?;
        let mut planner = ChunkPlanner::new(DEFAULT_CHUNK_BYTES, max_record_bytes);
        let mut chunks = Vec::new();
        while let Some(bytes) = body
            .try_next()
            .await
            .map_err(|err| EtlError::S3(format!("reading s3://{bucket}/{key}: {err}")))?
        {
            planner.feed(&bytes).map_err(too_large)?;
            chunks.extend(planner.take_chunks());
        }
        let plan = planner.finish().map_err(too_large)?;
        chunks.extend(plan.chunks);
        let header = parse_header(&plan.header_bytes).map_err(|err| EtlError::BadHeader {
            bucket: bucket.to_owned(),
            key: key.to_owned(),
            reason: err.to_string(),
        })?;
        // Pass 2: parse and validate chunk by chunk.
        let (mut valid, mut invalid) = (0u64, 0u64);
        let mut skus = HashSet::new();
        for chunk in &chunks {
            let bytes = self
                .s3
                .read_range(bucket, key, etag, chunk.start, chunk.end)
                .await?;
            let parsed = parse_chunk(&header, &bytes, chunk.first_row);
            valid += parsed.valid.len() as u64;
            invalid += parsed.invalid.len() as u64;
            skus.extend(parsed.valid.iter().map(|row| sku_hash(&row.item.sku)));
        }
        Ok(Counts {
            rows_total: Some(plan.data_rows),
            rows_valid: Some(valid),
            rows_invalid: Some(invalid),
            items: Some(skus.len() as u64),
        })
    }
}
