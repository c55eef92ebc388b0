//! Connecting to Temporal, shared by the worker and the client.

use std::{str::FromStr, time::Duration};

use temporalio_client::{Client, ClientOptions, Connection, ConnectionOptions, Url};

use crate::config::Config;

#[derive(Debug, thiserror::Error)]
pub enum TemporalConnectError {
    #[error("TEMPORAL_ADDRESS {address:?} is not a URL: {source}")]
    Address {
        address: String,
        source: url::ParseError,
    },
    #[error("cannot reach Temporal at {address}: {source}")]
    Connect {
        address: String,
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

pub async fn connect(config: &Config, identity: &str) -> Result<Client, TemporalConnectError> {
    let address = config.temporal_address.clone();
    let target = Url::from_str(&address).map_err(|source| TemporalConnectError::Address {
        address: address.clone(),
        source,
    })?;
    let connection = Connection::connect(
        ConnectionOptions::new(target)
            .identity(format!("{identity}@{}", std::process::id()))
            .connect_timeout(Duration::from_secs(10))
            .build(),
    )
    .await
    .map_err(|err| TemporalConnectError::Connect {
        address: address.clone(),
        source: err.into(),
    })?;
    Client::new(
        connection,
        ClientOptions::new(config.temporal_namespace.clone()).build(),
    )
    .map_err(|err| TemporalConnectError::Connect {
        address,
        source: err.into(),
    })
}
