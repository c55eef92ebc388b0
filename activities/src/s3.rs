//! Object storage access: an object's version (HEAD plus the listing's full-precision time),
//! ranged GET pinned to one ETag, paged listing, and uploads (demo, tests).
//!
//! Every read of a job's object sends `If-Match: <etag>`: a replaced object answers 412 and the
//! job fails closed instead of mixing two versions.

use aws_sdk_s3::{
    Client,
    config::{
        BehaviorVersion, Credentials, Region, RequestChecksumCalculation,
        ResponseChecksumValidation, http::HttpResponse,
    },
    error::{DisplayErrorContext, SdkError},
    primitives::{ByteStream, DateTime as S3Time},
};
use aws_smithy_http_client::{
    Builder as HttpClientBuilder,
    tls::{self, TlsContext, TrustStore, rustls_provider::CryptoMode},
};
use bytes::Bytes;
use chrono::{DateTime, Utc};

use crate::{config::Config, error::EtlError, model::ObjectMeta, tls::read_pem_certificates};

#[derive(Clone, Debug)]
pub struct ObjectStore {
    client: Client,
}

/// One page of a listing and where the next one starts.
pub struct ListPage {
    pub objects: Vec<ObjectMeta>,
    pub next: Option<String>,
}

fn http_status<E>(err: &SdkError<E, HttpResponse>) -> Option<u16> {
    err.raw_response()
        .map(|response| response.status().as_u16())
}

fn s3_error<E: std::error::Error + 'static>(
    what: &str,
    err: SdkError<E, HttpResponse>,
) -> EtlError {
    EtlError::S3(format!("{what}: {}", DisplayErrorContext(&err)))
}

fn object_error<E: std::error::Error + 'static>(
    what: &str,
    bucket: &str,
    key: &str,
    err: SdkError<E, HttpResponse>,
) -> EtlError {
    match http_status(&err) {
        Some(404) => EtlError::ObjectNotFound {
            bucket: bucket.to_owned(),
            key: key.to_owned(),
        },
        Some(403) => EtlError::ObjectForbidden {
            bucket: bucket.to_owned(),
            key: key.to_owned(),
            detail: "check the credentials' permissions (AWS_ACCESS_KEY_ID)".to_owned(),
        },
        _ => s3_error(&format!("{what} s3://{bucket}/{key}"), err),
    }
}

fn utc(time: &S3Time) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp(time.secs(), time.subsec_nanos())
}

/// Versions print at the precision the store gave (the listing's milliseconds, at least).
pub fn format_time(time: DateTime<Utc>) -> String {
    time.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
}

impl ObjectStore {
    pub fn new(config: &Config) -> Result<Self, EtlError> {
        let credentials = Credentials::new(
            config.s3_access_key_id.clone(),
            config.s3_secret_access_key.expose().to_owned(),
            None,
            None,
            "etl-config",
        );
        // System roots (R2 and AWS use public CAs) plus S3_CA_FILE for a self-hosted store.
        let mut trust = TrustStore::default();
        if let Some(path) = &config.s3_ca_file {
            read_pem_certificates(path).map_err(|reason| {
                EtlError::S3(format!("S3_CA_FILE {}: {reason}", path.display()))
            })?;
            let pem = std::fs::read(path)
                .map_err(|err| EtlError::S3(format!("S3_CA_FILE {}: {err}", path.display())))?;
            trust = trust.with_pem_certificate(pem);
        }
        let tls_context = TlsContext::builder()
            .with_trust_store(trust)
            .build()
            .map_err(|err| EtlError::S3(format!("S3 TLS settings: {err}")))?;
        let http_client = HttpClientBuilder::new()
            .tls_provider(tls::Provider::Rustls(CryptoMode::AwsLc))
            .tls_context(tls_context)
            .build_https();
        let mut builder = aws_sdk_s3::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .http_client(http_client)
            .region(Region::new(config.s3_region.clone()))
            .credentials_provider(credentials)
            .force_path_style(config.s3_force_path_style)
            // The SDK's default CRC trailers (aws-chunked uploads) are not understood by every
            // S3-compatible store (Garage rejects the payload signature; R2 had the same
            // trouble); compute checksums only where the API requires them.
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .response_checksum_validation(ResponseChecksumValidation::WhenRequired);
        if let Some(endpoint) = &config.s3_endpoint {
            builder = builder.endpoint_url(endpoint);
        }
        Ok(Self {
            client: Client::from_conf(builder.build()),
        })
    }

    /// Size, ETag and Last-Modified of the object as it is now. HEAD's Last-Modified header has
    /// whole seconds only; the listing has the store's full precision, and the version comes
    /// from there, never from HEAD: two jobs of one version must order it the same way. A
    /// listing that does not show the object as HEAD saw it (being replaced, or not listed yet
    /// by an eventually consistent store) is a retryable error; no time at all is an error: a
    /// version of "time zero" would lose to every other object of the source.
    pub async fn head(&self, bucket: &str, key: &str) -> Result<ObjectMeta, EtlError> {
        let out = self
            .client
            .head_object()
            .bucket(bucket)
            .key(key)
            .send()
            .await
            .map_err(|err| object_error("HEAD", bucket, key, err))?;
        let etag = out.e_tag().unwrap_or_default().to_owned();
        let listed = self
            .client
            .list_objects_v2()
            .bucket(bucket)
            .prefix(key)
            .max_keys(1)
            .send()
            .await
            .map_err(|err| object_error("LIST", bucket, key, err))?;
        let entry = listed.contents().iter().find(|o| o.key() == Some(key));
        let last_modified = match entry {
            Some(entry) if entry.e_tag() == Some(etag.as_str()) => entry
                .last_modified()
                .and_then(utc)
                .ok_or_else(|| EtlError::MissingLastModified {
                    bucket: bucket.to_owned(),
                    key: key.to_owned(),
                })?,
            Some(entry) => {
                return Err(EtlError::S3(format!(
                    "s3://{bucket}/{key} is being replaced: HEAD saw ETag {etag}, the listing \
                     ETag {}",
                    entry.e_tag().unwrap_or("none")
                )));
            }
            None => {
                return Err(EtlError::S3(format!(
                    "s3://{bucket}/{key}: the listing does not show the object yet, and only \
                     the listing gives its Last-Modified time at full precision"
                )));
            }
        };
        Ok(ObjectMeta {
            bucket: bucket.to_owned(),
            key: key.to_owned(),
            etag,
            size: out.content_length().unwrap_or_default().max(0) as u64,
            last_modified: format_time(last_modified),
        })
    }

    /// One page of the objects under `prefix` (at most `page_size`), folder markers left out.
    pub async fn list_page(
        &self,
        bucket: &str,
        prefix: &str,
        page_size: i32,
        start: Option<String>,
    ) -> Result<ListPage, EtlError> {
        let page = self
            .client
            .list_objects_v2()
            .bucket(bucket)
            .prefix(prefix)
            .max_keys(page_size)
            .set_continuation_token(start)
            .send()
            .await
            .map_err(|err| match http_status(&err) {
                Some(404) => EtlError::BucketNotFound(bucket.to_owned()),
                Some(403) => EtlError::ObjectForbidden {
                    bucket: bucket.to_owned(),
                    key: prefix.to_owned(),
                    detail: "listing is forbidden for these credentials".to_owned(),
                },
                _ => s3_error(&format!("LIST s3://{bucket}/{prefix}"), err),
            })?;
        let mut objects = Vec::with_capacity(page.contents().len());
        for object in page.contents() {
            let Some(key) = object.key() else { continue };
            if key.ends_with('/') {
                continue;
            }
            let last_modified = object.last_modified().and_then(utc).ok_or_else(|| {
                EtlError::MissingLastModified {
                    bucket: bucket.to_owned(),
                    key: key.to_owned(),
                }
            })?;
            objects.push(ObjectMeta {
                bucket: bucket.to_owned(),
                key: key.to_owned(),
                etag: object.e_tag().unwrap_or_default().to_owned(),
                size: object.size().unwrap_or_default().max(0) as u64,
                last_modified: format_time(last_modified),
            });
        }
        let next = page
            .is_truncated()
            .unwrap_or(false)
            .then(|| page.next_continuation_token().map(str::to_owned))
            .flatten();
        Ok(ListPage { objects, next })
    }

    /// Streams `[start, end)` of the object version `etag`; `end = None` reads to the end.
    pub async fn open_range(
        &self,
        bucket: &str,
        key: &str,
        etag: &str,
        start: u64,
        end: Option<u64>,
    ) -> Result<ByteStream, EtlError> {
        let range = match end {
            Some(end) => format!("bytes={start}-{}", end - 1),
            None => format!("bytes={start}-"),
        };
        let out = self
            .client
            .get_object()
            .bucket(bucket)
            .key(key)
            .if_match(etag)
            .range(range)
            .send()
            .await
            .map_err(|err| match http_status(&err) {
                Some(412) => EtlError::SourceChanged {
                    bucket: bucket.to_owned(),
                    key: key.to_owned(),
                    expected: etag.to_owned(),
                },
                _ => object_error("GET", bucket, key, err),
            })?;
        Ok(out.body)
    }

    /// Reads `[start, end)` into memory (one chunk: bounded by the chunk size plus one record).
    pub async fn read_range(
        &self,
        bucket: &str,
        key: &str,
        etag: &str,
        start: u64,
        end: u64,
    ) -> Result<Bytes, EtlError> {
        if end == start {
            return Ok(Bytes::new());
        }
        let body = self.open_range(bucket, key, etag, start, Some(end)).await?;
        let bytes = body
            .collect()
            .await
            .map_err(|err| EtlError::S3(format!("reading s3://{bucket}/{key}: {err}")))?
            .into_bytes();
        if bytes.len() as u64 != end - start {
            return Err(EtlError::S3(format!(
                "short read of s3://{bucket}/{key} bytes {start}..{end}: got {} bytes",
                bytes.len()
            )));
        }
        Ok(bytes)
    }

    pub async fn put(&self, bucket: &str, key: &str, body: Bytes) -> Result<ObjectMeta, EtlError> {
        self.put_only(bucket, key, body).await?;
        self.head(bucket, key).await
    }

    /// Uploads without reading the new version back.
    pub async fn put_only(&self, bucket: &str, key: &str, body: Bytes) -> Result<(), EtlError> {
        self.client
            .put_object()
            .bucket(bucket)
            .key(key)
            .content_type("text/csv")
            .body(ByteStream::from(body))
            .send()
            .await
            .map_err(|err| s3_error(&format!("PUT s3://{bucket}/{key}"), err))?;
        Ok(())
    }

    /// Uploads a local file without reading it into memory.
    pub async fn put_path(
        &self,
        bucket: &str,
        key: &str,
        path: &std::path::Path,
    ) -> Result<ObjectMeta, EtlError> {
        let body = ByteStream::from_path(path)
            .await
            .map_err(|err| EtlError::S3(format!("reading {}: {err}", path.display())))?;
        self.client
            .put_object()
            .bucket(bucket)
            .key(key)
            .content_type("text/csv")
            .body(body)
            .send()
            .await
            .map_err(|err| s3_error(&format!("PUT s3://{bucket}/{key}"), err))?;
        self.head(bucket, key).await
    }

    pub async fn ensure_bucket(&self, bucket: &str) -> Result<(), EtlError> {
        if self
            .client
            .head_bucket()
            .bucket(bucket)
            .send()
            .await
            .is_ok()
        {
            return Ok(());
        }
        self.create_bucket(bucket).await
    }

    /// Creates `bucket`. One that exists and is ours already is success: another caller
    /// created it since our HEAD, or the SDK retried a create whose first attempt the store
    /// had carried out.
    pub async fn create_bucket(&self, bucket: &str) -> Result<(), EtlError> {
        match self.client.create_bucket().bucket(bucket).send().await {
            Ok(_) => Ok(()),
            Err(err)
                if err
                    .as_service_error()
                    .is_some_and(|err| err.is_bucket_already_owned_by_you()) =>
            {
                Ok(())
            }
            Err(err) => Err(s3_error(&format!("create bucket {bucket}"), err)),
        }
    }

    /// Start-up check: the bucket exists and the credentials can read it.
    pub async fn check_bucket(&self, bucket: &str) -> Result<(), EtlError> {
        self.client
            .head_bucket()
            .bucket(bucket)
            .send()
            .await
            .map_err(|err| match http_status(&err) {
                Some(404) => EtlError::BucketNotFound(bucket.to_owned()),
                Some(403) => EtlError::S3(format!(
                    "access to bucket {bucket} denied: check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY"
                )),
                _ => s3_error(&format!("HEAD bucket {bucket}"), err),
            })?;
        Ok(())
    }
}

/// Parses `s3://bucket/key`.
pub fn parse_s3_uri(uri: &str) -> Option<(String, String)> {
    let rest = uri.strip_prefix("s3://")?;
    let (bucket, key) = rest.split_once('/')?;
    if bucket.is_empty() {
        return None;
    }
    Some((bucket.to_owned(), key.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn s3_uris() {
        assert_eq!(
            parse_s3_uri("s3://catalog/cotopaxi/a.csv"),
            Some(("catalog".into(), "cotopaxi/a.csv".into()))
        );
        assert_eq!(
            parse_s3_uri("s3://catalog/"),
            Some(("catalog".into(), String::new()))
        );
        assert_eq!(parse_s3_uri("http://x/y"), None);
        assert_eq!(parse_s3_uri("s3:///key"), None);
    }

    #[test]
    fn versions_keep_the_stores_precision() {
        let t = DateTime::from_timestamp(1_700_000_000, 123_000_000).unwrap();
        assert_eq!(format_time(t), "2023-11-14T22:13:20.123Z");
        let whole = DateTime::from_timestamp(1_700_000_000, 0).unwrap();
        assert_eq!(format_time(whole), "2023-11-14T22:13:20Z");
    }
}
