//! Item lists: a CSV or JSON Lines object naming the keys to fan out
//! (`source.s3.list`), read a page at a time from a byte offset.
//!
//! Contract:
//! - One item per line, parsed by [`shoal_protocol::message::list`] (CSV
//!   with a header row, the key in column `keyField`; JSON Lines, the key in
//!   field `keyField` or the line a JSON string; blank lines skipped).
//! - Resumable: every item carries the byte offset just after its line, so
//!   the fan-out checkpoints the offset after the last item of the last
//!   enqueued chunk and the next page is read from there with a ranged GET
//!   (the CSV header is read again from the start of the object). The
//!   chunks cut are the ones an uninterrupted run cuts: the list is read in
//!   its own order.
//! - Hostile lists: a line longer than [`MAX_LINE`] bytes, a key longer than
//!   S3's 1,024 bytes, an empty key, a header without the column, or a line
//!   that does not parse is an error naming the list and the byte offset
//!   of the line, never skipped in silence: the job fails (`ListInvalid`).

use shoal_protocol::message::list::{Locator, column, key_of};

use crate::crd::{ItemList, ListFormat};
use crate::error::{Error, Result};
use crate::s3::S3;
use crate::split::Listed;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};

/// Longest line read, in bytes.
pub const MAX_LINE: usize = 64 * 1024;

/// Items read from a list.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ListPage {
    /// The items, in list order; sizes are unknown (-1).
    pub items: Vec<Listed>,
    /// Byte offset after each item's line.
    pub ends: Vec<i64>,
    /// Whether the list ended.
    pub last: bool,
    /// Byte offset where reading stopped.
    pub end: i64,
    /// ETag of the list object read (of the manifest, for an inventory).
    pub etag: Option<String>,
    /// Whether the object read ended (for a CSV or JSON Lines list, the
    /// same as `last`; for an inventory, its current data file): the last
    /// chunk closes here.
    pub file_end: bool,
    /// The inventory data file read, by index.
    pub file: Option<usize>,
}

/// Most bytes read past blank lines before a page with no item ends (its
/// offset is checkpointed all the same).
pub(crate) const BLANK_BUDGET: u64 = 1 << 20;

/// Why a line could not be read.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum LineError {
    /// The connection or the stream failed: worth reading again.
    Io(String),
    /// The list itself is wrong.
    TooLong,
    /// The bytes cannot be decoded (a gzip data file that is not gzip).
    Corrupt(String),
}

impl LineError {
    /// The error for a line at `at`: `io` for a failed read (retried),
    /// `bad` for a list that is wrong.
    pub(crate) fn into_error(
        self,
        at: String,
        io: impl Fn(String) -> Error,
        bad: impl Fn(String) -> Error,
    ) -> Error {
        match self {
            Self::Io(e) => io(format!("{at}: {e}")),
            Self::TooLong => bad(format!("{at}: a line longer than {MAX_LINE} bytes")),
            Self::Corrupt(e) => bad(format!("{at}: {e}")),
        }
    }
}

impl S3 {
    /// Up to `max_items` items of `list` (in `bucket`) from byte `offset`,
    /// reading the version `etag` names (the one the first page read, so a
    /// list replaced mid fan-out is refused instead of read at an offset of
    /// another file).
    pub async fn read_list(
        &self,
        bucket: &str,
        list: &ItemList,
        (offset, etag): (i64, Option<&str>),
        max_items: usize,
    ) -> Result<ListPage> {
        let name = format!("s3://{bucket}/{}", list.key);
        let bad = |reason: String| Error::BadList {
            list: name.clone(),
            reason,
        };
        let io = |reason: String| Error::Source {
            source_name: name.clone(),
            reason,
        };
        let line_error = |at: String| move |e: LineError| e.into_error(at, io, bad);
        let mut offset = u64::try_from(offset).unwrap_or(0);
        let mut etag = etag.map(str::to_owned);
        let locator = match list.format {
            ListFormat::JsonLines => Locator::Field(list.key_field().to_owned()),
            ListFormat::Inventory => {
                return Err(bad(
                    "an inventory manifest is not a list of lines (read_inventory reads it)"
                        .to_owned(),
                ));
            }
            ListFormat::Csv => {
                let (mut header, tag) = self.lines(bucket, list, 0, etag.as_deref()).await?;
                etag = etag.or(tag);
                let (line, end) = read_line(&mut header)
                    .await
                    .map_err(line_error("line 1 (header)".to_owned()))?;
                let index = column(&line, list.key_field())
                    .map_err(|e| bad(format!("line 1 (header): {e}")))?;
                offset = offset.max(end);
                Locator::Column(index)
            }
        };
        let (mut reader, tag) = self.lines(bucket, list, offset, etag.as_deref()).await?;
        let mut page = ListPage {
            etag: etag.or(tag),
            ..ListPage::default()
        };
        let mut position = offset;
        while page.items.len() < max_items {
            if page.items.is_empty() && position - offset > BLANK_BUDGET {
                break;
            }
            let (line, read) = read_line(&mut reader)
                .await
                .map_err(line_error(format!("the line starting at byte {position}")))?;
            if read == 0 {
                page.last = true;
                break;
            }
            position += read;
            let key = key_of(&line, &locator)
                .map_err(|e| bad(format!("the line ending at byte {position}: {e}")))?;
            if let Some(key) = key {
                page.items.push(Listed { key, size: -1 });
                page.ends.push(i64::try_from(position).unwrap_or(i64::MAX));
            }
        }
        page.end = i64::try_from(position).unwrap_or(i64::MAX);
        page.file_end = page.last;
        Ok(page)
    }

    /// The list object from byte `offset` (only the version `etag` names,
    /// when given), buffered, and its ETag.
    async fn lines(
        &self,
        bucket: &str,
        list: &ItemList,
        offset: u64,
        etag: Option<&str>,
    ) -> Result<(
        BufReader<impl tokio::io::AsyncRead + Unpin + use<>>,
        Option<String>,
    )> {
        let name = format!("s3://{bucket}/{}", list.key);
        let answer = self
            .client
            .get_object()
            .bucket(bucket)
            .key(&list.key)
            .range(format!("bytes={offset}-"))
            .set_if_match(etag.map(str::to_owned))
            .send()
            .await;
        let status = |e: &aws_sdk_s3::error::SdkError<
            _,
            aws_sdk_s3::config::http::HttpResponse,
        >| { e.raw_response().map(|r| r.status().as_u16()) };
        let (body, tag) = match answer {
            Ok(answer) => {
                let tag = answer.e_tag().map(str::to_owned);
                (answer.body, tag)
            }
            // Past the end (an empty rest): nothing more to read.
            Err(e) if status(&e) == Some(416) => {
                (aws_sdk_s3::primitives::ByteStream::from_static(b""), None)
            }
            Err(e) if status(&e) == Some(412) => {
                return Err(Error::BadList {
                    list: name,
                    reason: format!(
                        "the list changed during the fan-out (it was ETag {}): make a new BatchJob for the new list",
                        etag.unwrap_or_default()
                    ),
                });
            }
            Err(e) => {
                return Err(Error::Source {
                    source_name: name,
                    reason: aws_sdk_s3::error::DisplayErrorContext(e).to_string(),
                });
            }
        };
        Ok((BufReader::new(body.into_async_read()), tag))
    }
}

/// The next line (with its break) and how many bytes it took; `(_, 0)` at
/// the end. A line over [`MAX_LINE`] bytes is refused, read no further.
pub(crate) async fn read_line<R: tokio::io::AsyncBufRead + Unpin>(
    reader: &mut R,
) -> std::result::Result<(Vec<u8>, u64), LineError> {
    let mut line = Vec::new();
    let limit = u64::try_from(MAX_LINE).unwrap_or(u64::MAX) + 1;
    let read = reader
        .take(limit)
        .read_until(b'\n', &mut line)
        .await
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::InvalidData {
                LineError::Corrupt(format!("cannot decode the list: {e}"))
            } else {
                LineError::Io(format!("cannot read the list: {e}"))
            }
        })?;
    if line.len() > MAX_LINE {
        return Err(LineError::TooLong);
    }
    Ok((line, u64::try_from(read).unwrap_or(0)))
}

#[cfg(test)]
mod tests {
    #![allow(
        clippy::unwrap_used,
        reason = "test code: a panic is how a test reports failure"
    )]

    use super::*;

    #[tokio::test]
    async fn a_line_past_the_limit_is_refused_without_reading_it_all() {
        let mut text = vec![b'a'; MAX_LINE + 10];
        text.push(b'\n');
        let mut reader = BufReader::new(&text[..]);
        assert_eq!(read_line(&mut reader).await, Err(LineError::TooLong));
        let mut ok = BufReader::new(&b"one\ntwo"[..]);
        assert_eq!(read_line(&mut ok).await, Ok((b"one\n".to_vec(), 4)));
        assert_eq!(read_line(&mut ok).await, Ok((b"two".to_vec(), 3)));
        assert_eq!(read_line(&mut ok).await, Ok((Vec::new(), 0)));
    }
}
