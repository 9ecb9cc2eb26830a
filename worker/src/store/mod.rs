//! Object storage seen by the runtime: where inputs are read and outputs
//! written. The local folder is one adapter, S3 another; no SDK type
//! crosses this boundary.

mod local;
mod location;
mod open;
#[cfg(feature = "s3")]
mod s3;

pub use local::LocalStore;
pub use location::Location;
pub use open::{StoreLimits, Stores};
#[cfg(feature = "s3")]
pub use s3::{S3Store, SharedS3, s3_client, sdk_config};

use std::fmt::Debug;

use async_trait::async_trait;
use bytes::Bytes;

use crate::failure::HandlerError;
use crate::message::ObjectRef;

/// A storage failure, naming the object it concerns.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The object does not exist (permanent for the item).
    #[error("object {location} not found")]
    NotFound {
        /// Where it was looked for.
        location: String,
    },
    /// The key cannot name an object in this store (permanent for the item).
    #[error("invalid object key {key:?}: {reason}")]
    InvalidKey {
        /// The offending key.
        key: String,
        /// Why it was refused.
        reason: &'static str,
    },
    /// The object is larger than inputs read whole may be (permanent for
    /// the item: the same object is as large next time).
    #[error(
        "object {location} is {size} bytes, over the limit of {limit} bytes on inputs read whole \
         (--max-object-mib)"
    )]
    TooLarge {
        /// Which object.
        location: String,
        /// Its size (at least; the read stopped past the limit).
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// The reference names a bucket this worker may not read (permanent:
    /// whoever sent it chose the bucket).
    #[error("object {key:?} names bucket {bucket:?}, which is not this worker's input: {reason}")]
    ForeignBucket {
        /// The key it names.
        key: String,
        /// The bucket it names.
        bucket: String,
        /// Why the bucket is refused.
        reason: &'static str,
    },
    /// Any other failure; assumed transient.
    #[error("{operation} {location}: {source}")]
    Io {
        /// What was being done.
        operation: &'static str,
        /// Which object.
        location: String,
        /// The underlying error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl From<StoreError> for HandlerError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::NotFound { .. }
            | StoreError::InvalidKey { .. }
            | StoreError::TooLarge { .. }
            | StoreError::ForeignBucket { .. } => HandlerError::permanent(err.to_string()),
            StoreError::Io { .. } => HandlerError::retryable(err.to_string()),
        }
    }
}

/// Reads inputs and writes outputs.
///
/// Contract: `put` is atomic (a reader sees the old object or the whole new
/// one, never a part) and idempotent (writing the same key twice leaves one
/// object), so a redelivered item overwrites its output instead of
/// duplicating it.
#[async_trait]
pub trait ObjectStore: Send + Sync + Debug {
    /// Reads a whole object, refusing one larger than the store's limit
    /// ([`StoreError::TooLarge`]) without reading it all.
    async fn get(&self, object: &ObjectRef) -> Result<Bytes, StoreError>;
    /// Writes a whole object under `key`.
    async fn put(&self, key: &str, body: Bytes, content_type: &str) -> Result<(), StoreError>;
    /// Whether an object exists under `key`.
    async fn exists(&self, key: &str) -> Result<bool, StoreError>;
    /// Every object of the store, keys relative to its root, sorted by key.
    /// Keys with a segment starting with `.` (hidden files, shoal's state)
    /// are left out.
    async fn list(&self) -> Result<Vec<ObjectRef>, StoreError>;
    /// A printable location for `key` (`/out/a.jpg`, `s3://b/a.jpg`).
    fn location(&self, key: &str) -> String;
    /// The bucket and full key `object` names in S3, checked as
    /// [`ObjectStore::get`] checks it (for a handler that hands the
    /// reference on, such as an S3 event to a hosted function). Stores that
    /// are not S3 refuse.
    fn s3_address(&self, object: &ObjectRef) -> Result<(String, String), StoreError> {
        Err(StoreError::InvalidKey {
            key: object.key.clone(),
            reason: "the input is not an S3 bucket",
        })
    }
}
