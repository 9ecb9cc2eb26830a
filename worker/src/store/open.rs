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
    aws: Arc<tokio::sync::OnceCell<aws_config::SdkConfig>>,
    #[cfg(feature = "s3")]
    s3: super::SharedS3,
}

impl Stores {
    /// Stores opened under `limits`.
    pub fn new(limits: StoreLimits) -> Self {
        #[cfg(any(feature = "s3", feature = "sqs"))]
        let aws = Arc::<tokio::sync::OnceCell<aws_config::SdkConfig>>::default();
        Self {
            #[cfg(feature = "s3")]
            s3: super::SharedS3::new(aws.clone(), limits.force_path_style),
            #[cfg(any(feature = "s3", feature = "sqs"))]
            aws,
            limits,
        }
    }

    /// The limits the stores are opened under.
    pub fn limits(&self) -> &StoreLimits {
        &self.limits
    }

    /// The AWS configuration from the default chain, loaded once.
    #[cfg(any(feature = "s3", feature = "sqs"))]
    pub async fn aws(&mut self) -> aws_config::SdkConfig {
        self.aws
            .get_or_init(shoal_clients::aws::sdk_config)
            .await
            .clone()
    }

    #[cfg(feature = "s3")]
    async fn s3(&mut self) -> aws_sdk_s3::Client {
        self.s3.client().await.clone()
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
    /// references that name their own bucket (S3 events). With
    /// `client_on_first_use`, that S3 store loads the AWS configuration and
    /// builds its client on its first request, not now (a queue worker
    /// whose messages may never name an S3 object); without, now (Lambda's
    /// init phase, which is where a function builds its clients).
    pub async fn input_or_any_bucket(
        &mut self,
        location: Option<&Location>,
        #[cfg_attr(
            not(feature = "s3"),
            expect(unused_variables, reason = "without S3 there is no client to build")
        )]
        client_on_first_use: bool,
    ) -> Result<Arc<dyn ObjectStore>> {
        match location {
            Some(location) => self.open(location, &[]).await,
            #[cfg(feature = "s3")]
            None => {
                let store = if client_on_first_use {
                    super::S3Store::any_bucket_on_first_use(self.s3.clone())
                } else {
                    super::S3Store::any_bucket(self.s3().await)
                };
                Ok(Arc::new(
                    store
                        .with_max_object_bytes(self.limits.max_object_bytes)
                        .with_allowed_buckets(self.limits.allowed_buckets.clone()),
                ))
            }
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

#[cfg(all(test, feature = "s3"))]
mod tests {
    #![allow(
        clippy::unwrap_used,
        reason = "test code: a panic is how a test reports failure"
    )]

    use super::{StoreLimits, Stores};

    fn stores() -> Stores {
        Stores::new(StoreLimits::new(None, 1024, None))
    }

    #[tokio::test]
    async fn the_any_bucket_store_loads_the_aws_configuration_when_asked_to() {
        // A queue worker: nothing until an S3 object is read.
        let mut worker = stores();
        let _input = worker.input_or_any_bucket(None, true).await.unwrap();
        assert!(!worker.aws.initialized());
        // Lambda's init phase: loaded and built now.
        let mut function = stores();
        let _input = function.input_or_any_bucket(None, false).await.unwrap();
        assert!(function.aws.initialized());
    }
}
