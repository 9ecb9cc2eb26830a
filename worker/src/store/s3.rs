//! An S3 bucket prefix as an object store (aws-sdk-s3). Works with any
//! S3-compatible server: `AWS_ENDPOINT_URL` points the SDK at it.

use std::sync::Arc;

use async_trait::async_trait;
use aws_config::SdkConfig;
use aws_sdk_s3::Client;
use aws_sdk_s3::error::ProvideErrorMetadata;
use aws_sdk_s3::primitives::ByteStream;
use bytes::Bytes;

use super::{ObjectStore, StoreError};
use crate::message::ObjectRef;

pub use shoal_clients::aws::sdk_config;
pub use shoal_clients::s3::s3_client;

/// The AWS configuration and the S3 client of a process, shared by its
/// stores, each made at most once and only when first asked for.
#[derive(Debug, Clone, Default)]
pub struct SharedS3 {
    aws: Arc<tokio::sync::OnceCell<SdkConfig>>,
    client: Arc<tokio::sync::OnceCell<Client>>,
    force_path_style: Option<bool>,
}

impl SharedS3 {
    /// Made from the configuration in `aws` (loaded from the default chain
    /// if nothing has loaded it yet); `force_path_style` as
    /// [`s3_client`]'s.
    pub fn new(aws: Arc<tokio::sync::OnceCell<SdkConfig>>, force_path_style: Option<bool>) -> Self {
        Self {
            aws,
            client: Arc::default(),
            force_path_style,
        }
    }

    /// The AWS configuration, loaded on the first call.
    pub async fn aws(&self) -> &SdkConfig {
        self.aws.get_or_init(sdk_config).await
    }

    /// The S3 client, built on the first call.
    pub async fn client(&self) -> &Client {
        self.client
            .get_or_init(|| async { s3_client(self.aws().await, self.force_path_style) })
            .await
    }
}

/// Where a store's client comes from.
#[derive(Debug, Clone)]
enum ClientSource {
    Built(Client),
    /// Built on the store's first request.
    OnFirstUse(SharedS3),
}

/// Objects under `prefix` in `bucket`. Keys given to and returned by the
/// store are relative to the prefix; an [`ObjectRef`] naming its own bucket
/// (from an S3 event) is read with its key as is.
#[derive(Debug, Clone)]
pub struct S3Store {
    client: ClientSource,
    bucket: String,
    prefix: String,
    max_object_bytes: u64,
    allowed_buckets: Option<Vec<String>>,
}

impl S3Store {
    /// A store over `s3://bucket/prefix` (`prefix` empty or ending in `/`).
    pub fn new(client: Client, bucket: impl Into<String>, prefix: impl Into<String>) -> Self {
        Self::from_source(ClientSource::Built(client), bucket, prefix)
    }

    fn from_source(
        client: ClientSource,
        bucket: impl Into<String>,
        prefix: impl Into<String>,
    ) -> Self {
        Self {
            client,
            bucket: bucket.into(),
            prefix: prefix.into(),
            max_object_bytes: u64::MAX,
            allowed_buckets: None,
        }
    }

    /// Buckets a reference may name besides the store's own. Without a
    /// list, a store with a bucket reads only that bucket, and a store for
    /// any bucket ([`S3Store::any_bucket`]) reads any.
    pub fn with_allowed_buckets(mut self, buckets: Option<Vec<String>>) -> Self {
        self.allowed_buckets = buckets;
        self
    }

    /// Refuses a reference to `bucket` outside the store's bucket and the
    /// allow-list.
    fn check_bucket(&self, bucket: &str, key: &str) -> Result<(), StoreError> {
        if bucket == self.bucket {
            return Ok(());
        }
        let refused = |reason| {
            Err(StoreError::ForeignBucket {
                key: key.to_owned(),
                bucket: bucket.to_owned(),
                reason,
            })
        };
        match &self.allowed_buckets {
            Some(allowed) if allowed.iter().any(|b| b == bucket) => Ok(()),
            Some(_) => refused("not in --allowed-buckets"),
            None if self.bucket.is_empty() => Ok(()),
            None => refused("not the --input bucket, and no --allowed-buckets names it"),
        }
    }

    /// Refuses to read an object larger than `limit` bytes.
    pub fn with_max_object_bytes(mut self, limit: u64) -> Self {
        self.max_object_bytes = limit;
        self
    }

    /// A store for object references that name their own bucket (S3
    /// events); a reference without one is refused.
    pub fn any_bucket(client: Client) -> Self {
        Self::new(client, "", "")
    }

    /// [`S3Store::any_bucket`] with `shared`'s client, which is built (and
    /// the AWS configuration loaded) on the store's first request: a
    /// worker whose messages never name an S3 object never pays for them.
    pub fn any_bucket_on_first_use(shared: SharedS3) -> Self {
        Self::from_source(ClientSource::OnFirstUse(shared), "", "")
    }

    async fn client(&self) -> &Client {
        match &self.client {
            ClientSource::Built(client) => client,
            ClientSource::OnFirstUse(shared) => shared.client().await,
        }
    }

    fn full_key(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }
}

fn io<E: std::error::Error + Send + Sync + 'static>(
    operation: &'static str,
    location: String,
    err: E,
) -> StoreError {
    StoreError::Io {
        operation,
        location,
        source: Box::new(err),
    }
}

#[async_trait]
impl ObjectStore for S3Store {
    async fn get(&self, object: &ObjectRef) -> Result<Bytes, StoreError> {
        let (bucket, key) = self.s3_address(object)?;
        let bucket = bucket.as_str();
        let location = format!("s3://{bucket}/{key}");
        let output = self
            .client()
            .await
            .get_object()
            .bucket(bucket)
            .key(&key)
            .send()
            .await
            .map_err(|e| {
                let e = e.into_service_error();
                if e.is_no_such_key() || e.code() == Some("NoSuchBucket") {
                    StoreError::NotFound {
                        location: location.clone(),
                    }
                } else {
                    io("read", location.clone(), e)
                }
            })?;
        let limit = self.max_object_bytes;
        let declared = output
            .content_length()
            .and_then(|n| u64::try_from(n).ok())
            .unwrap_or(0);
        if declared > limit {
            return Err(StoreError::TooLarge {
                location,
                size: declared,
                limit,
            });
        }
        // Stop reading past the limit whatever the length header said.
        let mut body = output.body;
        let mut bytes = bytes::BytesMut::with_capacity(usize::try_from(declared).unwrap_or(0));
        while let Some(chunk) = body
            .try_next()
            .await
            .map_err(|e| io("read", location.clone(), e))?
        {
            bytes.extend_from_slice(&chunk);
            if bytes.len() as u64 > limit {
                return Err(StoreError::TooLarge {
                    location,
                    size: bytes.len() as u64,
                    limit,
                });
            }
        }
        Ok(bytes.freeze())
    }

    async fn put(&self, key: &str, body: Bytes, content_type: &str) -> Result<(), StoreError> {
        let key = self.full_key(key);
        self.client()
            .await
            .put_object()
            .bucket(&self.bucket)
            .key(&key)
            .content_type(content_type)
            .body(ByteStream::from(body))
            .send()
            .await
            .map_err(|e| {
                io(
                    "write",
                    format!("s3://{}/{key}", self.bucket),
                    e.into_service_error(),
                )
            })?;
        Ok(())
    }

    async fn exists(&self, key: &str) -> Result<bool, StoreError> {
        let key = self.full_key(key);
        match self
            .client()
            .await
            .head_object()
            .bucket(&self.bucket)
            .key(&key)
            .send()
            .await
        {
            Ok(_) => Ok(true),
            Err(e) => {
                let e = e.into_service_error();
                if e.is_not_found() {
                    Ok(false)
                } else {
                    Err(io("stat", format!("s3://{}/{key}", self.bucket), e))
                }
            }
        }
    }

    async fn list(&self) -> Result<Vec<ObjectRef>, StoreError> {
        let mut pages = self
            .client()
            .await
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(&self.prefix)
            .into_paginator()
            .send();
        let mut objects = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| {
                let e = e.into_service_error();
                let location = format!("s3://{}/{}", self.bucket, self.prefix);
                if e.code() == Some("NoSuchBucket") {
                    StoreError::NotFound { location }
                } else {
                    io("list", location, e)
                }
            })?;
            for object in page.contents() {
                let Some(key) = object.key() else { continue };
                let relative = key.strip_prefix(&self.prefix).unwrap_or(key);
                let hidden = relative.split('/').any(|part| part.starts_with('.'));
                if relative.is_empty() || relative.ends_with('/') || hidden {
                    continue;
                }
                objects.push(ObjectRef {
                    bucket: None,
                    key: relative.to_owned(),
                    size: object.size().and_then(|s| u64::try_from(s).ok()),
                    etag: object.e_tag().map(str::to_owned),
                });
            }
        }
        objects.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(objects)
    }

    fn s3_address(&self, object: &ObjectRef) -> Result<(String, String), StoreError> {
        match &object.bucket {
            Some(bucket) => {
                self.check_bucket(bucket, &object.key)?;
                Ok((bucket.clone(), object.key.clone()))
            }
            None if self.bucket.is_empty() => Err(StoreError::InvalidKey {
                key: object.key.clone(),
                reason: "the reference names no bucket and no --input bucket is set",
            }),
            None => Ok((self.bucket.clone(), self.full_key(&object.key))),
        }
    }

    fn location(&self, key: &str) -> String {
        format!("s3://{}/{}", self.bucket, self.full_key(key))
    }
}
