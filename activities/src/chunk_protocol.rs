//! The chunk protocol: how one planned chunk's effects reach Postgres and ClickHouse exactly
//! once, whatever attempts run, die, stall or race, and whatever order the chunks of an object
//! (and the jobs of a source) commit in.
//!
//! # States of a chunk (its row in `etl_chunks`)
//!
//! ```text
//! planned ──(Postgres transaction)──▶ committed ──(ClickHouse copy)──▶ committed, copied
//! ```
//!
//! Postgres is the system of record; ClickHouse is a copy of what Postgres committed. A chunk is
//! `committed` when its catalog writes, its invalid rows and its ledger row (counts, the skus it
//! mentions, the skus it wrote) commit in one transaction; `clickhouse_written` when its
//! observations and the catalog rows it wrote are in ClickHouse.
//!
//! # Steps of an attempt
//!
//! 1. **Lease** (one autocommit statement): the attempt counter goes up; this attempt's number
//!    is its lease. Only the holder of the latest lease may commit.
//! 2. Already committed: go to step 5 (copy only, if not copied).
//! 3. **Read and parse** the chunk's byte range of the object version (`If-Match` its ETag: a
//!    replaced object fails the job, never mixes versions), then validate every record. No
//!    Postgres transaction is open.
//! 4. **Commit** (one Postgres transaction, Postgres statements only): lock the ledger row (it
//!    must be uncommitted and the lease this attempt's), the job row FOR SHARE (the job must
//!    still accept commits), the source row FOR SHARE (the write mode: an object older than the
//!    source's registered snapshot writes no catalog row); upsert the catalog (a source's first
//!    snapshot inserts the skus its object mentions once, inside a savepoint, and upserts the
//!    rest; an item that exists after all rolls the insert back and the chunk upserts it all);
//!    insert the invalid rows; mark the ledger row committed. COMMIT.
//! 5. **Copy** to ClickHouse, after the commit: the observations of the chunk's valid rows that
//!    ClickHouse lacks (looked up, unless this attempt has just committed the chunk and no
//!    other job of the source ever ingested the object version: then it lacks them all), then
//!    the catalog rows the commit wrote; then `clickhouse_written`. An attempt that lost its
//!    lease leaves the copy to the attempt that holds it. A retry whose chunk is committed but
//!    not copied reads the rows again from S3 (observations) and from Postgres (catalog rows).
//!
//! # Locks
//!
//! Taken in this order only: ledger row, job row (share), source row (share), item rows (in
//! sku order; a source's first snapshot takes the skus its object mentions once, then the
//! others, each in sku order: no other chunk of the job writes the first, and a deadlock this
//! allows with a concurrent job of the new source is Postgres' to break and a retry's to
//! finish). No lock or transaction is held while S3 or ClickHouse is waited on: a stalled
//! ClickHouse or a frozen attempt blocks no other attempt, job, registration or delisting.
//!
//! # Invariants
//!
//! - A chunk commits at most once: the ledger row's lock and status decide, and a stale
//!   attempt (lost lease, sealed job) writes nothing.
//! - Catalog rows only move forward: a write needs a greater version (object time, key, ETag,
//!   row) than the stored one, checked under the row's lock, so the greatest row of the newest
//!   object wins whatever order chunks and jobs commit in. A snapshot leaves an item it repeats
//!   unchanged alone (its version stays), except a sku the object mentions more than once
//!   (the plan's shared mention hashes, or twice within the chunk): that one is always written,
//!   so its greatest row wins even when an earlier row of it commits last.
//! - Every committed valid row has exactly one observation per (object version, row): the
//!   copy inserts only the rows ClickHouse does not hold, whichever job or attempt makes it and
//!   however late; a concurrent duplicate insert carries the same deduplication token. No
//!   observation exists for a row no committed chunk owns (the copy follows the commit).
//! - Every revision of a catalog row in Postgres reaches ClickHouse with that revision, so
//!   ClickHouse's latest row per item is Postgres' row, whatever order copies land in; and
//!   only once: every copy of one commit carries that commit's deduplication token, and a copy
//!   made again inserts only the rows whose state is still the commit's (not one another chunk
//!   or job has written since: that one is its writer's to copy) and whose revision ClickHouse
//!   lacks.

use std::time::{Duration, Instant};

use crate::{
    ch::{ChStore, Observed, WrittenRow},
    chunk::{ParsedChunk, ValidRow, parse_chunk, parse_header},
    error::EtlError,
    metrics::{CommittedChunk, Metrics, Phase},
    model::{ChunkOutcome, ChunkTask, object_version_id},
    pause::{self, PausePoint},
    pg::{Begun, ChunkWork, PgStore, WrittenItem},
    s3::ObjectStore,
};

/// The stores a chunk touches, and where its effects are counted.
pub struct ChunkStores<'a> {
    pub pg: &'a PgStore,
    pub ch: &'a ChStore,
    pub s3: &'a ObjectStore,
    pub metrics: &'a Metrics,
    /// To tell a job whose workflow is gone from a job at work (see [`crate::watchdog`]).
    pub temporal: Option<&'a temporalio_client::Client>,
}

fn observed(work: &ChunkWork) -> Observed<'_> {
    Observed {
        source: &work.source,
        version: &work.version,
        version_id: object_version_id(&work.bucket, &work.version.key, &work.version.etag),
    }
}

/// The same for every attempt and every job that inserts this chunk of this object version.
fn observation_token(observed: &Observed<'_>, work: &ChunkWork) -> String {
    format!(
        "obs:{}:{}:{}-{}",
        observed.source, observed.version_id, work.byte_start, work.byte_end
    )
}

/// The same for every copy of one chunk's commit, whoever makes it: a chunk commits once, so
/// a second copy of its catalog rows that races the first (a zombie, a retry, a later job of
/// the source) is dropped by ClickHouse even when rows moved on in between and the two blocks
/// differ.
fn catalog_copy_token(work: &ChunkWork) -> String {
    format!("items:{}:{}", work.job_id, work.chunk_index)
}

/// How a pause gate knows the chunk (`<job id>.<chunk index>`, as the tests read it).
fn gate_key(work: &ChunkWork) -> String {
    format!("{}.{}", work.job_id, work.chunk_index)
}

/// The rows of the object the chunk holds.
fn chunk_rows(work: &ChunkWork) -> std::ops::RangeInclusive<u64> {
    work.first_row..=(work.first_row + work.planned_rows).saturating_sub(1)
}

impl ChunkStores<'_> {
    /// One attempt at a chunk (steps 1 to 5).
    pub async fn run(&self, task: &ChunkTask) -> Result<ChunkOutcome, EtlError> {
        let work = self
            .pg
            .start_chunk_attempt(&task.job_id, task.chunk_index)
            .await?;
        tracing::Span::current().record("source", work.source.as_str());
        if let Some(outcome) = work.committed {
            if !work.clickhouse_written {
                self.copy_committed(&work).await?;
            }
            return Ok(outcome);
        }
        let (parsed, read, parse) = self.read_and_parse(&work).await?;
        pause::reached_as(PausePoint::ChunkAfterRead, || gate_key(&work)).await;
        let postgres_started = Instant::now();
        let mut commit = match self.pg.begin_chunk_commit(&work).await? {
            Begun::Open(commit) => commit,
            Begun::AlreadyCommitted(outcome) => {
                tracing::warn!(
                    attempt = work.lease,
                    "stale attempt: another attempt committed the chunk; this one writes nothing"
                );
                return Ok(outcome);
            }
        };
        let latest = parsed.latest_per_sku();
        let repeated = parsed.mentioned_more_than_once(&work.shared_hashes);
        let written = if work.dry_run {
            Vec::new()
        } else {
            commit
                .write_catalog(&work.source, &work.version, &latest, &repeated)
                .await?
        };
        commit.record_invalid(&parsed).await?;
        pause::reached(PausePoint::ChunkBeforeCommit).await;
        let outcome = ChunkOutcome {
            chunk_index: task.chunk_index,
            rows_total: parsed.rows_total,
            rows_valid: parsed.valid.len() as u64,
            rows_invalid: parsed.invalid.len() as u64,
        };
        let nothing_to_copy = work.dry_run || (parsed.valid.is_empty() && written.is_empty());
        commit
            .commit(
                &outcome,
                &parsed,
                &latest,
                &repeated,
                &written,
                nothing_to_copy,
            )
            .await?;
        let postgres = postgres_started.elapsed();
        self.metrics.chunk_committed(
            &work.source,
            work.dry_run,
            CommittedChunk {
                rows_valid: outcome.rows_valid,
                rows_invalid: outcome.rows_invalid,
                bytes: work.byte_end - work.byte_start,
            },
        );
        self.metrics.chunk_phase(Phase::Read, read);
        self.metrics.chunk_phase(Phase::Parse, parse);
        self.metrics.chunk_phase(Phase::Postgres, postgres);
        let mut clickhouse = Duration::ZERO;
        if !nothing_to_copy {
            pause::reached(PausePoint::ChunkBeforeClickHouse).await;
            let standing = self.pg.copy_standing(&work).await?;
            if !standing.holds_lease {
                tracing::warn!(
                    attempt = work.lease,
                    "stale attempt: another attempt took the chunk over; it makes the copy"
                );
                return Ok(outcome);
            }
            let copying = Instant::now();
            self.copy(
                &work,
                &parsed,
                Written::Parsed {
                    latest: &latest,
                    written: &written,
                    first_copy: standing.first_copy,
                },
            )
            .await?;
            clickhouse = copying.elapsed();
            self.metrics.chunk_phase(Phase::ClickHouse, clickhouse);
        }
        tracing::info!(
            rows = outcome.rows_total,
            written = written.len(),
            read_ms = read.as_millis() as u64,
            parse_ms = parse.as_millis() as u64,
            postgres_ms = postgres.as_millis() as u64,
            clickhouse_ms = clickhouse.as_millis() as u64,
            "chunk done"
        );
        Ok(outcome)
    }

    /// Step 3: the chunk's records, parsed and validated as the plan cut them, and how long
    /// reading and parsing took.
    async fn read_and_parse(
        &self,
        work: &ChunkWork,
    ) -> Result<(ParsedChunk, Duration, Duration), EtlError> {
        let reading = Instant::now();
        let bytes = self
            .s3
            .read_range(
                &work.bucket,
                &work.version.key,
                &work.version.etag,
                work.byte_start,
                work.byte_end,
            )
            .await?;
        let read = reading.elapsed();
        let mismatch = |reason: String| EtlError::PlanMismatch {
            job_id: work.job_id.to_string(),
            chunk: work.chunk_index,
            reason,
        };
        let header = parse_header(&work.header_raw)
            .map_err(|err| mismatch(format!("stored header does not parse: {err}")))?;
        let parsing = Instant::now();
        let first_row = work.first_row;
        let parsed = tokio::task::spawn_blocking(move || parse_chunk(&header, &bytes, first_row))
            .await
            .map_err(|err| mismatch(format!("parser task failed: {err}")))?;
        let parse = parsing.elapsed();
        if parsed.rows_total != work.planned_rows {
            return Err(mismatch(format!(
                "parsed {} records where the plan has {}",
                parsed.rows_total, work.planned_rows
            )));
        }
        Ok((parsed, read, parse))
    }

    /// Step 5 for a chunk committed by an attempt (or a job) that did not copy it: the
    /// observations from the object again, the catalog rows from Postgres as they are now.
    /// When the object changed since, the observations cannot be made: the catalog rows are
    /// still copied, the ledger records the loss, and the error says why.
    pub async fn copy_committed(&self, work: &ChunkWork) -> Result<(), EtlError> {
        if work.dry_run {
            self.pg
                .mark_clickhouse_written(work.job_id, work.chunk_index, false)
                .await?;
            return Ok(());
        }
        match self.read_and_parse(work).await {
            Ok((parsed, _, _)) => self.copy(work, &parsed, Written::InPostgres).await,
            Err(err @ (EtlError::SourceChanged { .. } | EtlError::ObjectNotFound { .. })) => {
                let rows = self.rows_written_in_postgres(work).await?;
                self.ch
                    .insert_catalog_rows(&work.source, &rows, &catalog_copy_token(work))
                    .await?;
                self.pg
                    .mark_clickhouse_written(work.job_id, work.chunk_index, true)
                    .await?;
                tracing::error!(
                    job_id = %work.job_id,
                    chunk = work.chunk_index,
                    "the observations of a committed chunk are lost: {err}"
                );
                Err(err)
            }
            Err(err) => Err(err),
        }
    }

    /// The catalog rows whose state is still this chunk's commit: a row another chunk of the
    /// job (a sku the object repeats) or a later job wrote since is that writer's to copy.
    async fn rows_written_in_postgres(
        &self,
        work: &ChunkWork,
    ) -> Result<Vec<crate::pg::CatalogItemRow>, EtlError> {
        let skus = self.pg.written_skus(work.job_id, work.chunk_index).await?;
        self.pg
            .rows_written_by(&work.source, work.job_id, chunk_rows(work), &skus)
            .await
    }

    async fn copy(
        &self,
        work: &ChunkWork,
        parsed: &ParsedChunk,
        written: Written<'_>,
    ) -> Result<(), EtlError> {
        let observed = observed(work);
        let none_stored = matches!(
            written,
            Written::Parsed {
                first_copy: true,
                ..
            }
        );
        self.ch
            .insert_observations(
                &observed,
                chunk_rows(work),
                parsed,
                &observation_token(&observed, work),
                none_stored,
            )
            .await?;
        match written {
            Written::Parsed {
                latest, written, ..
            } => {
                let rows: Vec<WrittenRow<'_>> = written
                    .iter()
                    .filter_map(|w| {
                        let at = latest
                            .binary_search_by(|row| row.item.sku.as_str().cmp(&w.sku))
                            .ok()?;
                        Some(WrittenRow {
                            row: latest[at],
                            revision: w.revision,
                            digest: &w.digest,
                        })
                    })
                    .collect();
                self.ch
                    .insert_written_items(
                        &work.source,
                        &work.version,
                        work.job_id,
                        &rows,
                        &catalog_copy_token(work),
                    )
                    .await?;
            }
            Written::InPostgres => {
                let rows = self.rows_written_in_postgres(work).await?;
                self.ch
                    .insert_catalog_rows(&work.source, &rows, &catalog_copy_token(work))
                    .await?;
            }
        }
        pause::reached_as(PausePoint::ChunkBeforeLedger, || gate_key(work)).await;
        let latest = self
            .pg
            .mark_clickhouse_written(work.job_id, work.chunk_index, false)
            .await?;
        if latest != work.lease {
            tracing::warn!(
                attempt = work.lease,
                latest,
                "stale attempt: another attempt took the chunk over meanwhile; the copy held \
                 the same rows either way"
            );
        }
        Ok(())
    }
}

/// Where the copy finds the catalog rows a commit wrote.
enum Written<'a> {
    /// This attempt's commit: the chunk's latest row per sku (sorted by sku) and the revisions
    /// Postgres returned; `first_copy` when ClickHouse holds none of the chunk's observations
    /// yet ([`crate::pg::PgStore::copy_standing`]).
    Parsed {
        latest: &'a [&'a ValidRow],
        written: &'a [WrittenItem],
        first_copy: bool,
    },
    /// An earlier attempt's commit: Postgres' rows as they are now.
    InPostgres,
}
