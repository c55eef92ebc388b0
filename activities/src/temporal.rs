//! Connecting to Temporal, shared by the worker and the client, from Temporal's standard
//! environment configuration (address, namespace, API key, TLS / mTLS, `temporal.toml`).

use std::time::Duration;

use temporalio_client::{
    Client, ClientOptions, Connection, ConnectionOptions, RetryOptions, envconfig::ConfigError,
    tonic,
};
use temporalio_common::protos::temporal::api::{
    enums::v1::IndexedValueType,
    operatorservice::v1::{AddSearchAttributesRequest, ListSearchAttributesRequest},
};

use crate::{config::Config, visibility};

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

#[derive(Debug, thiserror::Error)]
pub enum SearchAttributeError {
    #[error(
        "Temporal namespace {namespace} lacks the search attributes {missing}: run `etlctl setup` \
         against it (it registers them; on Temporal Cloud add them in the Cloud UI or with tcld)"
    )]
    Missing { namespace: String, missing: String },
    #[error(
        "Temporal namespace {namespace} has search attribute {name} as {found}, the project needs \
         {wanted}: remove it (`temporal operator search-attribute remove --name {name}`) and run \
         `etlctl setup`"
    )]
    WrongType {
        namespace: String,
        name: String,
        found: String,
        wanted: String,
    },
    #[error("Temporal namespace {namespace}: {action} search attributes: {reason}")]
    Rpc {
        namespace: String,
        action: &'static str,
        reason: String,
    },
}

fn type_name(value: i32) -> String {
    IndexedValueType::try_from(value)
        .map(|t| {
            t.as_str_name()
                .trim_start_matches("INDEXED_VALUE_TYPE_")
                .to_owned()
        })
        .unwrap_or_else(|_| format!("type {value}"))
}

/// The project's attributes the namespace lacks, after checking the ones it has are of the
/// right type.
async fn missing_search_attributes(
    client: &Client,
    namespace: &str,
) -> Result<Vec<(&'static str, IndexedValueType)>, SearchAttributeError> {
    let listed = client
        .connection()
        .operator_service()
        .list_search_attributes(tonic::Request::new(ListSearchAttributesRequest {
            namespace: namespace.to_owned(),
        }))
        .await
        .map_err(|status| SearchAttributeError::Rpc {
            namespace: namespace.to_owned(),
            action: "listing",
            reason: status.message().to_owned(),
        })?
        .into_inner()
        .custom_attributes;
    let mut missing = Vec::new();
    for (name, wanted) in visibility::registrations() {
        match listed.get(name) {
            None => missing.push((name, wanted)),
            Some(&found) if found != wanted as i32 => {
                return Err(SearchAttributeError::WrongType {
                    namespace: namespace.to_owned(),
                    name: name.to_owned(),
                    found: type_name(found),
                    wanted: type_name(wanted as i32),
                });
            }
            Some(_) => {}
        }
    }
    Ok(missing)
}

/// The worker refuses to start without the attributes: its workflows upsert them, and an
/// upsert of an unknown attribute fails every workflow task of the job.
pub async fn check_search_attributes(
    client: &Client,
    namespace: &str,
) -> Result<(), SearchAttributeError> {
    let missing = missing_search_attributes(client, namespace).await?;
    if missing.is_empty() {
        return Ok(());
    }
    Err(SearchAttributeError::Missing {
        namespace: namespace.to_owned(),
        missing: missing
            .iter()
            .map(|(name, _)| *name)
            .collect::<Vec<_>>()
            .join(", "),
    })
}

/// Registers the attributes the namespace lacks (`etlctl setup`); returns their names. Running
/// it again adds nothing.
pub async fn register_search_attributes(
    client: &Client,
    namespace: &str,
) -> Result<Vec<&'static str>, SearchAttributeError> {
    let missing = missing_search_attributes(client, namespace).await?;
    if missing.is_empty() {
        return Ok(Vec::new());
    }
    client
        .connection()
        .operator_service()
        .add_search_attributes(tonic::Request::new(AddSearchAttributesRequest {
            search_attributes: missing
                .iter()
                .map(|(name, kind)| ((*name).to_owned(), *kind as i32))
                .collect(),
            namespace: namespace.to_owned(),
        }))
        .await
        .map_err(|status| SearchAttributeError::Rpc {
            namespace: namespace.to_owned(),
            action: "registering",
            reason: status.message().to_owned(),
        })?;
    // Registration reaches the visibility store asynchronously on some servers: confirm it.
    check_search_attributes(client, namespace).await?;
    Ok(missing.into_iter().map(|(name, _)| name).collect())
}

/// Where a job's workflow stands, as the watchdog and `etlctl` judge it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkflowState {
    /// Running (or paused): it will end its job itself.
    Open,
    Terminated,
    TimedOut,
    /// Completed, failed, cancelled or continued as new without ending the job.
    Closed,
    /// Deleted, or dropped by the namespace's retention.
    Lost,
}

impl WorkflowState {
    /// The `error_type` of a job the watchdog closes for this reason.
    pub fn failure_type(self) -> &'static str {
        match self {
            WorkflowState::Open => "",
            WorkflowState::Terminated => crate::error::failure_type::WORKFLOW_TERMINATED,
            WorkflowState::TimedOut => crate::error::failure_type::WORKFLOW_TIMED_OUT,
            WorkflowState::Closed => crate::error::failure_type::WORKFLOW_CLOSED,
            WorkflowState::Lost => crate::error::failure_type::WORKFLOW_LOST,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            WorkflowState::Open => "running",
            WorkflowState::Terminated => "terminated",
            WorkflowState::TimedOut => "timed_out",
            WorkflowState::Closed => "closed",
            WorkflowState::Lost => "not_found",
        }
    }
}

/// The latest run of `workflow_id`.
pub async fn workflow_state(
    client: &Client,
    workflow_id: &str,
) -> Result<WorkflowState, crate::error::EtlError> {
    use temporalio_client::{
        UntypedWorkflow, WorkflowDescribeOptions, WorkflowExecutionStatus as Status,
        errors::WorkflowInteractionError,
    };
    let described = client
        .get_workflow_handle::<UntypedWorkflow>(workflow_id.to_owned())
        .describe(WorkflowDescribeOptions::default())
        .await;
    Ok(match described {
        Ok(description) => match description.status() {
            Status::Terminated => WorkflowState::Terminated,
            Status::TimedOut => WorkflowState::TimedOut,
            Status::Completed | Status::Failed | Status::Canceled | Status::ContinuedAsNew => {
                WorkflowState::Closed
            }
            // Running, paused, or a status this client does not know: not closed as far as
            // anyone can tell, so the job is left to its workflow.
            _ => WorkflowState::Open,
        },
        Err(WorkflowInteractionError::NotFound(_)) => WorkflowState::Lost,
        Err(err) => {
            return Err(crate::error::EtlError::Temporal(format!(
                "describing workflow {workflow_id}: {err}"
            )));
        }
    })
}
