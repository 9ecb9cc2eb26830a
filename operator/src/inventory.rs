//! S3 Inventory reports as item lists (`source.s3.list.format: inventory`):
//! the list names an inventory's `manifest.json`; its CSV data files (gzip)
//! name the items.
//!
//! Contract:
//! - The manifest must be a CSV inventory (`fileFormat: CSV`; ORC and
//!   Parquet are refused with a clear reason) of `source.s3.bucket`
//!   (`sourceBucket`): an inventory of another bucket fails the job
//!   (`ListInvalid`) rather than fan out keys that are not there. Its
//!   `fileSchema` must have `Key`; `Size` sizes the chunks when present.
//! - Data files are read in the manifest's order from the bucket holding
//!   the manifest; each is checked against the size the manifest gives.
//!   Keys are URL-encoded in the report (`+` a space, `%XX` a byte) and
//!   decoded here. Rows that are delete markers (`IsDeleteMarker` true) or
//!   older versions (`IsLatest` false) are not items.
//! - Resumable: the checkpoint is (data file, byte offset in its
//!   decompressed text, manifest ETag). A page decompresses its file from
//!   the start and skips to the offset (gzip cannot be entered midway), so
//!   pages are [`PAGE`] items; a chunk never spans two data files (each
//!   file's last chunk closes with it), so a resumed fan-out cuts the
//!   chunks an uninterrupted one cuts.
//! - Hostile reports: a row naming another bucket, an empty or
//!   undecodable key, a line over [`crate::item_list::MAX_LINE`] bytes, a
//!   manifest over [`MAX_MANIFEST`] bytes or a data file of another size
//!   fails the job with where and why.

use async_compression::tokio::bufread::GzipDecoder;
use serde::Deserialize;
use tokio::io::{AsyncReadExt, BufReader};

use crate::crd::ItemList;
use crate::error::{Error, Result};
use crate::item_list::{BLANK_BUDGET, ListPage, read_line};
use crate::s3::S3;
use crate::split::Listed;

/// Items read from an inventory per page.
pub const PAGE: usize = 10_000;
/// Largest manifest read, in bytes.
pub const MAX_MANIFEST: i64 = 16 << 20;

/// The parts of an inventory `manifest.json` the fan-out reads.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    /// The bucket inventoried.
    pub source_bucket: String,
    /// `CSV`, `ORC` or `Parquet`.
    pub file_format: String,
    /// Column names, comma-separated.
    pub file_schema: String,
    /// The data files.
    pub files: Vec<DataFile>,
}

/// One data file of an inventory.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct DataFile {
    /// Its key, in the bucket holding the manifest.
    pub key: String,
    /// Its size in bytes (compressed).
    pub size: i64,
}

/// Where the columns the fan-out reads are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Schema {
    bucket: Option<usize>,
    key: usize,
    size: Option<usize>,
    is_latest: Option<usize>,
    delete_marker: Option<usize>,
}

impl Schema {
    /// The columns of `file_schema` (`Bucket, Key, Size, ...`).
    pub fn parse(file_schema: &str) -> std::result::Result<Self, String> {
        let names: Vec<&str> = file_schema.split(',').map(str::trim).collect();
        let find = |name: &str| names.iter().position(|n| n.eq_ignore_ascii_case(name));
        Ok(Self {
            bucket: find("Bucket"),
            key: find("Key").ok_or_else(|| format!("fileSchema {file_schema:?} has no Key"))?,
            size: find("Size"),
            is_latest: find("IsLatest"),
            delete_marker: find("IsDeleteMarker"),
        })
    }
}

/// The manifest in `bytes`, checked to be a CSV inventory of `bucket`.
pub fn parse_manifest(
    bytes: &[u8],
    bucket: &str,
) -> std::result::Result<(Manifest, Schema), String> {
    let manifest: Manifest = serde_json::from_slice(bytes)
        .map_err(|e| format!("not an S3 Inventory manifest.json: {e}"))?;
    if manifest.source_bucket != bucket {
        return Err(format!(
            "it is an inventory of bucket {:?}, not of source.s3.bucket {bucket:?}",
            manifest.source_bucket
        ));
    }
    if !manifest.file_format.eq_ignore_ascii_case("CSV") {
        return Err(format!(
            "its fileFormat is {:?}; only CSV inventories can be read",
            manifest.file_format
        ));
    }
    let schema = Schema::parse(&manifest.file_schema)?;
    Ok((manifest, schema))
}

/// An inventory key decoded: `+` is a space, `%XX` a byte, UTF-8 after.
pub fn decode_key(encoded: &str) -> std::result::Result<String, String> {
    let spaced = encoded.replace('+', " ");
    let key = percent_encoding::percent_decode_str(&spaced)
        .decode_utf8()
        .map_err(|_| format!("key {encoded:?} does not decode to UTF-8"))?
        .into_owned();
    if key.is_empty() || key.len() > shoal_protocol::message::list::MAX_KEY {
        return Err(format!(
            "key {encoded:?} is empty or longer than {} bytes",
            shoal_protocol::message::list::MAX_KEY
        ));
    }
    Ok(key)
}

/// The item a data file row names; `None` for a blank line, a delete
/// marker or an older version.
pub fn row(
    line: &[u8],
    schema: &Schema,
    bucket: &str,
) -> std::result::Result<Option<Listed>, String> {
    if line.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(line);
    let record = match reader.records().next() {
        Some(Ok(record)) => record,
        Some(Err(e)) => return Err(format!("not CSV: {e}")),
        None => return Ok(None),
    };
    let field = |index: Option<usize>| index.and_then(|i| record.get(i)).map(str::trim);
    if let Some(named) = field(schema.bucket)
        && named != bucket
    {
        return Err(format!("the row names bucket {named:?}, not {bucket:?}"));
    }
    if field(schema.delete_marker).is_some_and(|v| v.eq_ignore_ascii_case("true"))
        || field(schema.is_latest).is_some_and(|v| v.eq_ignore_ascii_case("false"))
    {
        return Ok(None);
    }
    let encoded = field(Some(schema.key)).ok_or("the row has no Key column")?;
    let key = decode_key(encoded)?;
    let size = field(schema.size)
        .and_then(|s| s.parse::<i64>().ok())
        .unwrap_or(-1);
    Ok(Some(Listed { key, size }))
}

impl S3 {
    /// Up to `max_items` items of the inventory `list` names (its manifest
    /// in `list_bucket`, inventorying `bucket`), from data file `file` at
    /// decompressed byte `offset`, the manifest's version pinned by `etag`.
    /// `page.file_end` says the data file ended; `page.last` that it was
    /// the last one.
    pub async fn read_inventory(
        &self,
        (list_bucket, bucket): (&str, &str),
        list: &ItemList,
        (file, offset, etag): (usize, u64, Option<&str>),
        max_items: usize,
    ) -> Result<ListPage> {
        let name = format!("s3://{list_bucket}/{}", list.key);
        let bad = |reason: String| Error::BadList {
            list: name.clone(),
            reason,
        };
        let (manifest, tag) = self
            .read_small(list_bucket, &list.key, etag, MAX_MANIFEST)
            .await?;
        let (manifest, schema) = parse_manifest(&manifest, bucket).map_err(&bad)?;
        let mut page = ListPage {
            etag: tag.or(etag.map(str::to_owned)),
            ..ListPage::default()
        };
        let Some(data) = manifest.files.get(file) else {
            // Past the last file (or an inventory of no files).
            page.last = true;
            page.file_end = true;
            return Ok(page);
        };
        let where_ = format!("data file {} (s3://{list_bucket}/{})", file + 1, data.key);
        let answer = self
            .client
            .get_object()
            .bucket(list_bucket)
            .key(&data.key)
            .send()
            .await
            .map_err(|e| Error::Source {
                source_name: where_.clone(),
                reason: aws_sdk_s3::error::DisplayErrorContext(e).to_string(),
            })?;
        if let Some(length) = answer.content_length()
            && length != data.size
        {
            return Err(bad(format!(
                "{where_} is {length} bytes, the manifest says {}",
                data.size
            )));
        }
        let compressed = BufReader::new(answer.body.into_async_read());
        let mut decoder = GzipDecoder::new(compressed);
        decoder.multiple_members(true);
        let mut reader = BufReader::new(decoder);
        let io = |e: String| Error::Source {
            source_name: where_.clone(),
            reason: e,
        };
        let skipped = tokio::io::copy(&mut (&mut reader).take(offset), &mut tokio::io::sink())
            .await
            .map_err(|e| {
                let reason = format!("cannot decompress: {e}");
                if e.kind() == std::io::ErrorKind::InvalidData {
                    bad(format!("{where_}: {reason}"))
                } else {
                    io(reason)
                }
            })?;
        let mut position = skipped;
        while page.items.len() < max_items {
            // Rows that are not items (older versions, delete markers) are
            // progress too, but a page reads only so much of them.
            if page.items.is_empty() && position - skipped > BLANK_BUDGET * 64 {
                break;
            }
            let (line, read) = read_line(&mut reader).await.map_err(|e| {
                e.into_error(format!("{where_}, the line at byte {position}"), io, bad)
            })?;
            if read == 0 {
                page.file_end = true;
                page.last = file + 1 >= manifest.files.len();
                break;
            }
            position += read;
            let item = row(&line, &schema, bucket)
                .map_err(|e| bad(format!("{where_}, the line ending at byte {position}: {e}")))?;
            if let Some(item) = item {
                page.items.push(item);
                page.ends.push(i64::try_from(position).unwrap_or(i64::MAX));
            }
        }
        page.end = i64::try_from(position).unwrap_or(i64::MAX);
        page.file = Some(file);
        Ok(page)
    }

    /// A whole object of at most `max` bytes (the version `etag` names, if
    /// given) and its ETag.
    async fn read_small(
        &self,
        bucket: &str,
        key: &str,
        etag: Option<&str>,
        max: i64,
    ) -> Result<(Vec<u8>, Option<String>)> {
        let name = format!("s3://{bucket}/{key}");
        let answer = self
            .client
            .get_object()
            .bucket(bucket)
            .key(key)
            .set_if_match(etag.map(str::to_owned))
            .send()
            .await;
        let answer = match answer {
            Ok(answer) => answer,
            Err(e) if e.raw_response().map(|r| r.status().as_u16()) == Some(412) => {
                return Err(Error::BadList {
                    list: name,
                    reason: "the manifest changed during the fan-out: make a new BatchJob for the new inventory".to_owned(),
                });
            }
            Err(e) => {
                return Err(Error::Source {
                    source_name: name,
                    reason: aws_sdk_s3::error::DisplayErrorContext(e).to_string(),
                });
            }
        };
        if answer.content_length().is_some_and(|n| n > max) {
            return Err(Error::BadList {
                list: name,
                reason: format!("the manifest is over {max} bytes"),
            });
        }
        let tag = answer.e_tag().map(str::to_owned);
        let mut bytes = Vec::new();
        let limit = u64::try_from(max).unwrap_or(0) + 1;
        answer
            .body
            .into_async_read()
            .take(limit)
            .read_to_end(&mut bytes)
            .await
            .map_err(|e| Error::Source {
                source_name: name.clone(),
                reason: e.to_string(),
            })?;
        if bytes.len() as u64 >= limit {
            return Err(Error::BadList {
                list: name,
                reason: format!("the manifest is over {max} bytes"),
            });
        }
        Ok((bytes, tag))
    }
}

#[cfg(test)]
mod tests {
    #![allow(
        clippy::unwrap_used,
        reason = "test code: a panic is how a test reports failure"
    )]

    use super::*;

    const SCHEMA: &str =
        "Bucket, Key, VersionId, IsLatest, IsDeleteMarker, Size, LastModifiedDate, ETag";

    fn manifest(source: &str, format: &str) -> String {
        format!(
            r#"{{"sourceBucket":"{source}","destinationBucket":"arn:aws:s3:::inv","version":"2016-11-30",
            "creationTimestamp":"1514944800000","fileFormat":"{format}","fileSchema":"{SCHEMA}",
            "files":[{{"key":"inv/data/a.csv.gz","size":120,"MD5checksum":"f1"}}]}}"#
        )
    }

    #[test]
    fn a_manifest_must_be_a_csv_inventory_of_the_source_bucket() {
        let (m, schema) = parse_manifest(manifest("photos", "CSV").as_bytes(), "photos").unwrap();
        assert_eq!(m.files[0].key, "inv/data/a.csv.gz");
        assert_eq!(schema.key, 1);
        let other = parse_manifest(manifest("secrets", "CSV").as_bytes(), "photos").unwrap_err();
        assert!(other.contains("\"secrets\""), "{other}");
        let orc = parse_manifest(manifest("photos", "ORC").as_bytes(), "photos").unwrap_err();
        assert!(orc.contains("only CSV"), "{orc}");
        assert!(parse_manifest(b"[]", "photos").is_err());
        assert!(Schema::parse("Bucket, Size").is_err());
    }

    #[test]
    fn rows_decode_keys_and_skip_old_versions_and_delete_markers() {
        let schema = Schema::parse(SCHEMA).unwrap();
        let line = br#""photos","a/my+cat%2Bdog%C3%A9.jpg","v1","true","false","1234","2026-01-01T00:00:00.000Z","e1""#;
        assert_eq!(
            row(line, &schema, "photos").unwrap(),
            Some(Listed {
                key: "a/my cat+dog\u{e9}.jpg".into(),
                size: 1234
            })
        );
        let old = br#""photos","a.jpg","v0","false","false","1","",""
"#;
        assert_eq!(row(old, &schema, "photos").unwrap(), None);
        let marker = br#""photos","a.jpg","v2","true","true","","","""#;
        assert_eq!(row(marker, &schema, "photos").unwrap(), None);
        assert_eq!(row(b"\n", &schema, "photos").unwrap(), None);
        let foreign = br#""secrets","a.jpg","v1","true","false","1","","""#;
        assert!(
            row(foreign, &schema, "photos")
                .unwrap_err()
                .contains("secrets")
        );
        let empty = br#""photos","","v1","true","false","1","","""#;
        assert!(row(empty, &schema, "photos").is_err());
        let broken = br#""photos","%FF%FE","v1","true","false","1","","""#;
        assert!(
            row(broken, &schema, "photos")
                .unwrap_err()
                .contains("UTF-8")
        );
    }
}
