//! Postgres, the system of record: jobs and their plan (`jobs`), the chunk ledger and a chunk's
//! commit (`chunks`), the current catalog with its versions and digests (`catalog`), and a
//! job's end with its delisting (`completion`).
//!
//! All statements are parameterised; input never becomes SQL text.

mod catalog;
mod chunks;
mod completion;
mod jobs;
mod new_rows;
mod unchanged;

use std::str::FromStr;

use chrono::{DateTime, Utc};
use sqlx::{
    Connection, PgPool,
    postgres::{PgConnectOptions, PgPoolOptions},
};

pub use catalog::{CatalogItemRow, CatalogRead, WrittenItem};
pub use chunks::{Begun, ChunkCommit, ChunkWork, CopyStanding};
pub use completion::{Completion, DelistedItem, EndedJob};
pub use jobs::{JobFacts, JobState, PlanWriter, SharedMentions, SourceActivity, mode_words};

use crate::{
    config::{Config, STARTUP_CHECK_TIMEOUT},
    error::EtlError,
    model::ObjectMeta,
};

pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations");

/// A session left idle inside a transaction this long is ended by the server: a chunk attempt
/// that froze holding its locks (a zombie) cannot block the retry forever.
const IDLE_IN_TRANSACTION_TIMEOUT_MS: &str = "600000";

/// Set differences and distinct counts over a job's skus (reconcile, delisting) hash a few
/// hundred thousand keys: enough memory keeps them out of temporary files.
const WORK_MEM: &str = "32MB";

/// The worker's statements are short and repeated per chunk: compiling one with JIT (when its
/// estimated cost passes `jit_above_cost`, as the unchanged-item lookup's does) took 8 ms of
/// its 31 ms, every time.
const JIT: &str = "off";

#[derive(Clone, Debug)]
pub struct PgStore {
    pool: PgPool,
}

/// Where an object stands among its source's objects: Last-Modified at the store's full
/// precision, then key, then ETag (the contract's order). Rows add their row number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectVersion {
    pub modified_at: DateTime<Utc>,
    pub key: String,
    pub etag: String,
}

impl ObjectVersion {
    pub fn of(object: &ObjectMeta) -> Result<Self, EtlError> {
        Ok(Self {
            modified_at: parse_time(&object.last_modified).ok_or_else(|| {
                EtlError::MissingLastModified {
                    bucket: object.bucket.clone(),
                    key: object.key.clone(),
                }
            })?,
            key: object.key.clone(),
            etag: object.etag.clone(),
        })
    }
}

impl PgStore {
    /// Connects (TLS as `DATABASE_URL`'s `sslmode` / `sslrootcert` say) and checks the
    /// connection, so a bad URL, password or certificate fails at start-up.
    pub async fn connect(config: &Config) -> Result<Self, EtlError> {
        let options = PgConnectOptions::from_str(config.database_url.expose())?
            .application_name("catalog-etl")
            .options([
                (
                    "idle_in_transaction_session_timeout",
                    IDLE_IN_TRANSACTION_TIMEOUT_MS,
                ),
                ("work_mem", WORK_MEM),
                ("jit", JIT),
            ]);
        let pool = PgPoolOptions::new()
            .max_connections((config.max_concurrent_activities as u32 + 2).max(4))
            .acquire_timeout(STARTUP_CHECK_TIMEOUT)
            // A connection keeps its buffers at the largest message it ever carried: a chunk's
            // catalog write binds megabytes of arrays, so without this every pooled connection
            // would hold a chunk's worth of memory for good.
            .after_release(|connection, _| {
                Box::pin(async move {
                    connection.shrink_buffers();
                    Ok(true)
                })
            })
            .connect_with(options)
            .await?;
        Ok(Self { pool })
    }

    pub fn from_pool(pool: PgPool) -> Self {
        Self { pool }
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    pub async fn migrate(&self) -> Result<(), EtlError> {
        MIGRATOR
            .run(&self.pool)
            .await
            .map_err(|err| EtlError::Postgres(sqlx::Error::Migrate(Box::new(err))))
    }
}

pub fn parse_job_id(job_id: &str) -> Result<uuid::Uuid, EtlError> {
    uuid::Uuid::parse_str(job_id).map_err(|_| EtlError::JobNotFound(job_id.to_owned()))
}

/// Timestamps in summaries: RFC 3339, UTC, milliseconds.
pub fn timestamp(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

pub(crate) fn parse_time(rfc3339: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(rfc3339)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}
