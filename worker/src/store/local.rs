//! A folder on the local filesystem as an object store.

use std::io::ErrorKind as IoErrorKind;
use std::path::{Component, Path, PathBuf};
use std::time::UNIX_EPOCH;

use async_trait::async_trait;
use bytes::Bytes;
use walkdir::WalkDir;

use super::{ObjectStore, StoreError};
use crate::message::ObjectRef;

/// A folder on the local filesystem.
#[derive(Debug, Clone)]
pub struct LocalStore {
    root: PathBuf,
    exclude: Vec<PathBuf>,
    max_object_bytes: u64,
    allowed_buckets: Vec<String>,
}

impl LocalStore {
    /// A store rooted at `root` (which need not exist until the first `put`).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self {
            root: root.into(),
            exclude: Vec::new(),
            max_object_bytes: u64::MAX,
            allowed_buckets: Vec::new(),
        }
    }

    /// Buckets whose references read from this folder (to try S3 events
    /// locally); a reference naming any other bucket is refused.
    pub fn with_allowed_buckets(mut self, buckets: Option<Vec<String>>) -> Self {
        self.allowed_buckets = buckets.unwrap_or_default();
        self
    }

    /// Refuses to read a file larger than `limit` bytes.
    pub fn with_max_object_bytes(mut self, limit: u64) -> Self {
        self.max_object_bytes = limit;
        self
    }

    /// Leaves the folders `exclude` (say, an output folder inside the
    /// input) out of [`ObjectStore::list`].
    pub fn excluding(mut self, exclude: &[PathBuf]) -> Self {
        self.exclude = exclude
            .iter()
            .filter_map(|p| std::fs::canonicalize(p).ok())
            .collect();
        self
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

/// Writes `body` to `tmp`, flushes it to disk, renames it to `target` and
/// flushes the folder entry.
fn write_durably(
    tmp: &Path,
    target: &Path,
    body: &[u8],
) -> Result<(), (&'static str, std::io::Error)> {
    use std::io::Write;
    let mut file = std::fs::File::create(tmp).map_err(|e| ("create", e))?;
    file.write_all(body).map_err(|e| ("write", e))?;
    file.sync_all().map_err(|e| ("flush", e))?;
    drop(file);
    std::fs::rename(tmp, target).map_err(|e| ("rename into", e))?;
    if let Some(folder) = target.parent() {
        std::fs::File::open(folder)
            .and_then(|dir| dir.sync_all())
            .map_err(|e| ("flush folder of", e))?;
    }
    Ok(())
}

/// Why `path` cannot be opened, for errors that retrying will not mend.
/// The object at `path` (key `key`), read whole unless it is larger than
/// `limit` bytes, on the calling (blocking) thread.
fn read_bounded(key: &str, path: &Path, limit: u64) -> Result<Bytes, StoreError> {
    use std::io::Read;
    let too_large = |size| StoreError::TooLarge {
        location: path.display().to_string(),
        size,
        limit,
    };
    let file = match std::fs::File::open(path) {
        Ok(file) => file,
        Err(e) => return Err(unreadable(key, path, e)),
    };
    let meta = file.metadata().map_err(|e| io_error("stat", path, e))?;
    if meta.is_dir() {
        return Err(StoreError::InvalidKey {
            key: key.to_owned(),
            reason: "names a folder, not a file (a symbolic link loop, or a folder that could not be listed)",
        });
    }
    let size = meta.len();
    if size > limit {
        return Err(too_large(size));
    }
    // The file may grow while it is read: never read past the limit.
    let mut bytes = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
    file.take(limit.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(|e| io_error("read", path, e))?;
    let read = bytes.len() as u64;
    if read > limit {
        return Err(too_large(read));
    }
    Ok(Bytes::from(bytes))
}

fn unreadable(key: &str, path: &Path, err: std::io::Error) -> StoreError {
    let dangling = err.kind() == IoErrorKind::NotFound
        && std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink());
    let reason = if dangling {
        "a symbolic link whose target does not exist"
    } else if err.raw_os_error() == Some(ELOOP) {
        "a symbolic link loop"
    } else {
        return io_error("open", path, err);
    };
    StoreError::InvalidKey {
        key: key.to_owned(),
        reason,
    }
}

/// `ELOOP` on Linux: too many levels of symbolic links.
const ELOOP: i32 = 40;

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
        if let Some(bucket) = &object.bucket
            && !self.allowed_buckets.contains(bucket)
        {
            return Err(StoreError::ForeignBucket {
                key: object.key.clone(),
                bucket: bucket.clone(),
                reason: "the input is a local folder (--allowed-buckets NAME reads bucket NAME from it)",
            });
        }
        let path = self.path_of(&object.key)?;
        let limit = self.max_object_bytes;
        let key = object.key.clone();
        // Open, stat and read in one trip to the blocking pool: each
        // `tokio::fs` call is a trip of its own, and four of them cost more
        // than reading a small object.
        let read = tokio::task::spawn_blocking(move || read_bounded(&key, &path, limit)).await;
        match read {
            Ok(result) => result,
            Err(e) => Err(StoreError::Io {
                operation: "read",
                location: object.key.clone(),
                source: Box::new(std::io::Error::other(e.to_string())),
            }),
        }
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
        // Durable before it is reported: the data reaches the disk before
        // the rename, and the rename before the caller records the item as
        // done, so a power loss never leaves an empty file counted as
        // written.
        let (tmp_path, target) = (tmp.clone(), path.clone());
        let written = tokio::task::spawn_blocking(move || write_durably(&tmp_path, &target, &body))
            .await
            .map_err(|e| StoreError::Io {
                operation: "write",
                location: path.display().to_string(),
                source: Box::new(e),
            })?;
        if let Err((operation, e)) = written {
            let _ = tokio::fs::remove_file(&tmp).await;
            return Err(io_error(operation, &path, e));
        }
        Ok(())
    }

    async fn exists(&self, key: &str) -> Result<bool, StoreError> {
        let path = self.path_of(key)?;
        tokio::fs::try_exists(&path)
            .await
            .map_err(|e| io_error("stat", &path, e))
    }

    async fn list(&self) -> Result<Vec<ObjectRef>, StoreError> {
        let (root, exclude) = (self.root.clone(), self.exclude.clone());
        tokio::task::spawn_blocking(move || list_folder(&root, &exclude))
            .await
            .map_err(|e| StoreError::Io {
                operation: "list",
                location: self.root.display().to_string(),
                source: Box::new(e),
            })?
    }

    fn location(&self, key: &str) -> String {
        self.path_of(key)
            .map(|p| p.display().to_string())
            .unwrap_or_else(|_| key.to_owned())
    }
}

/// Every regular file below `root` (following links), hidden entries and
/// `exclude`d folders left out. The etag is `<size>-<mtime ns>`, so an input
/// that changes between runs is processed again.
fn list_folder(root: &Path, exclude: &[PathBuf]) -> Result<Vec<ObjectRef>, StoreError> {
    let meta = std::fs::metadata(root).map_err(|e| io_error("read folder", root, e))?;
    if !meta.is_dir() {
        return Err(StoreError::Io {
            operation: "list",
            location: root.display().to_string(),
            source: "not a folder".into(),
        });
    }
    let mut objects = Vec::new();
    let walker = WalkDir::new(root)
        .follow_links(true)
        .into_iter()
        .filter_entry(|entry| {
            let hidden = entry.depth() > 0 && entry.file_name().to_string_lossy().starts_with('.');
            let excluded = entry.file_type().is_dir()
                && std::fs::canonicalize(entry.path())
                    .map(|p| exclude.contains(&p))
                    .unwrap_or(false);
            !hidden && !excluded
        });
    let key_of = |path: &Path| {
        path.strip_prefix(root)
            .unwrap_or(path)
            .components()
            .map(|c| c.as_os_str().to_string_lossy())
            .collect::<Vec<_>>()
            .join("/")
    };
    for entry in walker {
        let entry = match entry {
            Ok(entry) => entry,
            // A dangling link, a link loop or a folder that cannot be read
            // is one item that fails with its reason, not the whole run.
            Err(e) if e.depth() > 0 && e.path().is_some() => {
                let path = e.path().unwrap_or(root);
                tracing::warn!(path = %path.display(), error = %e, "input entry cannot be read; it will be dead-lettered");
                objects.push(ObjectRef {
                    bucket: None,
                    key: key_of(path),
                    size: None,
                    etag: None,
                });
                continue;
            }
            Err(e) => {
                let path = e.path().unwrap_or(root).to_owned();
                return Err(io_error("list", &path, e.into()));
            }
        };
        if !entry.file_type().is_file() {
            continue;
        }
        let key = key_of(entry.path());
        let meta = entry
            .metadata()
            .map_err(|e| io_error("stat", entry.path(), e.into()))?;
        let mtime = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        objects.push(ObjectRef {
            bucket: None,
            key,
            size: Some(meta.len()),
            etag: Some(format!("{:x}-{:x}", meta.len(), mtime)),
        });
    }
    objects.sort_by(|a, b| a.key.cmp(&b.key));
    Ok(objects)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::HandlerError;

    #[tokio::test]
    async fn a_reference_naming_a_bucket_is_refused_not_read_from_the_folder() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.jpg"), b"x").unwrap();
        let store = LocalStore::new(dir.path());
        let foreign = ObjectRef {
            bucket: Some("payroll".into()),
            key: "a.jpg".into(),
            size: None,
            etag: None,
        };
        let err = HandlerError::from(store.get(&foreign).await.unwrap_err());
        assert!(err.is_permanent());
        assert!(
            err.reason()
                .contains("names bucket \"payroll\", which is not this worker's input"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn lists_files_recursively_skipping_hidden_and_excluded() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("sub")).unwrap();
        std::fs::create_dir_all(root.join("out/x")).unwrap();
        std::fs::create_dir_all(root.join(".git")).unwrap();
        for f in [
            "b.jpg",
            "sub/a.png",
            "out/x/t.jpg",
            ".DS_Store",
            ".git/HEAD",
        ] {
            std::fs::write(root.join(f), b"x").unwrap();
        }
        let store = LocalStore::new(root).excluding(&[root.join("out")]);
        let keys: Vec<_> = store
            .list()
            .await
            .unwrap()
            .into_iter()
            .map(|o| o.key)
            .collect();
        assert_eq!(keys, ["b.jpg", "sub/a.png"]);
    }

    #[tokio::test]
    async fn missing_folder_is_a_clear_error() {
        let err = LocalStore::new("/definitely/not/here")
            .list()
            .await
            .unwrap_err();
        assert!(err.to_string().contains("/definitely/not/here"), "{err}");
    }

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
