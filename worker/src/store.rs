//! Object storage seen by the runtime: where inputs are read and outputs
//! written. The local folder is one adapter; S3 is another. No SDK type
//! crosses this boundary.

use std::fmt::Debug;
use std::io::ErrorKind as IoErrorKind;
use std::path::{Component, Path, PathBuf};

use async_trait::async_trait;
use bytes::Bytes;

use crate::handler::HandlerError;
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
            StoreError::NotFound { .. } | StoreError::InvalidKey { .. } => {
                HandlerError::permanent(err.to_string())
            }
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
    /// Reads a whole object.
    async fn get(&self, object: &ObjectRef) -> Result<Bytes, StoreError>;
    /// Writes a whole object under `key`.
    async fn put(&self, key: &str, body: Bytes, content_type: &str) -> Result<(), StoreError>;
    /// Whether an object exists under `key`.
    async fn exists(&self, key: &str) -> Result<bool, StoreError>;
    /// A printable location for `key` (`/out/a.jpg`, `s3://b/a.jpg`).
    fn location(&self, key: &str) -> String;
}

/// A folder on the local filesystem.
#[derive(Debug, Clone)]
pub struct LocalStore {
    root: PathBuf,
}

impl LocalStore {
    /// A store rooted at `root` (which need not exist until the first `put`).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// The folder this store reads and writes.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Maps a `/`-separated key to a path below the root, refusing keys that
    /// would escape it.
    pub fn path_of(&self, key: &str) -> Result<PathBuf, StoreError> {
        let invalid = |reason| StoreError::InvalidKey {
            key: key.to_owned(),
            reason,
        };
        if key.is_empty() {
            return Err(invalid("empty key"));
        }
        let relative = Path::new(key);
        let mut path = self.root.clone();
        for component in relative.components() {
            match component {
                Component::Normal(part) => path.push(part),
                Component::CurDir => {}
                Component::ParentDir => return Err(invalid("'..' would leave the store")),
                Component::RootDir | Component::Prefix(_) => {
                    return Err(invalid("absolute keys are not allowed"));
                }
            }
        }
        Ok(path)
    }
}

fn io_error(operation: &'static str, path: &Path, err: std::io::Error) -> StoreError {
    let location = path.display().to_string();
    if err.kind() == IoErrorKind::NotFound {
        StoreError::NotFound { location }
    } else {
        StoreError::Io {
            operation,
            location,
            source: Box::new(err),
        }
    }
}

#[async_trait]
impl ObjectStore for LocalStore {
    async fn get(&self, object: &ObjectRef) -> Result<Bytes, StoreError> {
        let path = self.path_of(&object.key)?;
        tokio::fs::read(&path)
            .await
            .map(Bytes::from)
            .map_err(|e| io_error("read", &path, e))
    }

    async fn put(&self, key: &str, body: Bytes, _content_type: &str) -> Result<(), StoreError> {
        let path = self.path_of(key)?;
        let parent = path.parent().unwrap_or(&self.root).to_path_buf();
        tokio::fs::create_dir_all(&parent)
            .await
            .map_err(|e| io_error("create folder", &parent, e))?;
        // Write beside the target, then rename: readers never see half a file,
        // and an interrupted write leaves only a temporary file behind.
        let file_name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let tmp = parent.join(format!(
            ".{file_name}.{}.tmp",
            uuid::Uuid::new_v4().simple()
        ));
        if let Err(e) = tokio::fs::write(&tmp, &body).await {
            let _ = tokio::fs::remove_file(&tmp).await;
            return Err(io_error("write", &tmp, e));
        }
        tokio::fs::rename(&tmp, &path).await.map_err(|e| {
            let err = io_error("rename into", &path, e);
            let tmp = tmp.clone();
            tokio::spawn(async move {
                let _ = tokio::fs::remove_file(tmp).await;
            });
            err
        })
    }

    async fn exists(&self, key: &str) -> Result<bool, StoreError> {
        let path = self.path_of(key)?;
        tokio::fs::try_exists(&path)
            .await
            .map_err(|e| io_error("stat", &path, e))
    }

    fn location(&self, key: &str) -> String {
        self.path_of(key)
            .map(|p| p.display().to_string())
            .unwrap_or_else(|_| key.to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn put_then_get_round_trips_and_overwrites() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::new(dir.path());
        store
            .put("a/b.txt", Bytes::from_static(b"one"), "text/plain")
            .await
            .unwrap();
        store
            .put("a/b.txt", Bytes::from_static(b"two"), "text/plain")
            .await
            .unwrap();
        let obj = ObjectRef {
            bucket: None,
            key: "a/b.txt".into(),
            size: None,
            etag: None,
        };
        assert_eq!(store.get(&obj).await.unwrap(), Bytes::from_static(b"two"));
        assert!(store.exists("a/b.txt").await.unwrap());
        let leftovers: Vec<_> = std::fs::read_dir(dir.path().join("a")).unwrap().collect();
        assert_eq!(leftovers.len(), 1, "no temporary files remain");
    }

    #[tokio::test]
    async fn missing_object_is_a_permanent_not_found() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::new(dir.path());
        let obj = ObjectRef {
            bucket: None,
            key: "nope.jpg".into(),
            size: None,
            etag: None,
        };
        let err = store.get(&obj).await.unwrap_err();
        assert!(matches!(err, StoreError::NotFound { .. }), "{err}");
        assert!(HandlerError::from(err).is_permanent());
    }

    #[test]
    fn keys_cannot_escape_the_root() {
        let store = LocalStore::new("/data");
        assert!(store.path_of("../etc/passwd").is_err());
        assert!(store.path_of("/etc/passwd").is_err());
        assert!(store.path_of("").is_err());
        assert_eq!(
            store.path_of("a/./b.jpg").unwrap(),
            PathBuf::from("/data/a/b.jpg")
        );
    }
}
