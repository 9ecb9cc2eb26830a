//! `run --input-list`: the keys a list file names, matched to the input
//! listing.

use std::collections::HashSet;
use std::path::Path;

use crate::error::{Error, Result};
use crate::message::ObjectRef;

/// Longest line of an `--input-list`.
const MAX_LIST_LINE: usize = 64 * 1024;

/// The keys `file` lists, in order, each once: CSV (by extension, a
/// `key` column), JSON Lines (`.jsonl`, `.ndjson`) or one key per line.
pub(super) fn read_key_list(file: &Path) -> Result<Vec<String>> {
    use crate::message::list::{Locator, column, key_of};
    use std::io::{BufRead, Read};
    let open = std::fs::File::open(file).map_err(|e| Error::io("open --input-list", file, e))?;
    let mut reader = std::io::BufReader::new(open);
    let bad = |n: usize, e: String| {
        Error::Input(format!("--input-list {}: line {n}: {e}", file.display()))
    };
    // One line, at most MAX_LIST_LINE bytes (a list without line breaks
    // is refused, not read whole); `None` at the end.
    let mut next = |n: usize| -> Result<Option<Vec<u8>>> {
        let mut line = Vec::new();
        let read = (&mut reader)
            .take(MAX_LIST_LINE as u64 + 1)
            .read_until(b'\n', &mut line)
            .map_err(|e| Error::io("read --input-list", file, e))?;
        if line.len() > MAX_LIST_LINE {
            return Err(bad(n, format!("longer than {MAX_LIST_LINE} bytes")));
        }
        Ok((read > 0).then_some(line))
    };
    let extension = file
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or_default();
    let locator = match extension.to_ascii_lowercase().as_str() {
        "csv" => {
            let header = next(1)?.unwrap_or_default();
            Locator::Column(column(&header, "key").map_err(|e| bad(1, e))?)
        }
        "jsonl" | "ndjson" => Locator::Field("key".to_owned()),
        _ => Locator::Line,
    };
    let mut n = usize::from(matches!(locator, Locator::Column(_)));
    let mut seen = HashSet::new();
    let mut keys = Vec::new();
    loop {
        n += 1;
        let Some(line) = next(n)? else {
            return Ok(keys);
        };
        if let Some(key) = key_of(&line, &locator).map_err(|e| bad(n, e))?
            && seen.insert(key.clone())
        {
            keys.push(key);
        }
    }
}

/// The objects of `listing` that `keys` (read from `file`) names, in the
/// order of `keys`. A key the listing lacks (missing, or left out of it:
/// hidden, shoal's own state, the output folder) refuses the run before
/// anything runs, naming the first few.
pub(super) fn listed(
    listing: Vec<ObjectRef>,
    keys: &[String],
    file: &Path,
) -> Result<Vec<ObjectRef>> {
    let mut by_key: std::collections::HashMap<String, ObjectRef> =
        listing.into_iter().map(|o| (o.key.clone(), o)).collect();
    let mut missing = Vec::new();
    let objects = keys
        .iter()
        .filter_map(|key| {
            let found = by_key.remove(key);
            if found.is_none() {
                missing.push(key.as_str());
            }
            found
        })
        .collect();
    if missing.is_empty() {
        return Ok(objects);
    }
    let first: Vec<String> = missing.iter().take(3).map(|k| format!("{k:?}")).collect();
    Err(Error::Input(format!(
        "--input-list {} names {} keys that are not items of --input (first: {}); nothing was run",
        file.display(),
        missing.len(),
        first.join(", ")
    )))
}
