//! Connecting to Temporal, shared by the worker and the client, from Temporal's standard
//! environment configuration (address, namespace, API key, TLS / mTLS, `temporal.toml`).

use std::time::Duration;

use temporalio_client::{
    Client, ClientOptions, Connection, ConnectionOptions, RetryOptions, envconfig::ConfigError,
};

use crate::config::Config;

#[derive(Debug, thiserror::Error)]
pub enum TemporalConnectError {
    #[error("Temporal settings (TEMPORAL_*): {0}")]
    Settings(String),
    #[error("cannot reach Temporal at {address}: {reason}")]
    Connect { address: String, reason: String },
}

/// How a connection rides out a Temporal outage. The client's calls are reads (or starts with
/// a fixed workflow id) and simply repeat; the worker's task completions must survive a server
/// restart, or a finished activity would be run again after its timeout.
#[derive(Debug, Clone, Copy)]
pub enum Patience {
    /// The SDK's default (about ten seconds), for commands that report and exit.
    Command,
    /// Keep retrying every call for minutes, for the worker.
    Worker,
}

pub async fn connect(
    config: &Config,
    identity: &str,
    patience: Patience,
) -> Result<Client, TemporalConnectError> {
    let profile = config.temporal.profile.clone();
    let address = config.temporal.address().to_owned();
    let namespace = config.temporal.namespace().to_owned();
    let mut options = ConnectionOptions::try_from(profile)
        .map_err(|err: ConfigError| TemporalConnectError::Settings(err.to_string()))?;
    options.identity = format!("{identity}@{}", std::process::id());
    options.connect_timeout = Some(Duration::from_secs(10));
    if let Patience::Worker = patience {
        options.retry_options = RetryOptions::builder()
            .max_retries(0)
            .max_elapsed_time(Some(Duration::from_secs(30 * 60)))
            .max_interval(Duration::from_secs(10))
            .build();
    }
    let connection =
        Connection::connect(options)
            .await
            .map_err(|err| TemporalConnectError::Connect {
                address: address.clone(),
                reason: describe_connect_error(&err),
            })?;
    Client::new(connection, ClientOptions::new(namespace).build()).map_err(|err| {
        TemporalConnectError::Connect {
            address,
            reason: err.to_string(),
        }
    })
}

/// tonic's transport errors print as `Debug`; keep the part a person needs (refused, TLS
/// certificate problem, ...) and never a header value.
fn describe_connect_error(err: &(impl std::error::Error + 'static)) -> String {
    let text = crate::error::error_chain(err);
    for (needle, meaning) in [
        (
            "UnknownIssuer",
            "TLS: the server certificate is not signed by a trusted CA",
        ),
        (
            "NotValidForName",
            "TLS: the server certificate does not match the host name",
        ),
        (
            "InvalidCertificate",
            "TLS: the server certificate was rejected",
        ),
        ("Connection refused", "connection refused"),
        (
            "HttpsUriWithoutTlsSupport",
            "https:// address without TLS settings",
        ),
    ] {
        if text.contains(needle) {
            return format!("{meaning} ({})", first_line(&text));
        }
    }
    first_line(&text)
}

fn first_line(text: &str) -> String {
    let line = text.lines().next().unwrap_or_default();
    line.chars().take(400).collect()
}
