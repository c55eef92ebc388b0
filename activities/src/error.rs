//! Typed errors of the activities, each mapped on purpose to retryable or not, and each with a
//! failure type name: the `ApplicationFailure` type the Web UI shows and scripts match on.
//!
//! Retryable: anything a later attempt can fix (network, a service restarting or overloaded, a
//! deadlock, a worker dying). These are retried without an attempt cap until the job's deadline,
//! so an outage of hours makes a job wait. Non-retryable: the input, the object or the schema is
//! wrong and retrying cannot change it.

use temporalio_sdk::ApplicationFailure;
use temporalio_sdk::activities::ActivityError;

use crate::planner::RecordTooLarge;

#[derive(Debug, thiserror::Error)]
pub enum EtlError {
    #[error("object s3://{bucket}/{key} not found")]
    ObjectNotFound { bucket: String, key: String },
    #[error("bucket {0} does not exist")]
    BucketNotFound(String),
    #[error("access to s3://{bucket}/{key} is forbidden: {detail}")]
    ObjectForbidden {
        bucket: String,
        key: String,
        detail: String,
    },
    #[error(
        "source changed: s3://{bucket}/{key} no longer has ETag {expected} (the object was \
         replaced during the job); the job stops so two versions are never mixed"
    )]
    SourceChanged {
        bucket: String,
        key: String,
        expected: String,
    },
    #[error(
        "object s3://{bucket}/{key} has no Last-Modified time: its version cannot be ordered \
         against the source's other objects"
    )]
    MissingLastModified { bucket: String, key: String },
    #[error("object s3://{bucket}/{key} is empty (0 bytes): a catalog needs at least a header")]
    EmptyObject { bucket: String, key: String },
    #[error("bad header in s3://{bucket}/{key}: {reason}")]
    BadHeader {
        bucket: String,
        key: String,
        reason: String,
    },
    #[error("s3://{bucket}/{key}: {source}")]
    RecordTooLarge {
        bucket: String,
        key: String,
        source: RecordTooLarge,
    },
    #[error("chunk {chunk} of job {job_id}: {reason}")]
    PlanMismatch {
        job_id: String,
        chunk: u32,
        reason: String,
    },
    #[error("job {0} not found")]
    JobNotFound(String),
    /// A request names a job that exists for something else (another object, ETag or mode).
    #[error("{0}")]
    JobConflict(String),
    /// Another attempt of the chunk took over (this one outlived its lease), or the job was
    /// sealed: this attempt must not write anything.
    #[error("chunk {chunk} of job {job_id}: {reason}")]
    StaleAttempt {
        job_id: String,
        chunk: u32,
        reason: String,
    },
    #[error("S3 request failed: {0}")]
    S3(String),
    #[error("Postgres: {0}")]
    Postgres(#[from] sqlx::Error),
    #[error("ClickHouse: {0}")]
    ClickHouse(#[from] clickhouse::error::Error),
    /// Work that must finish before this step can run is still under way (e.g. another job of
    /// the source is between its Postgres commit and its ClickHouse copy); the step waits.
    #[error("{0}")]
    NotYet(String),
    #[error("reconciliation failed: {0}")]
    Reconciliation(String),
    /// An operator asked for something the job's state does not allow.
    #[error("{0}")]
    NotAllowed(String),
    #[error("Temporal: {0}")]
    Temporal(String),
}

/// Failure type names: stable identifiers in Temporal (`ApplicationFailure` type), on the job
/// row (`error_type`) and in the README.
pub mod failure_type {
    pub const OBJECT_NOT_FOUND: &str = "object_not_found";
    pub const BUCKET_NOT_FOUND: &str = "bucket_not_found";
    pub const OBJECT_FORBIDDEN: &str = "object_forbidden";
    pub const SOURCE_CHANGED: &str = "source_changed";
    pub const MISSING_LAST_MODIFIED: &str = "missing_last_modified";
    pub const EMPTY_OBJECT: &str = "empty_object";
    pub const BAD_HEADER: &str = "bad_header";
    pub const RECORD_TOO_LARGE: &str = "record_too_large";
    pub const PLAN_MISMATCH: &str = "plan_mismatch";
    pub const JOB_NOT_FOUND: &str = "job_not_found";
    pub const JOB_CONFLICT: &str = "job_conflict";
    pub const STALE_ATTEMPT: &str = "stale_attempt";
    pub const S3_UNAVAILABLE: &str = "s3_unavailable";
    pub const POSTGRES_UNAVAILABLE: &str = "postgres_unavailable";
    pub const POSTGRES_SCHEMA_MISMATCH: &str = "postgres_schema_mismatch";
    pub const CLICKHOUSE_UNAVAILABLE: &str = "clickhouse_unavailable";
    pub const CLICKHOUSE_SCHEMA_MISMATCH: &str = "clickhouse_schema_mismatch";
    pub const NOT_YET: &str = "not_yet";
    pub const RECONCILIATION_FAILED: &str = "reconciliation_failed";
    pub const NOT_ALLOWED: &str = "not_allowed";
    /// Set by the workflow, not by an activity: the job ran past `--max-job-duration`.
    pub const DEADLINE_EXCEEDED: &str = "deadline_exceeded";
    /// Set by the workflow: an activity failed in a way the workflow could not classify.
    pub const INTERNAL: &str = "internal";
    /// Set by a workflow run that found its job ended (`failed` or `cancelled`) already.
    pub const JOB_ENDED: &str = "job_ended";
    pub const TEMPORAL_UNAVAILABLE: &str = "temporal_unavailable";
    /// Set by the watchdog on a job whose workflow was closed without ending it.
    pub const WORKFLOW_TERMINATED: &str = "workflow_terminated";
    pub const WORKFLOW_TIMED_OUT: &str = "workflow_timed_out";
    pub const WORKFLOW_CLOSED: &str = "workflow_closed";
    pub const WORKFLOW_LOST: &str = "workflow_lost";
}

impl EtlError {
    pub fn failure_type(&self) -> &'static str {
        use failure_type::*;
        match self {
            EtlError::ObjectNotFound { .. } => OBJECT_NOT_FOUND,
            EtlError::BucketNotFound(_) => BUCKET_NOT_FOUND,
            EtlError::ObjectForbidden { .. } => OBJECT_FORBIDDEN,
            EtlError::SourceChanged { .. } => SOURCE_CHANGED,
            EtlError::MissingLastModified { .. } => MISSING_LAST_MODIFIED,
            EtlError::EmptyObject { .. } => EMPTY_OBJECT,
            EtlError::BadHeader { .. } => BAD_HEADER,
            EtlError::RecordTooLarge { .. } => RECORD_TOO_LARGE,
            EtlError::PlanMismatch { .. } => PLAN_MISMATCH,
            EtlError::JobNotFound(_) => JOB_NOT_FOUND,
            EtlError::JobConflict(_) => JOB_CONFLICT,
            EtlError::StaleAttempt { .. } => STALE_ATTEMPT,
            EtlError::S3(_) => S3_UNAVAILABLE,
            EtlError::Postgres(err) if postgres_is_transient(err) => POSTGRES_UNAVAILABLE,
            EtlError::Postgres(_) => POSTGRES_SCHEMA_MISMATCH,
            EtlError::ClickHouse(err) if clickhouse_is_transient(err) => CLICKHOUSE_UNAVAILABLE,
            EtlError::ClickHouse(_) => CLICKHOUSE_SCHEMA_MISMATCH,
            EtlError::NotYet(_) => NOT_YET,
            EtlError::Reconciliation(_) => RECONCILIATION_FAILED,
            EtlError::NotAllowed(_) => NOT_ALLOWED,
            EtlError::Temporal(_) => TEMPORAL_UNAVAILABLE,
        }
    }

    pub fn is_retryable(&self) -> bool {
        match self {
            EtlError::S3(_)
            | EtlError::NotYet(_)
            | EtlError::StaleAttempt { .. }
            | EtlError::Temporal(_) => true,
            EtlError::Postgres(err) => postgres_is_transient(err),
            EtlError::ClickHouse(err) => clickhouse_is_transient(err),
            EtlError::ObjectNotFound { .. }
            | EtlError::BucketNotFound(_)
            | EtlError::ObjectForbidden { .. }
            | EtlError::SourceChanged { .. }
            | EtlError::MissingLastModified { .. }
            | EtlError::EmptyObject { .. }
            | EtlError::BadHeader { .. }
            | EtlError::RecordTooLarge { .. }
            | EtlError::PlanMismatch { .. }
            | EtlError::JobNotFound(_)
            | EtlError::JobConflict(_)
            | EtlError::Reconciliation(_)
            | EtlError::NotAllowed(_) => false,
        }
    }

    /// The SDK turns any `std::error::Error` into a retryable failure without a type; this
    /// makes both choices explicit.
    pub fn into_activity_error(self) -> ActivityError {
        let failure = ApplicationFailure::builder(self.to_string())
            .type_name(self.failure_type().to_owned())
            .non_retryable(!self.is_retryable())
            .build();
        ActivityError::application(failure)
    }
}

/// Connection trouble, shutdowns, overload, serialization failures and deadlocks pass; data,
/// constraint and schema errors (SQLSTATE classes 22, 23, 42, ...) repeat on every attempt.
fn postgres_is_transient(err: &sqlx::Error) -> bool {
    match err {
        sqlx::Error::Database(db) => {
            let code = db.code().unwrap_or_default();
            // 08 connection, 40 serialization / deadlock, 53 resources, 57 shutdown or
            // cancel, 58 system, 55P03 lock timeout, 25P03 idle-in-transaction timeout.
            ["08", "40", "53", "57", "58"]
                .iter()
                .any(|class| code.starts_with(class))
                || matches!(code.as_ref(), "55P03" | "25P03")
        }
        sqlx::Error::ColumnDecode { .. }
        | sqlx::Error::ColumnNotFound(_)
        | sqlx::Error::ColumnIndexOutOfBounds { .. }
        | sqlx::Error::Decode(_)
        | sqlx::Error::Encode(_)
        | sqlx::Error::TypeNotFound { .. }
        | sqlx::Error::RowNotFound
        | sqlx::Error::Configuration(_)
        | sqlx::Error::Migrate(_) => false,
        _ => true,
    }
}

/// ClickHouse server error codes that a later attempt can pass: timeouts, network, overload,
/// too many parts or queries, memory limits, a server shutting down or a table being
/// restarted.
const CLICKHOUSE_TRANSIENT_CODES: &[u32] = &[
    3, 159, 160, 164, 202, 203, 209, 210, 241, 242, 252, 285, 319, 425, 439, 735, 999,
];

fn clickhouse_is_transient(err: &clickhouse::error::Error) -> bool {
    use clickhouse::error::Error;
    match err {
        Error::Network(_) | Error::TimedOut | Error::Decompression(_) | Error::Compression(_) => {
            true
        }
        Error::BadResponse(text) => match clickhouse_code(text) {
            Some(code) => CLICKHOUSE_TRANSIENT_CODES.contains(&code),
            // No server code: a proxy or load balancer answered (502, 503, 429, ...).
            None => true,
        },
        _ => false,
    }
}

/// The `Code: N.` a ClickHouse server puts at the start of its error messages.
fn clickhouse_code(text: &str) -> Option<u32> {
    let rest = &text[text.find("Code: ")? + "Code: ".len()..];
    let digits = rest.split(|c: char| !c.is_ascii_digit()).next()?;
    digits.parse().ok()
}

/// An error and its causes on one line, each cause once: our messages already embed their
/// source's text, and `{:#}` would repeat it.
pub fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut message = err.to_string();
    let mut cause = err.source();
    while let Some(source) = cause {
        let text = source.to_string();
        if !message.contains(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        cause = source.source();
    }
    message
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_chain_names_each_cause_once() {
        let err = EtlError::S3("bucket x does not exist".to_owned());
        assert_eq!(
            error_chain(&err),
            "S3 request failed: bucket x does not exist"
        );
        let io = std::io::Error::other("connection refused");
        let wrapped = sqlx::Error::Io(io);
        let err = EtlError::Postgres(wrapped);
        assert_eq!(
            error_chain(&err),
            "Postgres: error communicating with database: connection refused"
        );
    }

    #[test]
    fn outages_are_retried_and_named_input_errors_are_not() {
        let down = EtlError::Postgres(sqlx::Error::Io(std::io::Error::other("refused")));
        assert!(down.is_retryable());
        assert_eq!(down.failure_type(), "postgres_unavailable");
        let timeout = EtlError::ClickHouse(clickhouse::error::Error::BadResponse(
            "Code: 159. DB::Exception: Timeout exceeded".to_owned(),
        ));
        assert!(timeout.is_retryable());
        let schema = EtlError::ClickHouse(clickhouse::error::Error::BadResponse(
            "Code: 16. DB::Exception: No such column price".to_owned(),
        ));
        assert!(!schema.is_retryable());
        assert_eq!(schema.failure_type(), "clickhouse_schema_mismatch");
        let proxy = EtlError::ClickHouse(clickhouse::error::Error::BadResponse(
            "502 Bad Gateway".to_owned(),
        ));
        assert!(proxy.is_retryable());
        let gone = EtlError::SourceChanged {
            bucket: "b".into(),
            key: "k".into(),
            expected: "\"e\"".into(),
        };
        assert!(!gone.is_retryable());
        assert_eq!(gone.failure_type(), "source_changed");
    }

    #[test]
    fn clickhouse_codes_are_read_from_the_message() {
        assert_eq!(
            clickhouse_code("Code: 241. DB::Exception: Memory"),
            Some(241)
        );
        assert_eq!(clickhouse_code("bad gateway"), None);
    }
}
