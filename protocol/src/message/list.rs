//! Item lists: the key each line of a CSV or JSON Lines list names. Pure;
//! the operator (`source.s3.list`) and local mode (`run --input-list`)
//! read the lines.
//!
//! - CSV: a header row names the columns; the key is in the column named
//!   by the caller (`key` by default); fields may be quoted (RFC 4180), a
//!   record may not span lines.
//! - JSON Lines: each line is an object whose field (`key` by default) is
//!   a string, or a JSON string, the key itself.
//! - Plain text: each line is a key.
//! - Blank lines are skipped. An empty key, one longer than S3's 1,024
//!   bytes, or a line that does not parse is an error, never skipped.

/// Longest S3 key, in bytes.
pub const MAX_KEY: usize = 1024;

/// Where the key is in a line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Locator {
    /// CSV column index.
    Column(usize),
    /// JSON field.
    Field(String),
    /// The whole line.
    Line,
}

/// The column of `field` in CSV `header`.
pub fn column(header: &[u8], field: &str) -> Result<usize, String> {
    let header = header.strip_prefix("\u{feff}".as_bytes()).unwrap_or(header);
    let record = csv_record(header)?;
    record
        .iter()
        .position(|name| name.trim() == field)
        .ok_or_else(|| format!("the header has no column {field:?}"))
}

fn csv_record(line: &[u8]) -> Result<csv::StringRecord, String> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(line);
    match reader.records().next() {
        Some(Ok(record)) => Ok(record),
        Some(Err(e)) => Err(format!("not CSV: {e}")),
        None => Ok(csv::StringRecord::new()),
    }
}

/// The key `line` names (its line break ignored), `None` for a blank line.
pub fn key_of(line: &[u8], locator: &Locator) -> Result<Option<String>, String> {
    let text = std::str::from_utf8(line).map_err(|_| "not UTF-8".to_owned())?;
    let text = text.trim_end_matches(['\r', '\n']);
    if text.trim().is_empty() {
        return Ok(None);
    }
    let key = match locator {
        Locator::Line => text.to_owned(),
        Locator::Column(index) => {
            if text.matches('"').count() % 2 == 1 {
                return Err("unbalanced quotes (a record may not span lines)".to_owned());
            }
            let record = csv_record(text.as_bytes())?;
            record
                .get(*index)
                .map(str::to_owned)
                .ok_or_else(|| format!("no column {} in this record", index + 1))?
        }
        Locator::Field(field) => match serde_json::from_str::<serde_json::Value>(text) {
            Ok(serde_json::Value::String(key)) => key,
            Ok(serde_json::Value::Object(object)) => match object.get(field) {
                Some(serde_json::Value::String(key)) => key.clone(),
                Some(_) => return Err(format!("field {field:?} is not a string")),
                None => return Err(format!("no field {field:?}")),
            },
            Ok(_) => return Err("neither an object nor a string".to_owned()),
            Err(e) => return Err(format!("not JSON: {e}")),
        },
    };
    if key.is_empty() {
        return Err("the key is empty".to_owned());
    }
    if key.len() > MAX_KEY {
        return Err(format!(
            "a {}-byte key; S3 keys are at most {MAX_KEY} bytes",
            key.len()
        ));
    }
    Ok(Some(key))
}

#[cfg(test)]
mod tests {
    #![allow(
        clippy::unwrap_used,
        reason = "test code: a panic is how a test reports failure"
    )]

    use super::*;

    #[test]
    fn csv_keys_come_from_the_named_column_quotes_and_all() {
        let index = column(b"size,key,etag\n", "key");
        assert_eq!(index, Ok(1));
        let at = Locator::Column(1);
        assert_eq!(key_of(b"10,a/b.jpg,x\n", &at), Ok(Some("a/b.jpg".into())));
        assert_eq!(
            key_of(b"10,\"with, comma \"\"q\"\".jpg\",x\r\n", &at),
            Ok(Some("with, comma \"q\".jpg".into()))
        );
        assert_eq!(key_of(b"\n", &at), Ok(None), "blank lines skipped");
        assert!(key_of(b"10\n", &at).unwrap_err().contains("no column 2"));
        assert!(column(b"a,b\n", "key").unwrap_err().contains("no column"));
        assert_eq!(
            column("\u{feff}key,size\n".as_bytes(), "key"),
            Ok(0),
            "a BOM"
        );
        assert!(
            key_of(b"1,\"open quote\n", &at)
                .unwrap_err()
                .contains("unbalanced")
        );
    }

    #[test]
    fn json_lines_take_an_object_field_or_a_string() {
        let field = Locator::Field("key".into());
        assert_eq!(
            key_of(br#"{"key": "x/1.jpg", "n": 3}"#, &field),
            Ok(Some("x/1.jpg".into()))
        );
        assert_eq!(key_of(br#""x/2.jpg""#, &field), Ok(Some("x/2.jpg".into())));
        for (line, why) in [
            (&br#"{"key": 7}"#[..], "not a string"),
            (br#"{"name": "x"}"#, "no field"),
            (b"[1]", "neither"),
            (b"{oops", "not JSON"),
            (br#""""#, "empty"),
            (b"\xff\xfe", "UTF-8"),
        ] {
            let err = key_of(line, &field).unwrap_err();
            assert!(err.contains(why), "{err}");
        }
        let long = format!("\"{}\"", "k".repeat(1025));
        assert!(
            key_of(long.as_bytes(), &field)
                .unwrap_err()
                .contains("1025-byte")
        );
    }

    #[test]
    fn plain_lines_are_keys() {
        assert_eq!(
            key_of(b"a b.jpg\r\n", &Locator::Line),
            Ok(Some("a b.jpg".into()))
        );
        assert_eq!(key_of(b"  \n", &Locator::Line), Ok(None));
    }
}
