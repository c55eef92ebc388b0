//! Configuration from environment variables, checked once at start-up.
//!
//! Every variable has a working default for the local stack (`make env`). Secrets are held in
//! [`Secret`], whose `Debug` prints a placeholder, so logging a config never leaks them.

use std::{env, fmt, time::Duration};

use crate::pause::PausePoint;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{name} is invalid: {reason}")]
    Invalid { name: &'static str, reason: String },
}

#[derive(Clone, Default)]
pub struct Secret(String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_empty() { "\"\"" } else { "\"***\"" })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClickHouseCompression {
    None,
    Lz4,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub temporal_address: String,
    pub temporal_namespace: String,
    pub task_queue: String,
    pub temporal_ui_url: String,
    pub database_url: Secret,
    pub clickhouse_url: String,
    pub clickhouse_database: String,
    pub clickhouse_user: String,
    pub clickhouse_password: Secret,
    pub clickhouse_compression: ClickHouseCompression,
    pub clickhouse_validation: bool,
    pub s3_endpoint: Option<String>,
    pub s3_region: String,
    pub s3_access_key_id: String,
    pub s3_secret_access_key: Secret,
    pub s3_force_path_style: bool,
    /// Chunk activities one worker runs at once; bounds worker memory to about this many chunks.
    pub max_concurrent_activities: usize,
    /// Buckets the worker checks at start-up (`ETL_CHECK_BUCKETS`, comma-separated), so missing
    /// buckets or wrong credentials fail at once instead of inside the first job.
    pub check_buckets: Vec<String>,
    /// `ETL_PAUSE_AT`: a step where the worker stops for fault-injection tests (never set in
    /// production).
    pub pause_at: Option<PausePoint>,
}

pub const DEFAULT_ACCESS_KEY_ID: &str = "GK0123456789abcdef01234567";
const DEFAULT_SECRET_ACCESS_KEY: &str =
    "c933ca7a9b1c21c41994572cddfaaa7785b592d3dfb39388e3836e7c273f0c72";

fn var(name: &'static str, default: &str) -> String {
    env::var(name).unwrap_or_else(|_| default.to_owned())
}

fn parse_bool(name: &'static str, default: bool) -> Result<bool, ConfigError> {
    match env::var(name) {
        Err(_) => Ok(default),
        Ok(v) => match v.trim().to_ascii_lowercase().as_str() {
            "1" | "true" | "yes" | "on" => Ok(true),
            "0" | "false" | "no" | "off" => Ok(false),
            other => Err(ConfigError::Invalid {
                name,
                reason: format!("expected true or false, got {other:?}"),
            }),
        },
    }
}

fn require_url(name: &'static str, value: &str) -> Result<(), ConfigError> {
    if value.starts_with("http://") || value.starts_with("https://") {
        Ok(())
    } else {
        Err(ConfigError::Invalid {
            name,
            reason: format!("expected an http:// or https:// URL, got {value:?}"),
        })
    }
}

impl Config {
    pub fn from_env() -> Result<Self, ConfigError> {
        let temporal_address = var("TEMPORAL_ADDRESS", "http://127.0.0.1:7233");
        let temporal_address = if temporal_address.contains("://") {
            temporal_address
        } else {
            format!("http://{temporal_address}")
        };
        let clickhouse_url = var("CLICKHOUSE_URL", "http://127.0.0.1:8123");
        require_url("CLICKHOUSE_URL", &clickhouse_url)?;
        let s3_endpoint = match env::var("S3_ENDPOINT") {
            Ok(v) if v.is_empty() => None,
            Ok(v) => Some(v),
            Err(_) => Some("http://127.0.0.1:3900".to_owned()),
        };
        if let Some(endpoint) = &s3_endpoint {
            require_url("S3_ENDPOINT", endpoint)?;
        }
        let database_url = var(
            "DATABASE_URL",
            "postgres://postgres@127.0.0.1:5432/catalog_etl",
        );
        if !(database_url.starts_with("postgres://") || database_url.starts_with("postgresql://")) {
            return Err(ConfigError::Invalid {
                name: "DATABASE_URL",
                reason: "expected a postgres:// URL".to_owned(),
            });
        }
        let clickhouse_compression = match var("CLICKHOUSE_COMPRESSION", "none").as_str() {
            "none" | "" => ClickHouseCompression::None,
            "lz4" => ClickHouseCompression::Lz4,
            other => {
                return Err(ConfigError::Invalid {
                    name: "CLICKHOUSE_COMPRESSION",
                    reason: format!("expected none or lz4, got {other:?}"),
                });
            }
        };
        let max_concurrent_activities = var("ETL_MAX_CONCURRENT_ACTIVITIES", "4")
            .parse::<usize>()
            .ok()
            .filter(|n| *n > 0)
            .ok_or(ConfigError::Invalid {
                name: "ETL_MAX_CONCURRENT_ACTIVITIES",
                reason: "expected a positive integer".to_owned(),
            })?;
        let pause_at = match env::var("ETL_PAUSE_AT") {
            Ok(v) if !v.is_empty() => Some(v.parse().map_err(|reason| ConfigError::Invalid {
                name: "ETL_PAUSE_AT",
                reason,
            })?),
            _ => None,
        };
        Ok(Self {
            temporal_address,
            temporal_namespace: var("TEMPORAL_NAMESPACE", "default"),
            task_queue: var("ETL_TASK_QUEUE", "catalog-etl"),
            temporal_ui_url: var("TEMPORAL_UI_URL", "http://127.0.0.1:8233"),
            database_url: Secret(database_url),
            clickhouse_url,
            clickhouse_database: var("CLICKHOUSE_DATABASE", "catalog_etl"),
            clickhouse_user: var("CLICKHOUSE_USER", "default"),
            clickhouse_password: Secret(var("CLICKHOUSE_PASSWORD", "")),
            clickhouse_compression,
            clickhouse_validation: parse_bool("CLICKHOUSE_VALIDATION", false)?,
            s3_endpoint,
            s3_region: var("S3_REGION", "garage"),
            s3_access_key_id: var("AWS_ACCESS_KEY_ID", DEFAULT_ACCESS_KEY_ID),
            s3_secret_access_key: Secret(var("AWS_SECRET_ACCESS_KEY", DEFAULT_SECRET_ACCESS_KEY)),
            s3_force_path_style: parse_bool("S3_FORCE_PATH_STYLE", true)?,
            max_concurrent_activities,
            check_buckets: var("ETL_CHECK_BUCKETS", "catalog")
                .split(',')
                .map(str::trim)
                .filter(|b| !b.is_empty())
                .map(str::to_owned)
                .collect(),
            pause_at,
        })
    }

    /// Link to a workflow in the Temporal Web UI.
    pub fn workflow_ui_link(&self, workflow_id: &str) -> String {
        format!(
            "{}/namespaces/{}/workflows/{}",
            self.temporal_ui_url.trim_end_matches('/'),
            self.temporal_namespace,
            workflow_id
        )
    }

    pub fn schedule_ui_link(&self, schedule_id: &str) -> String {
        format!(
            "{}/namespaces/{}/schedules/{}",
            self.temporal_ui_url.trim_end_matches('/'),
            self.temporal_namespace,
            schedule_id
        )
    }
}

/// Bounded wait used by start-up checks so a bad endpoint fails within seconds.
pub const STARTUP_CHECK_TIMEOUT: Duration = Duration::from_secs(10);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_never_show_in_debug_output() {
        let secret = Secret("hunter2-very-secret".to_owned());
        assert_eq!(format!("{secret:?}"), "\"***\"");
        assert!(!format!("{:?}", Secret::default()).contains("***"));
    }
}
