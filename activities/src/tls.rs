//! TLS for the HTTP stores: the system roots plus an optional CA file, with rustls (ring).
//! Postgres (sqlx) and Temporal (tonic) bring their own TLS stacks, configured by their URLs
//! and Temporal's environment settings.

use std::{path::Path, sync::Arc, time::Duration};

use hyper_util::{
    client::legacy::{Client as HyperClient, connect::HttpConnector},
    rt::{TokioExecutor, TokioTimer},
};
use rustls::{
    ClientConfig, RootCertStore,
    pki_types::{CertificateDer, pem::PemObject},
};

/// Installs ring as the process's rustls provider. Two providers are compiled in (the AWS SDK
/// brings aws-lc), so rustls cannot pick one by itself; every binary calls this first.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// The PEM certificates of `path`; an error names what is wrong with the file.
pub fn read_pem_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|err| format!("cannot read it: {err}"))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|err| format!("not a PEM certificate file: {err}"))?;
    if certs.is_empty() {
        return Err("holds no PEM certificate".to_owned());
    }
    Ok(certs)
}

fn root_store(extra_ca: Option<&Path>) -> Result<RootCertStore, String> {
    let mut roots = RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    roots.add_parsable_certificates(native.certs);
    if let Some(path) = extra_ca {
        for cert in read_pem_certificates(path)? {
            roots
                .add(cert)
                .map_err(|err| format!("{}: {err}", path.display()))?;
        }
    }
    if roots.is_empty() {
        return Err("no trusted CA certificate (no system roots, no CA file)".to_owned());
    }
    Ok(roots)
}

/// A ClickHouse client for `http://` and `https://` URLs (HTTP/1.1), trusting the system roots
/// and `extra_ca`. Connections idle for two seconds are dropped: shorter than ClickHouse's
/// keep-alive, so a pooled connection is never one the server is closing.
pub fn clickhouse_client(extra_ca: Option<&Path>) -> Result<clickhouse::Client, String> {
    let tls =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|err| err.to_string())?
            .with_root_certificates(root_store(extra_ca)?)
            .with_no_client_auth();
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_keepalive(Some(Duration::from_secs(60)));
    http.set_nodelay(true);
    http.set_connect_timeout(Some(Duration::from_secs(10)));
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .wrap_connector(http);
    let hyper = HyperClient::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(2))
        .pool_timer(TokioTimer::new())
        .build(https);
    Ok(clickhouse::Client::with_http_client(hyper))
}
