//! The durable journal of local mode, and the dead-letter file.
//!
//! Both are append-only JSON Lines files. Appends are buffered and made
//! durable by [`Ledger::sync`] (write + fdatasync), which the runner calls a
//! few times a second and before it exits. A crash loses at most the records
//! since the last sync; those items are simply processed again on the next
//! run, and since outputs are written atomically under deterministic keys,
//! that overwrites rather than duplicates.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::metrics::{DeadLetterCause, ErrorCategory};

/// Final state of an item, as journaled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// Output stored.
    Succeeded,
    /// Written to the dead-letter file.
    DeadLettered,
}

/// One journal line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// Item id (input key).
    pub id: String,
    /// Input version the record is about; a changed input is processed again.
    pub etag: String,
    /// Final state.
    pub state: State,
    /// Output key, when one was stored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<String>,
    /// Attempts it took.
    pub attempts: u32,
}

/// One dead-letter line: what failed, how often, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeadLetter {
    /// Item id (input key).
    pub item: String,
    /// Input version.
    pub etag: String,
    /// The chunk the item travelled in.
    pub chunk_id: String,
    /// Attempts made.
    pub attempts: u32,
    /// Permanent error, or retries exhausted.
    pub cause: DeadLetterCause,
    /// Fixed error category of the last failure.
    pub category: ErrorCategory,
    /// The last failure's reason.
    pub reason: String,
    /// RFC 3339 time it was dead-lettered.
    pub time: String,
}

struct Appender {
    path: PathBuf,
    out: BufWriter<File>,
    dirty: bool,
}

impl Appender {
    fn open(path: &Path) -> Result<Self> {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| Error::io("open for append", path, e))?;
        Ok(Self {
            path: path.to_owned(),
            out: BufWriter::new(file),
            dirty: false,
        })
    }

    fn append<T: Serialize>(&mut self, value: &T) -> Result<()> {
        let line = serde_json::to_string(value).map_err(|e| Error::Encode {
            what: "journal record",
            source: e,
        })?;
        writeln!(self.out, "{line}").map_err(|e| Error::io("append to", &self.path, e))?;
        self.dirty = true;
        Ok(())
    }

    fn sync(&mut self) -> Result<()> {
        if !self.dirty {
            return Ok(());
        }
        self.out
            .flush()
            .map_err(|e| Error::io("flush", &self.path, e))?;
        self.out
            .get_ref()
            .sync_data()
            .map_err(|e| Error::io("sync", &self.path, e))?;
        self.dirty = false;
        Ok(())
    }
}

/// The journal and the dead-letter file of one output folder.
pub struct Ledger {
    journal: Appender,
    dead_letters: Appender,
}

/// What an earlier run left: the last record of each item.
pub type History = HashMap<String, Record>;

impl Ledger {
    /// Opens (creating if needed) both files and reads the journal's history.
    ///
    /// A torn last line (a crash mid-write) is ignored; so is any other line
    /// that does not parse, with a warning: forgetting a record only means
    /// processing that item once more.
    pub fn open(journal: &Path, dead_letters: &Path) -> Result<(Self, History)> {
        let history = read_history(journal)?;
        let ledger = Self {
            journal: Appender::open(journal)?,
            dead_letters: Appender::open(dead_letters)?,
        };
        Ok((ledger, history))
    }

    /// Buffers a journal record.
    pub fn record(&mut self, record: &Record) -> Result<()> {
        self.journal.append(record)
    }

    /// Writes a dead letter and makes it durable before the item is
    /// journaled as dead-lettered, so a dead letter is never lost.
    pub fn dead_letter(&mut self, letter: &DeadLetter) -> Result<()> {
        self.dead_letters.append(letter)?;
        self.dead_letters.sync()
    }

    /// Makes every buffered record durable.
    pub fn sync(&mut self) -> Result<()> {
        self.dead_letters.sync()?;
        self.journal.sync()
    }

    /// Path of the dead-letter file.
    pub fn dead_letter_path(&self) -> &Path {
        &self.dead_letters.path
    }
}

fn read_history(path: &Path) -> Result<History> {
    let file = match File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(History::new()),
        Err(e) => return Err(Error::io("open", path, e)),
    };
    let mut history = History::new();
    for (number, line) in BufReader::new(file).lines().enumerate() {
        let line = line.map_err(|e| Error::io("read", path, e))?;
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<Record>(&line) {
            Ok(record) => {
                history.insert(record.id.clone(), record);
            }
            Err(e) => tracing::warn!(
                journal = %path.display(),
                line = number + 1,
                error = %e,
                "skipping unreadable journal line; that item will be processed again"
            ),
        }
    }
    Ok(history)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: &str, state: State) -> Record {
        Record {
            id: id.into(),
            etag: "e".into(),
            state,
            output: None,
            attempts: 1,
        }
    }

    #[test]
    fn history_survives_reopen_and_ignores_a_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        let (j, d) = (dir.path().join("j.jsonl"), dir.path().join("d.jsonl"));
        {
            let (mut ledger, history) = Ledger::open(&j, &d).unwrap();
            assert!(history.is_empty());
            ledger.record(&record("a", State::Succeeded)).unwrap();
            ledger.record(&record("b", State::DeadLettered)).unwrap();
            ledger.record(&record("a", State::DeadLettered)).unwrap();
            ledger.sync().unwrap();
        }
        // A crash in the middle of a write leaves half a line.
        let mut f = OpenOptions::new().append(true).open(&j).unwrap();
        f.write_all(br#"{"id":"c","et"#).unwrap();
        drop(f);
        let (_ledger, history) = Ledger::open(&j, &d).unwrap();
        assert_eq!(history.len(), 2);
        assert_eq!(history["a"].state, State::DeadLettered, "last record wins");
        assert_eq!(history["b"].state, State::DeadLettered);
    }
}
