//! Lists the input folder into object references.

use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use walkdir::WalkDir;

use crate::error::{Error, Result};
use crate::message::ObjectRef;

/// Every regular file below `root` as an object reference, sorted by key.
///
/// Hidden files and folders (name starting with `.`) are skipped, and so is
/// any folder in `exclude` (the output and state folders, when they live
/// inside the input). The etag is `<size>-<mtime ns>`, so an input that
/// changes between runs is processed again.
pub fn list(root: &Path, exclude: &[PathBuf]) -> Result<Vec<ObjectRef>> {
    let meta = std::fs::metadata(root).map_err(|e| Error::io("read input folder", root, e))?;
    if !meta.is_dir() {
        return Err(Error::Config(format!(
            "--input {} is not a folder",
            root.display()
        )));
    }
    let exclude: Vec<PathBuf> = exclude
        .iter()
        .filter_map(|p| std::fs::canonicalize(p).ok())
        .collect();
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
    for entry in walker {
        let entry = entry.map_err(|e| {
            let path = e.path().unwrap_or(root).to_owned();
            Error::io("list", &path, e.into())
        })?;
        if !entry.file_type().is_file() {
            continue;
        }
        let relative = entry.path().strip_prefix(root).unwrap_or(entry.path());
        let key = relative
            .components()
            .map(|c| c.as_os_str().to_string_lossy())
            .collect::<Vec<_>>()
            .join("/");
        let meta = entry
            .metadata()
            .map_err(|e| Error::io("stat", entry.path(), e.into()))?;
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

    #[test]
    fn lists_files_recursively_skipping_hidden_and_excluded() {
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
        let keys: Vec<_> = list(root, &[root.join("out")])
            .unwrap()
            .into_iter()
            .map(|o| o.key)
            .collect();
        assert_eq!(keys, ["b.jpg", "sub/a.png"]);
    }

    #[test]
    fn missing_input_is_a_clear_error() {
        let err = list(Path::new("/definitely/not/here"), &[]).unwrap_err();
        assert!(err.to_string().contains("/definitely/not/here"), "{err}");
    }
}
