//! What operators see of a run in the Temporal Web UI: the custom search attributes every
//! workflow of the project carries, and the static summary and details of a start. Pure, so
//! the workflows (which upsert and start children) and `etlctl` (which starts) share it.

use temporalio_common::{
    protos::temporal::api::enums::v1::IndexedValueType,
    search_attributes::{SearchAttributeKey, SearchAttributeUpdate, SearchAttributes},
};

use crate::model::{IngestRequest, JobSummary, Rerun, SourceIngestRequest};

pub const SOURCE: SearchAttributeKey<String> = SearchAttributeKey::keyword("CatalogSource");
pub const OBJECT_KEY: SearchAttributeKey<String> = SearchAttributeKey::keyword("CatalogObjectKey");
pub const JOB_ID: SearchAttributeKey<String> = SearchAttributeKey::keyword("CatalogJobId");
pub const DRY_RUN: SearchAttributeKey<bool> = SearchAttributeKey::bool("CatalogDryRun");
/// `completed`, `failed` or `cancelled`, set when the run ends.
pub const OUTCOME: SearchAttributeKey<String> = SearchAttributeKey::keyword("CatalogOutcome");
pub const ROWS_TOTAL: SearchAttributeKey<i64> = SearchAttributeKey::int("CatalogRowsTotal");
pub const ROWS_INVALID: SearchAttributeKey<i64> = SearchAttributeKey::int("CatalogRowsInvalid");

/// Every attribute `etlctl setup` registers, with its type.
pub fn registrations() -> [(&'static str, IndexedValueType); 7] {
    [
        (SOURCE.name(), SOURCE.indexed_value_type()),
        (OBJECT_KEY.name(), OBJECT_KEY.indexed_value_type()),
        (JOB_ID.name(), JOB_ID.indexed_value_type()),
        (DRY_RUN.name(), DRY_RUN.indexed_value_type()),
        (OUTCOME.name(), OUTCOME.indexed_value_type()),
        (ROWS_TOTAL.name(), ROWS_TOTAL.indexed_value_type()),
        (ROWS_INVALID.name(), ROWS_INVALID.indexed_value_type()),
    ]
}

/// How a run of an ingest ended, as `CatalogOutcome` says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunOutcome {
    Completed,
    Failed,
    Cancelled,
}

impl RunOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            RunOutcome::Completed => "completed",
            RunOutcome::Failed => "failed",
            RunOutcome::Cancelled => "cancelled",
        }
    }
}

/// The attributes an ingest carries from its start.
pub fn ingest_started(request: &IngestRequest) -> Vec<SearchAttributeUpdate> {
    vec![
        SOURCE.value_set(request.source.clone()),
        OBJECT_KEY.value_set(request.key.clone()),
        JOB_ID.value_set(request.job_id.clone()),
        DRY_RUN.value_set(request.dry_run),
    ]
}

/// The attributes an ingest adds when it ends: rows counted by its committed chunks.
pub fn ingest_ended(
    outcome: RunOutcome,
    rows_total: u64,
    rows_invalid: u64,
) -> Vec<SearchAttributeUpdate> {
    let int = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
    vec![
        OUTCOME.value_set(outcome.as_str().to_owned()),
        ROWS_TOTAL.value_set(int(rows_total)),
        ROWS_INVALID.value_set(int(rows_invalid)),
    ]
}

/// The attributes a start sets, so the run is found by them before its first workflow task.
pub fn ingest_start_attributes(request: &IngestRequest) -> SearchAttributes {
    SearchAttributes::new(ingest_started(request))
}

/// `etlctl reconcile` runs are found by the job they recount.
pub fn reconcile_start_attributes(job: &JobSummary) -> SearchAttributes {
    SearchAttributes::new([
        SOURCE.value_set(job.source.clone()),
        OBJECT_KEY.value_set(job.object.key.clone()),
        JOB_ID.value_set(job.job_id.clone()),
        DRY_RUN.value_set(job.dry_run),
    ])
}

pub fn source_start_attributes(source: &str) -> SearchAttributes {
    SearchAttributes::new([SOURCE.value_set(source.to_owned())])
}

fn mode(request: &IngestRequest) -> String {
    let mut mode = if request.dry_run {
        "dry run"
    } else if request.options.partial {
        "partial"
    } else {
        "snapshot"
    }
    .to_owned();
    if let Some(supersedes) = &request.supersedes {
        let verb = match supersedes.rerun {
            Rerun::Retry => "retry",
            Rerun::Repair => "repair",
        };
        mode.push_str(&format!(", {verb} of job {}", supersedes.job_id));
    }
    mode
}

/// One line for the Web UI's workflow list: source, object, size and mode.
pub fn ingest_summary(request: &IngestRequest, size: u64) -> String {
    format!(
        "{}: s3://{}/{} ({}, {})",
        request.source,
        request.bucket,
        request.key,
        human_bytes(size),
        mode(request)
    )
}

/// The workflow page's details (Markdown): the object version and how it is chunked.
pub fn ingest_details(request: &IngestRequest, size: u64) -> String {
    let options = &request.options;
    format!(
        "- **Object** `s3://{}/{}`\n\
         - **ETag** `{}`\n\
         - **Size** {} ({size} bytes)\n\
         - **Job** `{}`\n\
         - **Mode** {}\n\
         - **Chunking** {} chunks, {} at a time, records up to {}\n\
         - **Retries** backoff up to {} s, job deadline {} h",
        request.bucket,
        request.key,
        request.etag,
        human_bytes(size),
        request.job_id,
        mode(request),
        human_bytes(options.chunk_bytes),
        options.max_parallel_chunks,
        human_bytes(options.max_record_bytes),
        options.retry_max_interval_secs,
        options.max_job_duration_secs as f64 / 3600.0,
    )
}

/// A source run's line in the workflow list.
pub fn source_summary(request: &SourceIngestRequest) -> String {
    format!(
        "{}: new objects under s3://{}/{}",
        request.source, request.bucket, request.prefix
    )
}

pub fn source_details(request: &SourceIngestRequest) -> String {
    let options = &request.options;
    format!(
        "- **Prefix** `s3://{}/{}`\n\
         - **Objects** up to {} per run, {} at a time, oldest first\n\
         - **Mode** {}\n\
         - **Chunking** {} chunks, {} at a time per object",
        request.bucket,
        request.prefix,
        request.max_objects,
        request.max_parallel_objects,
        if options.partial {
            "partial"
        } else {
            "snapshot"
        },
        human_bytes(options.chunk_bytes),
        options.max_parallel_chunks,
    )
}

/// A chunk's activity summary: which chunk and which bytes of the object.
pub fn chunk_summary(index: u32, chunks: u32, range: Option<[u64; 2]>) -> String {
    match range {
        Some([start, end]) => format!(
            "chunk {} of {chunks}: bytes {start}..{end} ({})",
            index + 1,
            human_bytes(end - start)
        ),
        None => format!("chunk {} of {chunks}", index + 1),
    }
}

/// Binary units with one decimal, as the Web UI shows sizes.
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{IngestOptions, Supersedes};

    fn request() -> IngestRequest {
        IngestRequest {
            job_id: "0b1e".to_owned(),
            source: "cotopaxi".to_owned(),
            bucket: "catalog".to_owned(),
            key: "cotopaxi/2026-11-28.csv".to_owned(),
            etag: "\"abc\"".to_owned(),
            dry_run: false,
            supersedes: None,
            options: IngestOptions::default(),
        }
    }

    #[test]
    fn sizes_read_like_the_web_ui() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1023), "1023 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(8 << 20), "8.0 MiB");
        assert_eq!(human_bytes(3 << 30), "3.0 GiB");
    }

    #[test]
    fn the_summary_names_source_object_size_and_mode() {
        let mut request = request();
        assert_eq!(
            ingest_summary(&request, 5 << 20),
            "cotopaxi: s3://catalog/cotopaxi/2026-11-28.csv (5.0 MiB, snapshot)"
        );
        request.supersedes = Some(Supersedes {
            job_id: "77".to_owned(),
            rerun: Rerun::Retry,
        });
        request.options.partial = true;
        assert!(ingest_summary(&request, 1).ends_with("(1 B, partial, retry of job 77)"));
        request.dry_run = true;
        assert!(ingest_details(&request, 1).contains("- **Mode** dry run, retry of job 77"));
    }

    #[test]
    fn chunk_summaries_count_from_one_and_give_the_byte_range() {
        assert_eq!(
            chunk_summary(0, 3, Some([0, 2048])),
            "chunk 1 of 3: bytes 0..2048 (2.0 KiB)"
        );
        assert_eq!(chunk_summary(2, 3, None), "chunk 3 of 3");
    }

    #[test]
    fn start_and_end_attributes_use_the_registered_names() {
        let started = SearchAttributes::new(ingest_started(&request()));
        assert_eq!(started.get(&SOURCE).as_deref(), Some("cotopaxi"));
        assert_eq!(started.get(&DRY_RUN), Some(false));
        let ended = SearchAttributes::new(ingest_ended(RunOutcome::Failed, 10, 3));
        assert_eq!(ended.get(&OUTCOME).as_deref(), Some("failed"));
        assert_eq!(ended.get(&ROWS_INVALID), Some(3));
        let names: Vec<&str> = registrations().iter().map(|(name, _)| *name).collect();
        for name in started.keys().chain(ended.keys()) {
            assert!(names.contains(&name), "{name} is not registered by setup");
        }
    }
}
