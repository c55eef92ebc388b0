//! A source run's listing: the prefix read page by page against the manifest, keeping only the
//! oldest `max_objects` new versions (a bounded heap); everything else is counted. Memory and
//! the payload stay bounded whatever the number of objects under the prefix.

use std::collections::BinaryHeap;

use chrono::{DateTime, Utc};
use sqlx::Row;

use crate::{
    error::EtlError,
    model::{
        IngestOptions, JobMode, ObjectMeta, SourceIngestRequest, SourceListing, ingest_workflow_id,
        job_id_for_workflow,
    },
    pg::{PgStore, parse_job_id, parse_time},
    s3::ObjectStore,
};

/// What the manifest and the job rows say about one listed version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum VersionState {
    /// In the manifest: ingested successfully.
    Ingested,
    /// Its job failed or was cancelled: `etlctl retry`, not a tick, runs it again.
    FailedEarlier,
    New,
}

/// Orders versions oldest first: Last-Modified, then key, then ETag (the contract's order).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Oldest(DateTime<Utc>, String, String, ObjectKey);

/// The object itself, compared last (never decides the order).
#[derive(Debug, Clone, PartialEq, Eq)]
struct ObjectKey(ObjectMeta);

impl PartialOrd for ObjectKey {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for ObjectKey {
    fn cmp(&self, _: &Self) -> std::cmp::Ordering {
        std::cmp::Ordering::Equal
    }
}

pub async fn list_source(
    pg: &PgStore,
    s3: &ObjectStore,
    request: &SourceIngestRequest,
) -> Result<SourceListing, EtlError> {
    let keep = request.max_objects as usize;
    // A max-heap of the oldest `keep` new versions seen so far: the newest of them is evicted
    // when an older one arrives.
    let mut oldest: BinaryHeap<Oldest> = BinaryHeap::with_capacity(keep + 1);
    let mut listing = SourceListing {
        to_ingest: Vec::new(),
        skipped: 0,
        failed_earlier: 0,
        remaining: 0,
        listed: 0,
    };
    let mut next = None;
    loop {
        let page = s3
            .list_page(
                &request.bucket,
                &request.prefix,
                request.list_page_size.clamp(1, 1000) as i32,
                next,
            )
            .await?;
        listing.listed += page.objects.len() as u64;
        let states = pg
            .version_states(&request.source, &page.objects, &request.options)
            .await?;
        for (object, state) in page.objects.into_iter().zip(states) {
            match state {
                VersionState::Ingested => listing.skipped += 1,
                VersionState::FailedEarlier => listing.failed_earlier += 1,
                VersionState::New => {
                    let modified = parse_time(&object.last_modified).ok_or_else(|| {
                        EtlError::MissingLastModified {
                            bucket: object.bucket.clone(),
                            key: object.key.clone(),
                        }
                    })?;
                    oldest.push(Oldest(
                        modified,
                        object.key.clone(),
                        object.etag.clone(),
                        ObjectKey(object),
                    ));
                    if oldest.len() > keep {
                        oldest.pop();
                        listing.remaining += 1;
                    }
                }
            }
        }
        match page.next {
            Some(token) => next = Some(token),
            None => break,
        }
    }
    listing.to_ingest = oldest
        .into_sorted_vec()
        .into_iter()
        .map(|Oldest(_, _, _, ObjectKey(object))| object)
        .collect();
    Ok(listing)
}

impl PgStore {
    /// Per listed version: in the manifest, else the status of the job it would get. A run of
    /// full snapshots takes again a version that was only ingested as partial (it may delist);
    /// a partial run is satisfied by either.
    async fn version_states(
        &self,
        source: &str,
        objects: &[ObjectMeta],
        options: &IngestOptions,
    ) -> Result<Vec<VersionState>, EtlError> {
        let partial = options.partial;
        // The job each child would get: the run's own mode (a source run never dry-runs).
        let mode = JobMode {
            dry_run: false,
            partial,
            allow_mass_delist: options.allow_mass_delist,
        };
        if objects.is_empty() {
            return Ok(Vec::new());
        }
        let keys: Vec<&str> = objects.iter().map(|o| o.key.as_str()).collect();
        let etags: Vec<&str> = objects.iter().map(|o| o.etag.as_str()).collect();
        let job_ids: Vec<uuid::Uuid> = objects
            .iter()
            .map(|o| {
                let workflow_id = ingest_workflow_id(source, &o.bucket, &o.key, &o.etag, mode);
                parse_job_id(&job_id_for_workflow(&workflow_id))
            })
            .collect::<Result<_, _>>()?;
        let rows = sqlx::query(
            "SELECT m.job_id IS NOT NULL AND (m.snapshot OR $6) AS ingested, j.status
             FROM UNNEST($3::text[], $4::text[], $5::uuid[]) WITH ORDINALITY
                  AS l(object_key, etag, job_id, ord)
             LEFT JOIN ingested_objects m
                    ON m.source = $1 AND m.bucket = $2 AND m.object_key = l.object_key
                   AND m.etag = l.etag
             LEFT JOIN etl_jobs j ON j.id = l.job_id
             ORDER BY l.ord",
        )
        .bind(source)
        .bind(&objects[0].bucket)
        .bind(&keys)
        .bind(&etags)
        .bind(&job_ids)
        .bind(partial)
        .fetch_all(self.pool())
        .await?;
        Ok(rows
            .iter()
            .map(|row| {
                let status: Option<String> = row.get("status");
                if row.get::<bool, _>("ingested") {
                    VersionState::Ingested
                } else if matches!(status.as_deref(), Some("failed" | "cancelled")) {
                    VersionState::FailedEarlier
                } else {
                    VersionState::New
                }
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn oldest(modified: i64, key: &str) -> Oldest {
        Oldest(
            DateTime::from_timestamp(modified, 0).unwrap(),
            key.to_owned(),
            "e".to_owned(),
            ObjectKey(ObjectMeta {
                bucket: "b".into(),
                key: key.into(),
                etag: "e".into(),
                size: 1,
                last_modified: String::new(),
            }),
        )
    }

    #[test]
    fn the_heap_keeps_the_oldest_and_orders_ties_by_key() {
        let mut heap = BinaryHeap::new();
        for (t, key) in [(5, "e"), (1, "b"), (3, "c"), (1, "a"), (9, "z")] {
            heap.push(oldest(t, key));
            if heap.len() > 3 {
                heap.pop();
            }
        }
        let kept: Vec<String> = heap.into_sorted_vec().into_iter().map(|o| o.1).collect();
        assert_eq!(kept, ["a", "b", "c"]);
    }
}
