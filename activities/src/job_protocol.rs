//! The job protocol: how a job ends, and what may change the catalog on the way. The chunk
//! protocol ([`crate::chunk_protocol`]) commits the rows; this one decides when a job stops
//! taking commits, when its delisting happens, and which final status it gets.
//!
//! # States of a job (its row in `etl_jobs`)
//!
//! ```text
//! running, accepting commits ──settle──▶ running, sealed ──complete──▶ completed
//!            │                                  │
//!            └───────────── end_unfinished ─────┴──────────────────▶ failed | cancelled
//! ```
//!
//! # Steps of a job that completes
//!
//! 1. **Settle**: every chunk is committed; the totals are stored and the job is sealed (no
//!    attempt commits after this); what its chunks owe ClickHouse is copied; the counts are
//!    reconciled (object, ledger, invalid-row log, ClickHouse raw and `FINAL`).
//! 2. **Complete**: another running job of the source whose workflow is gone is ended first
//!    (as the watchdog would); what ended jobs of the source still owe ClickHouse is copied (a
//!    failed job never blocks its source: the next job finishes its copies); the source's
//!    catalog is compared between the stores (waiting while another *running* job of the
//!    source has changes in flight); then one Postgres transaction counts the object's valid
//!    items the catalog lacks (found by the delisting's join when the job may delist), delists
//!    (if the job may), folds the source's catalog sums (what the comparison reads of Postgres;
//!    the catalog's triggers append to them as any statement writes items) and marks the job
//!    `completed`, with its reconciliation and manifest entry. A failing comparison, or an item
//!    the catalog lacks, fails the job before anything is delisted.
//! 3. **Publish**: the delisting's copy to ClickHouse (catalog rows and `delisted`
//!    observations). The job is completed already; a copy that cannot be made is left for the
//!    next job of the source, like a failed job's chunks.
//!
//! # A job that does not complete
//!
//! `end_unfinished`: seal, try once to copy what its committed chunks owe ClickHouse, then
//! `failed` (with its typed `error_type`) or `cancelled`. Nothing waits for ClickHouse, so a
//! broken ClickHouse cannot keep a job from ending; what is left is reported as
//! `chunks_clickhouse_pending` and copied later. A job whose workflow was closed without ending
//! it (terminated, reset away, timed out, lost) is ended this way by the watchdog
//! ([`crate::watchdog`]).
//!
//! # Locks
//!
//! The completing transaction locks the job row FOR UPDATE (it waits for the job's chunk
//! transactions, which hold it FOR SHARE), then the source row FOR UPDATE (it waits for every
//! chunk transaction of the source). No lock is held while ClickHouse is waited on.
//!
//! # Invariants
//!
//! - Only a completed job delists, and it delists in the transaction that completes it: a
//!   failed or cancelled job never delisted anything, and a job that delisted never fails.
//! - A job delists at most once: a repeated completing step returns the first decision.
//! - A job's final status is written once; the Web UI's `CatalogOutcome` is that status.

use crate::{
    chunk_protocol::ChunkStores,
    error::EtlError,
    model::{DelistOutcome, JobOutcome, JobTotals, Reconciliation, object_version_id},
    pause::{self, PausePoint},
    pg::{self, EndedJob, JobFacts},
    verify,
};

/// What a settled job found.
#[derive(Debug, Clone)]
pub struct Settled {
    pub totals: JobTotals,
    pub reconciliation: Reconciliation,
}

/// What the completing step did.
#[derive(Debug, Clone)]
pub struct Completed {
    /// The job's status after the step: `completed`, unless it had ended before.
    pub status: String,
    pub reconciliation: Reconciliation,
    pub delisting: DelistOutcome,
}

impl ChunkStores<'_> {
    /// Step 1.
    pub async fn settle(&self, job_id: &str) -> Result<Settled, EtlError> {
        let totals = self.pg.totals(job_id).await?;
        if totals.chunks_committed != totals.chunks {
            return Err(EtlError::Reconciliation(format!(
                "only {} of {} chunks are committed",
                totals.chunks_committed, totals.chunks
            )));
        }
        pause::reached(PausePoint::Aggregate).await;
        self.pg.store_totals(job_id, &totals).await?;
        let facts = self.pg.job_facts(job_id).await?;
        if !facts.dry_run {
            self.copy_own(&facts, pg::parse_job_id(job_id)?).await?;
        }
        let reconciliation = self.reconcile_counts(job_id, &facts, &totals).await?;
        Ok(Settled {
            totals,
            reconciliation,
        })
    }

    /// Step 2.
    pub async fn complete(&self, job_id: &str) -> Result<Completed, EtlError> {
        let mut reconciliation = self.pg.stored_reconciliation(job_id).await?;
        let status = self.pg.job_status(job_id).await?.map(|(status, _)| status);
        if status.as_deref() != Some("running") {
            // The step ran before (its answer was lost): the first decision stands.
            let done = self.pg.complete(job_id, reconciliation).await?;
            return Ok(Completed {
                status: done.status,
                reconciliation: done.reconciliation,
                delisting: done.delisting,
            });
        }
        let facts = self.pg.job_facts(job_id).await?;
        if !facts.dry_run {
            let busy = self.pg.source_activity(&facts.source, job_id).await?;
            if !busy.busy_jobs.is_empty() && self.temporal.is_some() {
                self.close_if_orphaned(&busy.busy_jobs).await?;
            }
            self.copy_pending(&facts, pg::parse_job_id(job_id)?).await?;
            let check =
                verify::compare_catalog(self.pg, self.ch, &facts.source, job_id, false).await?;
            if !check.ok {
                reconciliation
                    .mismatches
                    .extend(verify::catalog_mismatches(&check));
                reconciliation.ok = false;
            }
            reconciliation.catalog = Some(check);
            self.pg
                .store_reconciliation(job_id, &reconciliation)
                .await?;
            if !reconciliation.ok {
                return Err(EtlError::Reconciliation(
                    reconciliation.mismatches.join("; "),
                ));
            }
        }
        let done = self.pg.complete(job_id, reconciliation).await?;
        if let Some(ended) = &done.ended_now {
            self.count_ended(ended);
        }
        Ok(Completed {
            status: done.status,
            reconciliation: done.reconciliation,
            delisting: done.delisting,
        })
    }

    /// Step 3. Once the delisting is in ClickHouse too, the catalog comparison is made again,
    /// so the job reports the stores as it left them (unless another job of the source has
    /// changes in flight by then: the comparison made before the delisting stays).
    pub async fn publish_delisting(&self, job_id: &str) -> Result<(), EtlError> {
        let facts = self.pg.job_facts(job_id).await?;
        let id = pg::parse_job_id(job_id)?;
        if !self
            .pg
            .delistings_pending(&facts.source, id)
            .await?
            .contains(&id)
        {
            return Ok(());
        }
        pause::reached(PausePoint::Delist).await;
        self.copy_delisting(&facts, id).await?;
        let check =
            match verify::compare_catalog(self.pg, self.ch, &facts.source, job_id, false).await {
                Err(EtlError::NotYet(_)) => return Ok(()),
                other => other?,
            };
        // The comparison before the delisting agreed (or the job would have failed): only
        // this one's findings can be new.
        let mut reconciliation = self.pg.stored_reconciliation(job_id).await?;
        if !check.ok {
            reconciliation
                .mismatches
                .extend(verify::catalog_mismatches(&check));
            reconciliation.ok = false;
        }
        reconciliation.catalog = Some(check);
        self.pg.store_reconciliation(job_id, &reconciliation).await
    }

    /// Ends a job that did not complete. The copy is tried once: a job ends whatever state
    /// ClickHouse is in.
    pub async fn end_unfinished(&self, job_id: &str, outcome: &JobOutcome) -> Result<(), EtlError> {
        self.pg.seal(job_id).await?;
        let facts = self.pg.job_facts(job_id).await?;
        if !facts.dry_run
            && let Err(err) = self.copy_own(&facts, pg::parse_job_id(job_id)?).await
        {
            tracing::warn!(
                "the job ends with chunks ClickHouse lacks (the next job of the source copies \
                 them): {err}"
            );
        }
        if let Some(ended) = self.pg.end_unfinished(job_id, outcome).await? {
            self.count_ended(&ended);
        }
        Ok(())
    }

    fn count_ended(&self, ended: &EndedJob) {
        self.metrics.job_finished(ended);
    }

    /// The job's own committed chunks that ClickHouse lacks.
    async fn copy_own(&self, facts: &JobFacts, job: uuid::Uuid) -> Result<(), EtlError> {
        for (owner, chunk) in self
            .pg
            .chunks_pending_clickhouse(&facts.source, job)
            .await?
        {
            if owner == job {
                let work = self.pg.committed_chunk(owner, chunk).await?;
                self.copy_committed(&work).await?;
            }
        }
        Ok(())
    }

    /// Everything of the source that Postgres committed and ClickHouse lacks, except what other
    /// running jobs are copying themselves: this job's chunks, and the chunks and delistings of
    /// ended jobs. An ended job's chunk whose object changed since cannot give its
    /// observations again; that is recorded on its ledger row and does not stop this job.
    async fn copy_pending(&self, facts: &JobFacts, job: uuid::Uuid) -> Result<(), EtlError> {
        if facts.dry_run {
            return Ok(());
        }
        for (owner, chunk) in self
            .pg
            .chunks_pending_clickhouse(&facts.source, job)
            .await?
        {
            let work = self.pg.committed_chunk(owner, chunk).await?;
            match self.copy_committed(&work).await {
                Err(EtlError::SourceChanged { .. } | EtlError::ObjectNotFound { .. })
                    if owner != job => {}
                other => other?,
            }
        }
        for owner in self.pg.delistings_pending(&facts.source, job).await? {
            let owner_facts = self.pg.job_facts(&owner.to_string()).await?;
            self.copy_delisting(&owner_facts, owner).await?;
        }
        Ok(())
    }

    async fn copy_delisting(&self, facts: &JobFacts, job: uuid::Uuid) -> Result<(), EtlError> {
        let (items, rows) = self.pg.delisting(job).await?;
        let version_id = object_version_id(&facts.bucket, &facts.version.key, &facts.version.etag);
        let observed = crate::ch::Observed {
            source: &facts.source,
            version: &facts.version,
            version_id,
        };
        let token = format!("delist:{version_id}:{job}");
        self.ch.insert_delistings(&observed, &items, &token).await?;
        // A job delists once: every copy of its delisted rows is the same block.
        self.ch
            .insert_catalog_rows(&facts.source, &rows, &format!("delist-items:{job}"))
            .await?;
        self.pg.mark_delist_clickhouse_written(job).await
    }

    /// Source rows vs ledger vs invalid-row log vs Postgres vs ClickHouse, stored on the job.
    async fn reconcile_counts(
        &self,
        job_id: &str,
        facts: &JobFacts,
        totals: &JobTotals,
    ) -> Result<Reconciliation, EtlError> {
        let (invalid_logged, invalid_pruned) = self.pg.invalid_logged(job_id).await?;
        let mut mismatches = Vec::new();
        if totals.rows_total != facts.source_rows {
            mismatches.push(format!(
                "chunks hold {} rows, the object has {}",
                totals.rows_total, facts.source_rows
            ));
        }
        if totals.rows_valid + totals.rows_invalid != totals.rows_total {
            mismatches.push(format!(
                "rows_valid {} + rows_invalid {} != rows_total {}",
                totals.rows_valid, totals.rows_invalid, totals.rows_total
            ));
        }
        if invalid_logged + invalid_pruned != totals.rows_invalid {
            mismatches.push(format!(
                "{invalid_logged} invalid rows logged (+{invalid_pruned} pruned), {} counted",
                totals.rows_invalid
            ));
        }
        let (mut ch_items, mut ch_observations) = (None, None);
        if !facts.dry_run {
            let version_id =
                object_version_id(&facts.bucket, &facts.version.key, &facts.version.etag);
            let counted = self
                .ch
                .version_counts(&facts.source, &facts.version, version_id)
                .await?;
            if counted.rows != totals.rows_valid {
                mismatches.push(format!(
                    "ClickHouse has {} observations of the object, {} valid rows counted",
                    counted.rows, totals.rows_valid
                ));
            }
            if counted.raw != counted.rows {
                mismatches.push(format!(
                    "ClickHouse stores {} observation rows of the object where {} are distinct \
                     (a row stored twice)",
                    counted.raw, counted.rows
                ));
            }
            if counted.skus != totals.items {
                mismatches.push(format!(
                    "ClickHouse observes {} items of the object, the ledger {}",
                    counted.skus, totals.items
                ));
            }
            ch_items = Some(counted.skus);
            ch_observations = Some(counted.rows);
        }
        let reconciliation = Reconciliation {
            source_rows: facts.source_rows,
            rows_total: totals.rows_total,
            rows_valid: totals.rows_valid,
            rows_invalid: totals.rows_invalid,
            invalid_logged,
            invalid_pruned,
            items: totals.items,
            // Counted by the completing transaction.
            pg_items: None,
            ch_items,
            ch_observations,
            catalog: None,
            ok: mismatches.is_empty(),
            mismatches,
        };
        self.pg
            .store_reconciliation(job_id, &reconciliation)
            .await?;
        Ok(reconciliation)
    }
}
