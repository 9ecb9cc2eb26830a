//! Listing a fan-out source in S3.

use aws_sdk_s3::primitives::ByteStream;

use crate::error::{Error, Result};
use crate::manifest;
use crate::split::Listed;

/// An S3 client shared by every reconcile.
#[derive(Debug, Clone)]
pub struct S3 {
    pub(crate) client: aws_sdk_s3::Client,
}

/// One page of a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    /// Objects in key order.
    pub objects: Vec<Listed>,
    /// Whether more follow.
    pub truncated: bool,
}

impl S3 {
    /// A client from the default AWS chain; path-style addressing when a
    /// custom endpoint is configured (environment, shared config file), as
    /// S3-compatible servers need: the worker's client
    /// ([`shoal_clients::s3::s3_client`]).
    pub async fn from_env() -> Self {
        let config = crate::aws::config().await;
        Self {
            client: shoal_clients::s3::s3_client(&config, None),
        }
    }

    /// Wraps a client built elsewhere.
    pub fn from_client(client: aws_sdk_s3::Client) -> Self {
        Self { client }
    }

    /// Up to 1,000 objects under `prefix` with keys after `after`; folder
    /// placeholders and shoal's own `_shoal/` folder are left out.
    pub async fn list(&self, bucket: &str, prefix: &str, after: Option<&str>) -> Result<Page> {
        let (objects, truncated) =
            self.list_keys(bucket, prefix, after)
                .await
                .map_err(|reason| Error::Source {
                    source_name: format!("s3://{bucket}/{prefix}"),
                    reason,
                })?;
        Ok(Page {
            objects: objects
                .into_iter()
                // "Folder" placeholders and manifests are not items.
                .filter(|(key, _)| !key.ends_with('/') && !manifest::is_shoal_key(prefix, key))
                .map(|(key, size)| Listed { key, size })
                .collect(),
            truncated,
        })
    }

    /// Up to 1,000 (key, size) under `prefix` after `after`, nothing left
    /// out, and whether more follow; the error is the reason, for the
    /// caller to say what was being listed.
    pub async fn list_keys(
        &self,
        bucket: &str,
        prefix: &str,
        after: Option<&str>,
    ) -> std::result::Result<(Vec<(String, i64)>, bool), String> {
        let answer = self
            .client
            .list_objects_v2()
            .bucket(bucket)
            .prefix(prefix)
            .set_start_after(after.map(str::to_owned))
            .send()
            .await
            .map_err(|e| aws_sdk_s3::error::DisplayErrorContext(e).to_string())?;
        let objects = answer
            .contents()
            .iter()
            .filter_map(|o| Some((o.key()?.to_owned(), o.size().unwrap_or(0))))
            .collect();
        Ok((objects, answer.is_truncated().unwrap_or(false)))
    }

    /// Every object under `prefix` (see [`S3::list`]), in key order.
    pub async fn list_all(&self, bucket: &str, prefix: &str) -> Result<Vec<Listed>> {
        let mut all = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let page = self.list(bucket, prefix, after.as_deref()).await?;
            after = page.objects.last().map(|o| o.key.clone()).or(after);
            all.extend(page.objects);
            if !page.truncated {
                return Ok(all);
            }
        }
    }

    /// Stores `body` as JSON at `s3://bucket/key`.
    pub async fn put_json(&self, bucket: &str, key: &str, body: Vec<u8>) -> Result<()> {
        self.client
            .put_object()
            .bucket(bucket)
            .key(key)
            .content_type("application/json")
            .body(ByteStream::from(body))
            .send()
            .await
            .map_err(|e| Error::Output {
                location: format!("s3://{bucket}/{key}"),
                reason: aws_sdk_s3::error::DisplayErrorContext(e).to_string(),
            })?;
        Ok(())
    }
}
