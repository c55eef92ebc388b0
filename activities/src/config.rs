//! Configuration from environment variables, checked once at start-up.
//!
//! The binaries carry no endpoint and no credential: every service a command uses must be
//! configured (`make env` prints the local stack's settings), and a missing variable fails at
//! once, naming every missing variable together. Secrets are held in [`Secret`], whose `Debug`
//! prints a placeholder, so logging a config never leaks them.

use std::{env, fmt, net::SocketAddr, path::PathBuf, time::Duration};

use temporalio_client::envconfig::{ClientConfigProfile, LoadClientConfigProfileOptions};
use temporalio_common::envconfig::load_client_config_profile;

use crate::pause::PausePoint;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{name} is invalid: {reason}")]
    Invalid { name: &'static str, reason: String },
    #[error("missing configuration: {} (run `eval \"$(make -s env)\"` for the local stack)", .0.join(", "))]
    Missing(Vec<&'static str>),
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

/// The services a command talks to: only their settings are required.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Needs {
    pub temporal: bool,
    pub postgres: bool,
    pub clickhouse: bool,
    pub s3: bool,
}

impl Needs {
    pub const ALL: Needs = Needs {
        temporal: true,
        postgres: true,
        clickhouse: true,
        s3: true,
    };
    pub const NONE: Needs = Needs {
        temporal: false,
        postgres: false,
        clickhouse: false,
        s3: false,
    };
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// Temporal's standard client settings: `TEMPORAL_ADDRESS`, `TEMPORAL_NAMESPACE`,
/// `TEMPORAL_API_KEY`, `TEMPORAL_TLS*`, `TEMPORAL_PROFILE` and `TEMPORAL_CONFIG_FILE`
/// (`temporal.toml` profiles), read by the SDK's envconfig.
#[derive(Clone)]
pub struct TemporalConfig {
    pub profile: ClientConfigProfile,
}

impl TemporalConfig {
    pub fn address(&self) -> &str {
        self.profile.address.as_deref().unwrap_or_default()
    }

    pub fn namespace(&self) -> &str {
        self.profile.namespace.as_deref().unwrap_or("default")
    }
}

impl fmt::Debug for TemporalConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TemporalConfig")
            .field("address", &self.address())
            .field("namespace", &self.namespace())
            .field("api_key", &self.profile.api_key.as_ref().map(|_| "***"))
            .field("tls", &self.profile.tls.is_some())
            .finish()
    }
}

#[derive(Debug, Clone)]
pub struct Config {
    pub temporal: TemporalConfig,
    pub task_queue: String,
    /// Base of the Web UI links `etlctl` prints (`TEMPORAL_UI_URL`); no links when unset.
    pub temporal_ui_url: Option<String>,
    pub database_url: Secret,
    pub clickhouse_url: String,
    pub clickhouse_database: String,
    pub clickhouse_user: String,
    pub clickhouse_password: Secret,
    /// Extra CA (PEM) trusted for `https://` ClickHouse URLs, besides the system roots.
    pub clickhouse_ca_file: Option<PathBuf>,
    /// LZ4 on the wire to ClickHouse (`CLICKHOUSE_COMPRESSION`).
    pub clickhouse_lz4: bool,
    /// `None`: AWS itself; otherwise the S3 API endpoint (R2, Garage, MinIO, ...).
    pub s3_endpoint: Option<String>,
    pub s3_region: String,
    pub s3_access_key_id: String,
    pub s3_secret_access_key: Secret,
    pub s3_force_path_style: bool,
    /// Extra CA (PEM) trusted for an `https://` S3 endpoint, besides the system roots.
    pub s3_ca_file: Option<PathBuf>,
    /// Chunk activities one worker runs at once; bounds worker memory to about this many chunks.
    pub max_concurrent_activities: usize,
    /// How many mention hashes a plan keeps in memory to find the shared ones itself; a plan
    /// with more hands them to Postgres (`0`: always).
    pub plan_mentions_in_memory: usize,
    /// Buckets the worker checks at start-up (`ETL_CHECK_BUCKETS`, comma-separated), so missing
    /// buckets or wrong credentials fail at once instead of inside the first job.
    pub check_buckets: Vec<String>,
    /// Where the worker serves Prometheus metrics (`ETL_METRICS_ADDR`); `None` when empty.
    pub metrics_addr: Option<SocketAddr>,
    pub log_format: LogFormat,
    /// `ETL_PAUSE_AT`: a step where the worker holds its activities, for fault-injection tests
    /// (never set in production).
    pub pause_at: Option<PausePoint>,
    /// `ETL_PAUSE_GATE`: a directory through which a test releases the activities held at
    /// `ETL_PAUSE_AT` one by one (see [`crate::pause`]).
    pub pause_gate: Option<PathBuf>,
}

pub const DEFAULT_METRICS_ADDR: &str = "127.0.0.1:9464";

/// Reads the environment, collecting every missing required variable.
struct Env {
    missing: Vec<&'static str>,
}

impl Env {
    fn optional(&self, name: &'static str) -> Option<String> {
        env::var(name).ok().filter(|v| !v.trim().is_empty())
    }

    fn or(&self, name: &'static str, default: &str) -> String {
        self.optional(name).unwrap_or_else(|| default.to_owned())
    }

    /// A required variable: recorded as missing when `needed` and unset (or empty).
    fn required(&mut self, needed: bool, name: &'static str) -> String {
        match self.optional(name) {
            Some(value) => value,
            None => {
                if needed {
                    self.missing.push(name);
                }
                String::new()
            }
        }
    }

    fn bool(&self, name: &'static str, default: bool) -> Result<bool, ConfigError> {
        match self.optional(name) {
            None => Ok(default),
            Some(v) => match v.trim().to_ascii_lowercase().as_str() {
                "1" | "true" | "yes" | "on" => Ok(true),
                "0" | "false" | "no" | "off" => Ok(false),
                other => Err(ConfigError::Invalid {
                    name,
                    reason: format!("expected true or false, got {other:?}"),
                }),
            },
        }
    }

    /// A whole number, at least `least`.
    fn count(
        &self,
        name: &'static str,
        default: usize,
        least: usize,
    ) -> Result<usize, ConfigError> {
        match self.optional(name) {
            None => Ok(default),
            Some(v) => v
                .trim()
                .parse::<usize>()
                .ok()
                .filter(|n| *n >= least)
                .ok_or_else(|| ConfigError::Invalid {
                    name,
                    reason: format!("expected a whole number of at least {least}, got {v:?}"),
                }),
        }
    }

    fn file(&self, name: &'static str) -> Result<Option<PathBuf>, ConfigError> {
        let Some(path) = self.optional(name).map(PathBuf::from) else {
            return Ok(None);
        };
        if !path.is_file() {
            return Err(ConfigError::Invalid {
                name,
                reason: format!("{} is not a readable file", path.display()),
            });
        }
        Ok(Some(path))
    }

    fn directory(&self, name: &'static str) -> Result<Option<PathBuf>, ConfigError> {
        let Some(path) = self.optional(name).map(PathBuf::from) else {
            return Ok(None);
        };
        if !path.is_dir() {
            return Err(ConfigError::Invalid {
                name,
                reason: format!("{} is not a directory", path.display()),
            });
        }
        Ok(Some(path))
    }
}

/// Without `sslmode`, Postgres clients use `prefer`: TLS if the server offers it, plaintext
/// (password included) if it does not, to any host. Off the machine that is refused: the
/// choice is the operator's to write down.
fn require_sslmode_off_loopback(database_url: &str) -> Result<(), ConfigError> {
    let invalid = |reason: String| ConfigError::Invalid {
        name: "DATABASE_URL",
        reason,
    };
    let url = url::Url::parse(database_url).map_err(|err| {
        invalid(format!(
            "not a URL ({err}); expected postgres://user@host/db"
        ))
    })?;
    let query: Vec<(String, String)> = url.query_pairs().into_owned().collect();
    if query.iter().any(|(key, _)| key == "sslmode") {
        return Ok(());
    }
    // `?host=/var/run/postgresql` is a Unix socket: nothing crosses a network.
    let socket = query
        .iter()
        .any(|(key, value)| key == "host" && value.starts_with('/'));
    let host = url.host_str().unwrap_or_default();
    if socket || host.is_empty() || host_is_loopback(host) {
        return Ok(());
    }
    Err(invalid(format!(
        "the host {host} is not this machine and no sslmode is set, so the connection could \
         fall back to plaintext: add sslmode=verify-full (with sslrootcert=<CA file> for a \
         private CA), or state sslmode=require or sslmode=disable deliberately"
    )))
}

fn host_is_loopback(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

fn url_host_is_loopback(url: &str) -> bool {
    url::Url::parse(url)
        .ok()
        .and_then(|url| url.host_str().map(host_is_loopback))
        .unwrap_or(false)
}

fn require_url(name: &'static str, value: &str) -> Result<(), ConfigError> {
    if value.is_empty() || value.starts_with("http://") || value.starts_with("https://") {
        Ok(())
    } else {
        Err(ConfigError::Invalid {
            name,
            reason: format!("expected an http:// or https:// URL, got {value:?}"),
        })
    }
}

fn load_temporal(
    needed: bool,
    missing: &mut Vec<&'static str>,
) -> Result<TemporalConfig, ConfigError> {
    let profile = load_client_config_profile(LoadClientConfigProfileOptions::default(), None)
        .map_err(|err| ConfigError::Invalid {
            name: "TEMPORAL_* / temporal.toml",
            reason: err.to_string(),
        })?;
    // The SDK would fall back to localhost: a worker must be told where its cluster is.
    if needed && profile.address.as_deref().is_none_or(str::is_empty) {
        missing.push("TEMPORAL_ADDRESS");
    }
    Ok(TemporalConfig { profile })
}

impl Config {
    pub fn from_env(needs: Needs) -> Result<Self, ConfigError> {
        let mut env = Env {
            missing: Vec::new(),
        };
        let mut missing = Vec::new();
        let temporal = load_temporal(needs.temporal, &mut missing)?;
        env.missing.append(&mut missing);

        let database_url = env.required(needs.postgres, "DATABASE_URL");
        let postgres_scheme =
            database_url.starts_with("postgres://") || database_url.starts_with("postgresql://");
        if !database_url.is_empty() && !postgres_scheme {
            return Err(ConfigError::Invalid {
                name: "DATABASE_URL",
                reason: "expected a postgres:// URL".to_owned(),
            });
        }
        if !database_url.is_empty() {
            require_sslmode_off_loopback(&database_url)?;
        }
        let clickhouse_url = env.required(needs.clickhouse, "CLICKHOUSE_URL");
        require_url("CLICKHOUSE_URL", &clickhouse_url)?;
        let clickhouse_lz4 = match env.or("CLICKHOUSE_COMPRESSION", "auto").as_str() {
            "lz4" => true,
            "none" => false,
            // Compressing for a server on this machine costs both sides CPU and saves nothing.
            "auto" => !url_host_is_loopback(&clickhouse_url),
            other => {
                return Err(ConfigError::Invalid {
                    name: "CLICKHOUSE_COMPRESSION",
                    reason: format!("expected auto, lz4 or none, got {other:?}"),
                });
            }
        };
        let s3_endpoint = env.optional("S3_ENDPOINT");
        if let Some(endpoint) = &s3_endpoint {
            require_url("S3_ENDPOINT", endpoint)?;
        }
        let s3_region = env.required(needs.s3, "S3_REGION");
        let s3_access_key_id = env.required(needs.s3, "AWS_ACCESS_KEY_ID");
        let s3_secret_access_key = Secret(env.required(needs.s3, "AWS_SECRET_ACCESS_KEY"));
        if !env.missing.is_empty() {
            return Err(ConfigError::Missing(env.missing));
        }

        let max_concurrent_activities = env.count("ETL_MAX_CONCURRENT_ACTIVITIES", 4, 1)?;
        let plan_mentions_in_memory = env.count(
            "ETL_PLAN_MENTIONS_IN_MEMORY",
            crate::DEFAULT_PLAN_MENTIONS_IN_MEMORY,
            0,
        )?;
        let metrics_addr = match env::var("ETL_METRICS_ADDR") {
            Ok(v) if v.trim().is_empty() => None,
            Ok(v) => Some(v),
            Err(_) => Some(DEFAULT_METRICS_ADDR.to_owned()),
        }
        .map(|addr| {
            addr.parse::<SocketAddr>()
                .map_err(|err| ConfigError::Invalid {
                    name: "ETL_METRICS_ADDR",
                    reason: format!(
                        "expected host:port (e.g. {DEFAULT_METRICS_ADDR}), got {addr:?}: {err}"
                    ),
                })
        })
        .transpose()?;
        let log_format = match env.or("ETL_LOG_FORMAT", "text").as_str() {
            "text" => LogFormat::Text,
            "json" => LogFormat::Json,
            other => {
                return Err(ConfigError::Invalid {
                    name: "ETL_LOG_FORMAT",
                    reason: format!("expected text or json, got {other:?}"),
                });
            }
        };
        let pause_at = env
            .optional("ETL_PAUSE_AT")
            .map(|v| {
                v.parse().map_err(|reason| ConfigError::Invalid {
                    name: "ETL_PAUSE_AT",
                    reason,
                })
            })
            .transpose()?;
        let pause_gate = env.directory("ETL_PAUSE_GATE")?;
        Ok(Self {
            temporal,
            task_queue: env.or("ETL_TASK_QUEUE", "catalog-etl"),
            temporal_ui_url: env.optional("TEMPORAL_UI_URL"),
            database_url: Secret(database_url),
            clickhouse_url,
            clickhouse_database: env.or("CLICKHOUSE_DATABASE", "catalog_etl"),
            clickhouse_user: env.or("CLICKHOUSE_USER", "default"),
            clickhouse_password: Secret(env::var("CLICKHOUSE_PASSWORD").unwrap_or_default()),
            clickhouse_ca_file: env.file("CLICKHOUSE_CA_FILE")?,
            clickhouse_lz4,
            s3_endpoint,
            s3_region,
            s3_access_key_id,
            s3_secret_access_key,
            s3_force_path_style: env.bool("S3_FORCE_PATH_STYLE", true)?,
            s3_ca_file: env.file("S3_CA_FILE")?,
            max_concurrent_activities,
            plan_mentions_in_memory,
            check_buckets: env
                .or("ETL_CHECK_BUCKETS", "")
                .split(',')
                .map(str::trim)
                .filter(|b| !b.is_empty())
                .map(str::to_owned)
                .collect(),
            metrics_addr,
            log_format,
            pause_at,
            pause_gate,
        })
    }

    /// Link to a workflow in the Temporal Web UI.
    pub fn workflow_ui_link(&self, workflow_id: &str) -> Option<String> {
        self.ui_link(&format!("workflows/{}", url_path_segment(workflow_id)))
    }

    pub fn schedule_ui_link(&self, schedule_id: &str) -> Option<String> {
        self.ui_link(&format!("schedules/{}", url_path_segment(schedule_id)))
    }

    /// The Web UI's workflow list filtered by a visibility query.
    pub fn workflow_list_ui_link(&self, query: &str) -> Option<String> {
        self.ui_link(&format!("workflows?query={}", url_query_value(query)))
    }

    fn ui_link(&self, path: &str) -> Option<String> {
        let base = self.temporal_ui_url.as_deref()?.trim_end_matches('/');
        Some(format!(
            "{base}/namespaces/{}/{path}",
            self.temporal.namespace()
        ))
    }
}

fn url_path_segment(text: &str) -> String {
    url::form_urlencoded::byte_serialize(text.as_bytes())
        .collect::<String>()
        .replace('+', "%20")
}

fn url_query_value(text: &str) -> String {
    url_path_segment(text)
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

    #[test]
    fn a_remote_postgres_without_sslmode_is_refused_and_loopback_is_not() {
        for url in [
            "postgres://etl@127.0.0.1:5432/catalog",
            "postgres://etl@localhost/catalog",
            "postgres://etl@[::1]/catalog",
            "postgres:///catalog?host=/var/run/postgresql",
            "postgres://etl@db.example.com/catalog?sslmode=verify-full",
            "postgres://etl@10.0.0.5/catalog?sslmode=disable",
        ] {
            assert!(require_sslmode_off_loopback(url).is_ok(), "{url}");
        }
        let err = require_sslmode_off_loopback("postgres://etl:pw@db.example.com/catalog")
            .unwrap_err()
            .to_string();
        assert!(err.contains("db.example.com"), "{err}");
        assert!(err.contains("sslmode=verify-full"), "{err}");
        assert!(!err.contains("pw"), "no secret in the message: {err}");
    }

    #[test]
    fn clickhouse_compression_defaults_to_none_on_this_machine_only() {
        for url in [
            "http://127.0.0.1:8123",
            "http://localhost:8123",
            "https://[::1]:8443",
        ] {
            assert!(url_host_is_loopback(url), "{url}");
        }
        for url in [
            "https://abc.clickhouse.cloud:8443",
            "http://10.0.0.7:8123",
            "",
        ] {
            assert!(!url_host_is_loopback(url), "{url}");
        }
    }

    #[test]
    fn ui_links_escape_ids_and_queries() {
        assert_eq!(url_path_segment("ingest-a b/c"), "ingest-a%20b%2Fc");
        assert_eq!(
            url_query_value("CatalogSource = \"x\""),
            "CatalogSource%20%3D%20%22x%22"
        );
    }
}
