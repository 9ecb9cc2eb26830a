//! Listing a fan-out source in S3.

use crate::error::{Error, Result};
use crate::split::Listed;

/// An S3 client shared by every reconcile.
#[derive(Debug, Clone)]
pub struct S3 {
    client: aws_sdk_s3::Client,
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
    /// custom endpoint (`AWS_ENDPOINT_URL`) is set, as S3-compatible servers
    /// need.
    pub async fn from_env() -> Self {
        let config = aws_config::load_from_env().await;
        let path_style = std::env::var_os("AWS_ENDPOINT_URL").is_some()
            || std::env::var_os("AWS_ENDPOINT_URL_S3").is_some();
        let s3 = aws_sdk_s3::config::Builder::from(&config)
            .force_path_style(path_style)
            .build();
        Self {
            client: aws_sdk_s3::Client::from_conf(s3),
        }
    }

    /// Up to 1,000 objects under `prefix` with keys after `after`.
    pub async fn list(&self, bucket: &str, prefix: &str, after: Option<&str>) -> Result<Page> {
        let answer = self
            .client
            .list_objects_v2()
            .bucket(bucket)
            .prefix(prefix)
            .set_start_after(after.map(str::to_owned))
            .send()
            .await
            .map_err(|e| Error::Source {
                source_name: format!("s3://{bucket}/{prefix}"),
                reason: aws_sdk_s3::error::DisplayErrorContext(e).to_string(),
            })?;
        Ok(Page {
            objects: answer
                .contents()
                .iter()
                .filter_map(|o| {
                    let key = o.key()?;
                    // "Folder" placeholders are not items.
                    (!key.ends_with('/')).then(|| Listed {
                        key: key.to_owned(),
                        size: o.size().unwrap_or(0),
                    })
                })
                .collect(),
            truncated: answer.is_truncated().unwrap_or(false),
        })
    }
}
