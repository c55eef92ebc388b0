//! Typed errors of the activities, each mapped on purpose to retryable or not.
//!
//! Retryable: anything a later attempt can fix (network, a service restarting, a deadlock, a
//! worker dying). Non-retryable: the input or the object is wrong and retrying cannot change it.

use temporalio_sdk::ApplicationFailure;
use temporalio_sdk::activities::ActivityError;

#[derive(Debug, thiserror::Error)]
pub enum EtlError {
    #[error("object s3://{bucket}/{key} not found")]
    ObjectNotFound { bucket: String, key: String },
    #[error(
        "source changed: s3://{bucket}/{key} no longer has ETag {expected} (the object was \
         replaced during the job); the job stops so two versions are never mixed"
    )]
    SourceChanged {
        bucket: String,
        key: String,
        expected: String,
    },
    #[error("object s3://{bucket}/{key} is empty (0 bytes): a catalog needs at least a header")]
    EmptyObject { bucket: String, key: String },
    #[error("bad header in s3://{bucket}/{key}: {reason}")]
    BadHeader {
        bucket: String,
        key: String,
        reason: String,
    },
    #[error("chunk {chunk} of job {job_id}: {reason}")]
    PlanMismatch {
        job_id: String,
        chunk: u32,
        reason: String,
    },
    #[error("job {0} not found")]
    JobNotFound(String),
    #[error("S3 request failed: {0}")]
    S3(String),
    #[error("Postgres: {0}")]
    Postgres(#[from] sqlx::Error),
    #[error("ClickHouse: {0}")]
    ClickHouse(#[from] clickhouse::error::Error),
    #[error("reconciliation failed: {0}")]
    Reconciliation(String),
    /// An operator asked for something the job's state does not allow (e.g. retrying a
    /// completed job).
    #[error("{0}")]
    NotAllowed(String),
}

impl EtlError {
    pub fn is_retryable(&self) -> bool {
        match self {
            EtlError::ObjectNotFound { .. }
            | EtlError::SourceChanged { .. }
            | EtlError::EmptyObject { .. }
            | EtlError::BadHeader { .. }
            | EtlError::PlanMismatch { .. }
            | EtlError::JobNotFound(_)
            | EtlError::Reconciliation(_)
            | EtlError::NotAllowed(_) => false,
            EtlError::S3(_) | EtlError::ClickHouse(_) => true,
            EtlError::Postgres(err) => postgres_is_retryable(err),
        }
    }
}

/// A data or constraint error from Postgres repeats on every attempt; connection trouble,
/// serialization failures and deadlocks do not.
fn postgres_is_retryable(err: &sqlx::Error) -> bool {
    match err {
        sqlx::Error::Database(db) => {
            let code = db.code().unwrap_or_default();
            !(code.starts_with("22") || code.starts_with("23") || code.starts_with("42"))
        }
        sqlx::Error::ColumnDecode { .. }
        | sqlx::Error::Decode(_)
        | sqlx::Error::TypeNotFound { .. } => false,
        _ => true,
    }
}

impl EtlError {
    /// The SDK converts any `std::error::Error` into a retryable failure; this makes the
    /// retryable/non-retryable choice explicit instead.
    pub fn into_activity_error(self) -> ActivityError {
        let retryable = self.is_retryable();
        let message = self.to_string();
        if retryable {
            ActivityError::application(ApplicationFailure::new(message))
        } else {
            ActivityError::application(ApplicationFailure::non_retryable(message))
        }
    }
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
}
