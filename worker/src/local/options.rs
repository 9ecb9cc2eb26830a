//! What a local run is asked to do, as plain values: the command line
//! fills it in (`cli::RunArgs`), and so can a program or a test.

use std::path::PathBuf;

use crate::store::Location;

/// Name of the state folder inside the output folder.
pub const STATE_DIR: &str = ".shoal";

/// A local batch run's settings.
#[derive(Debug, Clone, PartialEq)]
pub struct RunOptions {
    /// Where items are read (every object below it, hidden ones excepted).
    pub input: Location,
    /// Where outputs are written; never the input folder.
    pub output: Location,
    /// Items per chunk on the embedded queue (at least 1).
    pub items_per_chunk: usize,
    /// Only the keys this file lists, in its order.
    pub input_list: Option<PathBuf>,
    /// The journal's folder; `None`: see [`RunOptions::state_folder`].
    pub state_dir: Option<PathBuf>,
    /// The percentage of dead-lettered items above which the run fails;
    /// `None`: dead letters are reported only.
    pub tolerated_failure_percent: Option<f64>,
    /// Run items that earlier runs dead-lettered again.
    pub retry_dead_letters: bool,
    /// Draw a progress bar (on a terminal only).
    pub progress: bool,
}

impl RunOptions {
    /// A run of `input` into `output` with the defaults of the command
    /// line: 10 items per chunk, no tolerance, a progress bar.
    pub fn new(input: Location, output: Location) -> Self {
        Self {
            input,
            output,
            items_per_chunk: 10,
            input_list: None,
            state_dir: None,
            tolerated_failure_percent: None,
            retry_dead_letters: false,
            progress: true,
        }
    }

    /// The state folder: `state_dir`, else `.shoal` inside a local output
    /// folder, else `./.shoal-state/BUCKET/PREFIX` for an S3 output.
    pub fn state_folder(&self) -> PathBuf {
        self.state_dir
            .clone()
            .unwrap_or_else(|| match &self.output {
                Location::Local(folder) => folder.join(STATE_DIR),
                Location::S3 { bucket, prefix } => PathBuf::from(".shoal-state")
                    .join(bucket)
                    .join(prefix.trim_end_matches('/')),
            })
    }

    /// Folders a local input listing must skip: the output and state
    /// folders, when they live inside the input.
    pub fn excluded(&self) -> Vec<PathBuf> {
        let mut excluded = vec![self.state_folder()];
        if let Location::Local(folder) = &self.output {
            excluded.push(folder.clone());
        }
        excluded
    }

    /// The journal file.
    pub fn journal(&self) -> PathBuf {
        self.state_folder().join("journal.jsonl")
    }

    /// The dead-letter file.
    pub fn dead_letters(&self) -> PathBuf {
        self.state_folder().join("dead-letters.jsonl")
    }
}
