//! Object storage access: HEAD, ranged GET pinned to one ETag, listing, and uploads (demo, tests).
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
    primitives::ByteStream,
};
use bytes::Bytes;

use crate::{config::Config, error::EtlError, model::ObjectMeta};

#[derive(Clone, Debug)]
pub struct ObjectStore {
    client: Client,
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

impl ObjectStore {
    pub fn new(config: &Config) -> Self {
        let credentials = Credentials::new(
            config.s3_access_key_id.clone(),
            config.s3_secret_access_key.expose().to_owned(),
            None,
            None,
            "etl-config",
        );
        let mut builder = aws_sdk_s3::Config::builder()
            .behavior_version(BehaviorVersion::latest())
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
        Self {
            client: Client::from_conf(builder.build()),
        }
    }

    pub async fn head(&self, bucket: &str, key: &str) -> Result<ObjectMeta, EtlError> {
        let out = self
            .client
            .head_object()
            .bucket(bucket)
            .key(key)
            .send()
            .await
            .map_err(|err| match http_status(&err) {
                Some(404) => EtlError::ObjectNotFound {
                    bucket: bucket.to_owned(),
                    key: key.to_owned(),
                },
                _ => s3_error(&format!("HEAD s3://{bucket}/{key}"), err),
            })?;
        let last_modified = out
            .last_modified()
            .and_then(|t| chrono::DateTime::from_timestamp(t.secs(), t.subsec_nanos()))
            .unwrap_or_default()
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        Ok(ObjectMeta {
            bucket: bucket.to_owned(),
            key: key.to_owned(),
            etag: out.e_tag().unwrap_or_default().to_owned(),
            size: out.content_length().unwrap_or_default().max(0) as u64,
            last_modified,
        })
    }

    /// Every object under `prefix` (all pages), keys ending in `/` (folder markers) left out.
    pub async fn list(&self, bucket: &str, prefix: &str) -> Result<Vec<ObjectMeta>, EtlError> {
        let mut objects = Vec::new();
        let mut pages = self
            .client
            .list_objects_v2()
            .bucket(bucket)
            .prefix(prefix)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|err| match http_status(&err) {
                Some(404) => EtlError::S3(format!("bucket {bucket} does not exist")),
                _ => s3_error(&format!("LIST s3://{bucket}/{prefix}"), err),
            })?;
            for object in page.contents() {
                let Some(key) = object.key() else { continue };
                if key.ends_with('/') {
                    continue;
                }
                let last_modified = object
                    .last_modified()
                    .and_then(|t| chrono::DateTime::from_timestamp(t.secs(), t.subsec_nanos()))
                    .unwrap_or_default()
                    .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
                objects.push(ObjectMeta {
                    bucket: bucket.to_owned(),
                    key: key.to_owned(),
                    etag: object.e_tag().unwrap_or_default().to_owned(),
                    size: object.size().unwrap_or_default().max(0) as u64,
                    last_modified,
                });
            }
        }
        Ok(objects)
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
                Some(404) => EtlError::ObjectNotFound {
                    bucket: bucket.to_owned(),
                    key: key.to_owned(),
                },
                _ => s3_error(&format!("GET s3://{bucket}/{key}"), err),
            })?;
        Ok(out.body)
    }

    /// Reads `[start, end)` into memory (one chunk: bounded by the chunk size).
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
        self.client
            .put_object()
            .bucket(bucket)
            .key(key)
            .content_type("text/csv")
            .body(ByteStream::from(body))
            .send()
            .await
            .map_err(|err| s3_error(&format!("PUT s3://{bucket}/{key}"), err))?;
        self.head(bucket, key).await
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
        self.client
            .create_bucket()
            .bucket(bucket)
            .send()
            .await
            .map_err(|err| s3_error(&format!("create bucket {bucket}"), err))?;
        Ok(())
    }

    /// Start-up check: the bucket exists and the credentials can read it.
    pub async fn check_bucket(&self, bucket: &str) -> Result<(), EtlError> {
        self.client
            .head_bucket()
            .bucket(bucket)
            .send()
            .await
            .map_err(|err| match http_status(&err) {
                Some(404) => EtlError::S3(format!("bucket {bucket} does not exist")),
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
    use super::parse_s3_uri;

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
}
