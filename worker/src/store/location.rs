//! Where a batch reads or writes: a local folder or an S3 prefix.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

/// A folder (`/data/photos`) or an S3 prefix (`s3://bucket/photos/`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// A local folder.
    Local(PathBuf),
    /// Objects under `prefix` (empty, or ending in `/`) in `bucket`.
    S3 {
        /// Bucket name.
        bucket: String,
        /// Key prefix, `""` or ending with `/`.
        prefix: String,
    },
}

impl FromStr for Location {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let Some(rest) = s.strip_prefix("s3://") else {
            if s.is_empty() {
                return Err("empty location".into());
            }
            return Ok(Self::Local(PathBuf::from(s)));
        };
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(format!(
                "{s:?} names no bucket (expected s3://bucket/prefix)"
            ));
        }
        let prefix = prefix.trim_start_matches('/');
        let prefix = if prefix.is_empty() || prefix.ends_with('/') {
            prefix.to_owned()
        } else {
            format!("{prefix}/")
        };
        Ok(Self::S3 {
            bucket: bucket.to_owned(),
            prefix,
        })
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Local(path) => write!(f, "{}", path.display()),
            Self::S3 { bucket, prefix } => write!(f, "s3://{bucket}/{prefix}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_folders_and_s3_prefixes() {
        assert_eq!("photos".parse(), Ok(Location::Local("photos".into())));
        let s3 = |b: &str, p: &str| Location::S3 {
            bucket: b.into(),
            prefix: p.into(),
        };
        assert_eq!("s3://b".parse(), Ok(s3("b", "")));
        assert_eq!("s3://b/".parse(), Ok(s3("b", "")));
        assert_eq!("s3://b/photos".parse(), Ok(s3("b", "photos/")));
        assert_eq!("s3://b/a/b/".parse(), Ok(s3("b", "a/b/")));
        assert!("s3:///x".parse::<Location>().is_err());
        assert_eq!(s3("b", "x/").to_string(), "s3://b/x/");
    }
}
