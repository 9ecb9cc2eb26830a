//! Opening the stores a mode's command line names: the AWS configuration
//! is loaded, and the S3 client built, once and only if a location needs
//! them.

use std::path::PathBuf;
use std::sync::Arc;

use super::{LocalStore, Location, ObjectStore};
use crate::error::Result;

/// The limits every store a process opens shares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreLimits {
    /// `--s3-force-path-style`; `None`: path style for custom endpoints.
    pub force_path_style: Option<bool>,
    /// Largest object read whole.
    pub max_object_bytes: u64,
    /// Buckets object references may name (`--allowed-buckets`), blank
    /// names left out.
    pub allowed_buckets: Option<Vec<String>>,
}

impl StoreLimits {
    /// Limits with objects read whole up to `max_object_bytes`; blank
    /// bucket names are dropped.
    pub fn new(
        force_path_style: Option<bool>,
        max_object_bytes: u64,
        allowed_buckets: Option<&[String]>,
    ) -> Self {
        Self {
            force_path_style,
            max_object_bytes,
            allowed_buckets: allowed_buckets.map(|buckets| {
                buckets
                    .iter()
                    .map(|b| b.trim().to_owned())
                    .filter(|b| !b.is_empty())
                    .collect()
            }),
        }
    }
}

/// Opens stores under shared [`StoreLimits`], building cloud clients once.
pub struct Stores {
    limits: StoreLimits,
    #[cfg(any(feature = "s3", feature = "sqs"))]
    aws: Option<aws_config::SdkConfig>,
    #[cfg(feature = "s3")]
    s3: Option<aws_sdk_s3::Client>,
}

impl Stores {
    /// Stores opened under `limits`.
    pub fn new(limits: StoreLimits) -> Self {
        Self {
            limits,
            #[cfg(any(feature = "s3", feature = "sqs"))]
            aws: None,
            #[cfg(feature = "s3")]
            s3: None,
        }
    }

    /// The limits the stores are opened under.
    pub fn limits(&self) -> &StoreLimits {
        &self.limits
    }

    /// The AWS configuration from the default chain, loaded once.
    #[cfg(any(feature = "s3", feature = "sqs"))]
    pub async fn aws(&mut self) -> aws_config::SdkConfig {
        if let Some(config) = &self.aws {
            return config.clone();
        }
        let config = shoal_clients::aws::sdk_config().await;
        self.aws = Some(config.clone());
        config
    }

    #[cfg(feature = "s3")]
    async fn s3(&mut self) -> aws_sdk_s3::Client {
        if let Some(client) = &self.s3 {
            return client.clone();
        }
        let client = shoal_clients::s3::s3_client(&self.aws().await, self.limits.force_path_style);
        self.s3 = Some(client.clone());
        client
    }

    /// The store `location` names; a local listing skips `exclude`.
    pub async fn open(
        &mut self,
        location: &Location,
        exclude: &[PathBuf],
    ) -> Result<Arc<dyn ObjectStore>> {
        match location {
            Location::Local(folder) => Ok(Arc::new(
                LocalStore::new(folder)
                    .excluding(exclude)
                    .with_max_object_bytes(self.limits.max_object_bytes)
                    .with_allowed_buckets(self.limits.allowed_buckets.clone()),
            )),
            #[cfg(feature = "s3")]
            Location::S3 { bucket, prefix } => Ok(Arc::new(
                super::S3Store::new(self.s3().await, bucket, prefix)
                    .with_max_object_bytes(self.limits.max_object_bytes)
                    .with_allowed_buckets(self.limits.allowed_buckets.clone()),
            )),
            #[cfg(not(feature = "s3"))]
            Location::S3 { .. } => Err(without_s3(location)),
        }
    }

    /// The store `location` names, or, without one, S3 for object
    /// references that name their own bucket (S3 events).
    pub async fn input_or_any_bucket(
        &mut self,
        location: Option<&Location>,
    ) -> Result<Arc<dyn ObjectStore>> {
        match location {
            Some(location) => self.open(location, &[]).await,
            #[cfg(feature = "s3")]
            None => Ok(Arc::new(
                super::S3Store::any_bucket(self.s3().await)
                    .with_max_object_bytes(self.limits.max_object_bytes)
                    .with_allowed_buckets(self.limits.allowed_buckets.clone()),
            )),
            // Without S3 nothing could read what such a reference names.
            #[cfg(not(feature = "s3"))]
            None => Err(crate::error::Error::without_feature(
                "no --input: object references name S3 buckets",
                "S3",
                "s3",
            )),
        }
    }

    /// The store `location` names, if any.
    pub async fn open_optional(
        &mut self,
        location: Option<&Location>,
    ) -> Result<Option<Arc<dyn ObjectStore>>> {
        match location {
            Some(location) => Ok(Some(self.open(location, &[]).await?)),
            None => Ok(None),
        }
    }
}

/// The error for an `s3://` location in a build without S3.
#[cfg(not(feature = "s3"))]
fn without_s3(location: &Location) -> crate::error::Error {
    crate::error::Error::without_feature(&location.to_string(), "S3", "s3")
}
