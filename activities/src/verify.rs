//! `etlctl reconcile`: recount a job from the live object and from both stores, independently
//! of what the job recorded while it ran.

use std::{
    collections::HashSet,
    hash::{DefaultHasher, Hash, Hasher},
};

use serde::{Deserialize, Serialize};

use crate::{
    EtlActivities,
    chunk::{parse_chunk, parse_header},
    error::EtlError,
    model::DEFAULT_CHUNK_BYTES,
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
    /// Postgres: provenance items and logged invalid rows.
    pub postgres: Counts,
    /// ClickHouse: observation rows (= valid rows) and distinct items.
    pub clickhouse: Counts,
    /// Every difference, in words; empty when all counts agree.
    pub deltas: Vec<String>,
    pub ok: bool,
}

/// Stable within one process run, which is all a distinct count needs.
fn sku_hash(sku: &str) -> u64 {
    let mut hasher = DefaultHasher::new();
    sku.hash(&mut hasher);
    hasher.finish()
}

impl EtlActivities {
    /// Recounts the object in chunks read one at a time (memory bounded by the chunk size plus
    /// eight bytes per distinct sku), compares with the ledger, Postgres and ClickHouse, and
    /// stores the result on the job (`verified_at`).
    pub async fn verify_job(&self, job_id: &str) -> Result<Verification, EtlError> {
        let summary = self.pg.job_summary(job_id).await?;
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
                self.recount(&object.bucket, &object.key, &object.etag)
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
        let totals = self.pg.totals(job_id).await?;
        let (pg_items, invalid_logged) = self.pg.job_counts(job_id).await?;
        let ch = if summary.dry_run {
            None
        } else {
            Some(self.ch.job_counts(job_id).await?)
        };
        let ledger = Counts {
            rows_total: Some(totals.rows_total),
            rows_valid: Some(totals.rows_valid),
            rows_invalid: Some(totals.rows_invalid),
            items: None,
        };
        let postgres = Counts {
            rows_total: None,
            rows_valid: None,
            rows_invalid: Some(invalid_logged),
            items: (!summary.dry_run).then_some(pg_items),
        };
        let clickhouse = Counts {
            rows_total: None,
            rows_valid: ch.map(|(_, observations)| observations),
            rows_invalid: None,
            items: ch.map(|(items, _)| items),
        };
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
                ("postgres log", postgres.rows_invalid),
            ),
            (
                "valid rows",
                ("ledger", ledger.rows_valid),
                ("clickhouse observations", clickhouse.rows_valid),
            ),
            ("items", ("object", items), ("postgres", postgres.items)),
            (
                "items",
                ("postgres", postgres.items),
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

    async fn recount(&self, bucket: &str, key: &str, etag: &str) -> Result<Counts, EtlError> {
        // Pass 1: a fresh plan of the live object, independent of the one the job stored.
        let mut body = self.s3.open_range(bucket, key, etag, 0, None).await?;
        let mut planner = ChunkPlanner::new(DEFAULT_CHUNK_BYTES);
        while let Some(bytes) = body
            .try_next()
            .await
            .map_err(|err| EtlError::S3(format!("reading s3://{bucket}/{key}: {err}")))?
        {
            planner.feed(&bytes);
        }
        let plan = planner.finish();
        let header = parse_header(&plan.header_bytes).map_err(|err| EtlError::BadHeader {
            bucket: bucket.to_owned(),
            key: key.to_owned(),
            reason: err.to_string(),
        })?;
        // Pass 2: parse and validate chunk by chunk.
        let (mut valid, mut invalid) = (0u64, 0u64);
        let mut skus = HashSet::new();
        for chunk in &plan.chunks {
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
