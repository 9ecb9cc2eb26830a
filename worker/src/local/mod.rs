//! Local mode (`run`): a whole batch over a folder, with an embedded queue
//! and a durable journal. No cloud, no cluster.
//!
//! Steps: prepare folders, list the input, plan against the journal (skip
//! what earlier runs finished), split into chunks, run them through the
//! engine, record every final outcome, summarise.
//!
//! Interrupting (Ctrl-C or SIGTERM) stops dispatching at once and lets the
//! invocations in flight finish; a second Ctrl-C stops immediately. Running
//! the same command again resumes: finished items (output present, input
//! unchanged) are not processed again.

mod entry;
mod invoke;
mod journal;
mod options;

mod summary;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressState, ProgressStyle};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

pub use invoke::invoke;
mod input_list;
pub(crate) use entry::{invoke_mode, run_mode};
pub use journal::{DeadLetter, Ledger, Record, State};
pub use options::{RunOptions, STATE_DIR};
pub use summary::RunSummary;

use crate::engine::{Engine, ItemReport, Outcome};
use crate::error::{Error, Result};
use crate::handler::Handler;
use crate::message::{Chunk, ChunkItem, ItemBody, ObjectRef};
use crate::signals::Interrupts;
use crate::store::{Location, ObjectStore, StoreError};
use crate::telemetry;

/// Outputs written where the inputs are would replace them (`a.jpg` is
/// both an input and the thumbnail of `a.png`), and the output folder is
/// left out of the listing: such a run would destroy inputs or do nothing.
fn refuse_same_folder(input: &Location, output: &Location) -> Result<()> {
    let same = match (input, output) {
        (Location::Local(i), Location::Local(o)) => match (i.canonicalize(), o.canonicalize()) {
            (Ok(i), Ok(o)) => i == o,
            _ => i == o,
        },
        (
            Location::S3 { bucket, prefix },
            Location::S3 {
                bucket: out_bucket,
                prefix: out_prefix,
            },
        ) => bucket == out_bucket && prefix == out_prefix,
        _ => false,
    };
    if same {
        return Err(Error::Config(format!(
            "--input and --output are the same place ({input}): outputs would replace inputs; \
             choose another --output (a folder inside the input is fine)"
        )));
    }
    Ok(())
}

struct Planned {
    chunks: Vec<Chunk>,
    total: usize,
    skipped_succeeded: usize,
    skipped_dead_lettered: usize,
}

/// Keys present in the output store, listed once (not one request per
/// item), when the journal records outputs to check. A missing output
/// folder or bucket prefix lists as empty.
async fn existing_outputs(
    output: Option<&Arc<dyn ObjectStore>>,
    history: &journal::History,
) -> Result<Option<HashSet<String>>> {
    let Some(store) = output else {
        return Ok(None);
    };
    if !history.values().any(|r| r.output.is_some()) {
        return Ok(None);
    }
    match store.list().await {
        Ok(objects) => Ok(Some(objects.into_iter().map(|o| o.key).collect())),
        Err(StoreError::NotFound { .. }) => Ok(Some(HashSet::new())),
        Err(e) => Err(Error::Input(format!(
            "cannot list the outputs to resume: {e}"
        ))),
    }
}

/// Decides which listed objects still need work: an item is done when its
/// last record is about the same input version and it was dead-lettered
/// (unless retrying those), or it succeeded and its output still exists
/// (one deleted, or lost in a power failure after the journal synced, is
/// produced again).
fn plan(
    objects: Vec<ObjectRef>,
    history: &journal::History,
    outputs: Option<&HashSet<String>>,
    retry_dead_letters: bool,
    items_per_chunk: usize,
) -> Planned {
    let total = objects.len();
    let mut todo = Vec::with_capacity(total);
    let (mut skipped_succeeded, mut skipped_dead_lettered) = (0, 0);
    for object in objects {
        let record = history
            .get(&object.key)
            .filter(|r| Some(&r.etag) == object.etag.as_ref());
        match record.map(|r| (r.state, &r.output)) {
            Some((State::DeadLettered, _)) if !retry_dead_letters => skipped_dead_lettered += 1,
            Some((State::Succeeded, Some(key))) if outputs.is_none_or(|o| o.contains(key)) => {
                skipped_succeeded += 1;
            }
            Some((State::Succeeded, None)) => skipped_succeeded += 1,
            _ => todo.push(ChunkItem::Object(object)),
        }
    }
    let chunks = todo
        .chunks(items_per_chunk.max(1))
        .map(|items| Chunk::new(items.to_vec()))
        .collect();
    Planned {
        chunks,
        total,
        skipped_succeeded,
        skipped_dead_lettered,
    }
}

fn progress_bar(len: u64, hidden: bool) -> ProgressBar {
    let target = if hidden {
        ProgressDrawTarget::hidden()
    } else {
        ProgressDrawTarget::stderr()
    };
    let bar = ProgressBar::with_draw_target(Some(len), target);
    if let Ok(style) = ProgressStyle::with_template(
        "{spinner:.green} [{elapsed_precise}] {wide_bar:.cyan/blue} {pos}/{len} items · {rate} · ETA {eta}",
    ) {
        bar.set_style(
            style
                .with_key(
                    "rate",
                    |state: &ProgressState, w: &mut dyn std::fmt::Write| {
                        let _ = write!(w, "{:.1} items/s", state.per_sec());
                    },
                )
                .progress_chars("█▉▊▋▌▍▎▏ "),
        );
    }
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

struct Finished {
    chunk_id: String,
    etag: String,
    report: ItemReport,
}

/// Feeds chunk items to the engine, keeping a bounded number in flight.
fn dispatch<H: Handler>(
    engine: Engine<H>,
    chunks: Vec<Chunk>,
    tx: mpsc::Sender<Finished>,
) -> tokio::task::JoinHandle<()> {
    let window = engine.config().concurrency.saturating_mul(4).max(16);
    tokio::spawn(async move {
        let mut in_flight = JoinSet::new();
        'chunks: for chunk in chunks {
            let chunk_id = chunk.chunk_id.clone();
            for item in chunk.into_raw_items() {
                if engine.is_draining() {
                    break 'chunks;
                }
                while in_flight.len() >= window {
                    in_flight.join_next().await;
                }
                let etag = match &item.body {
                    ItemBody::Object(o) => o.etag.clone().unwrap_or_default(),
                    _ => String::new(),
                };
                let (engine, tx, chunk_id) = (engine.clone(), tx.clone(), chunk_id.clone());
                in_flight.spawn(async move {
                    let report = engine.process(&item).await;
                    let _ = tx
                        .send(Finished {
                            chunk_id,
                            etag,
                            report,
                        })
                        .await;
                });
            }
        }
        while in_flight.join_next().await.is_some() {}
    })
}

/// Runs a batch over the engine's input store. Item failures never make this fail;
/// they are counted in the summary. Errors are for the run itself (folders
/// unreadable, journal unwritable).
pub async fn run<H: Handler>(engine: Engine<H>, options: &RunOptions) -> Result<RunSummary> {
    let state = options.state_folder();
    let started = Instant::now();
    // Step 1: prepare.
    refuse_same_folder(&options.input, &options.output)?;
    if let Location::Local(folder) = &options.output {
        std::fs::create_dir_all(folder)
            .map_err(|e| Error::io("create output folder", folder, e))?;
    }
    std::fs::create_dir_all(&state).map_err(|e| Error::io("create state folder", &state, e))?;
    let (mut ledger, history) = Ledger::open(&options.journal(), &options.dead_letters())?;

    // Step 2: list.
    let objects = engine
        .input_store()
        .list()
        .await
        .map_err(|e| Error::Input(format!("cannot list --input {}: {e}", options.input)))?;

    let objects = match &options.input_list {
        Some(file) => input_list::listed(objects, &input_list::read_key_list(file)?, file)?,
        None => objects,
    };

    // Step 3: plan.
    let outputs = existing_outputs(engine.output_store(), &history).await?;
    let planned = plan(
        objects,
        &history,
        outputs.as_ref(),
        options.retry_dead_letters,
        options.items_per_chunk,
    );
    let todo: usize = planned.chunks.iter().map(|c| c.items.len()).sum();
    let metrics = engine.metrics().clone();
    let gauge = |state: &str, n: usize| {
        metrics
            .batch_items
            .with_label_values(&[state])
            .set(i64::try_from(n).unwrap_or(i64::MAX));
    };
    gauge("total", planned.total);
    gauge("pending", todo);
    gauge("succeeded", planned.skipped_succeeded);
    gauge("dead_lettered", planned.skipped_dead_lettered);
    tracing::info!(
        input = %options.input,
        output = %options.output,
        total = planned.total,
        todo,
        chunks = planned.chunks.len(),
        already_succeeded = planned.skipped_succeeded,
        already_dead_lettered = planned.skipped_dead_lettered,
        "batch planned"
    );

    // Step 4: execute.
    let mut summary = RunSummary {
        total: planned.total,
        skipped_succeeded: planned.skipped_succeeded,
        skipped_dead_lettered: planned.skipped_dead_lettered,
        dead_letter_path: ledger.dead_letter_path().to_owned(),
        tolerance: options.tolerated_failure_percent,
        ..RunSummary::default()
    };
    let bar = progress_bar(todo as u64, !options.progress);
    telemetry::set_progress_bar(&bar);
    let (tx, mut rx) = mpsc::channel::<Finished>(256);
    let dispatcher = dispatch(engine.clone(), planned.chunks, tx);
    let mut sync_every = tokio::time::interval(Duration::from_millis(250));
    let mut signals = Interrupts::listen()?;
    let mut interrupts = 0;
    let result = loop {
        tokio::select! {
            finished = rx.recv() => {
                let Some(finished) = finished else { break Ok(()) };
                match record(&mut ledger, &mut summary, &engine, finished) {
                    Ok(true) => bar.inc(1),
                    Ok(false) => {}
                    Err(e) => break Err(e),
                }
                gauge("pending", todo.saturating_sub(summary.processed()));
                gauge("succeeded", summary.skipped_succeeded + summary.succeeded);
                gauge("dead_lettered", summary.skipped_dead_lettered + summary.dead_lettered);
            }
            _ = sync_every.tick() => {
                if let Err(e) = tokio::task::block_in_place(|| ledger.sync()) {
                    break Err(e);
                }
            }
            () = signals.next() => {
                interrupts += 1;
                summary.interrupted = true;
                if interrupts == 1 {
                    engine.drain();
                    tracing::warn!(
                        "interrupted: finishing the invocations in flight (Ctrl-C again to stop now); run the same command to resume"
                    );
                } else {
                    engine.abort();
                    dispatcher.abort();
                    break Ok(());
                }
            }
        }
    };
    bar.finish_and_clear();
    telemetry::clear_progress_bar();
    let synced = tokio::task::block_in_place(|| ledger.sync());
    result?;
    synced?;
    summary.elapsed = started.elapsed();
    summary.remaining = todo.saturating_sub(summary.succeeded + summary.dead_lettered);
    Ok(summary)
}

/// Records one item's outcome; returns whether the item is finished
/// (succeeded or dead-lettered) rather than left for a later run.
fn record<H: Handler>(
    ledger: &mut Ledger,
    summary: &mut RunSummary,
    engine: &Engine<H>,
    finished: Finished,
) -> Result<bool> {
    let Finished {
        chunk_id,
        etag,
        report,
    } = finished;
    summary.durations.extend(report.durations.iter().copied());
    let failed_attempts = match report.outcome {
        Outcome::Succeeded { .. } => report.attempts.saturating_sub(1),
        _ => report.attempts,
    };
    summary.failed_invocations += failed_attempts as usize;
    match report.outcome {
        Outcome::Succeeded { output_key } => {
            summary.succeeded += 1;
            ledger.record(&Record {
                id: report.id,
                etag,
                state: State::Succeeded,
                output: output_key,
                attempts: report.attempts,
            })?;
        }
        Outcome::DeadLettered { cause, failure } => {
            let letter = DeadLetter {
                item: report.id.clone(),
                etag: etag.clone(),
                chunk_id,
                attempts: report.attempts,
                cause,
                category: failure.category,
                reason: failure.reason,
                time: humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string(),
            };
            if let Err(e) = tokio::task::block_in_place(|| ledger.dead_letter(&letter)) {
                // Not journaled either: the next run processes it again.
                engine.metrics().dead_letter_errors.inc();
                tracing::error!(item = %letter.item, error = %e, "cannot write dead letter");
                summary.abandoned += 1;
                return Ok(false);
            }
            engine
                .metrics()
                .dead_letters
                .with_label_values(&[cause.as_str()])
                .inc();
            summary.dead_lettered += 1;
            summary.sample_dead_letter(&letter.item, &letter.reason);
            ledger.record(&Record {
                id: report.id,
                etag,
                state: State::DeadLettered,
                output: None,
                attempts: report.attempts,
            })?;
        }
        Outcome::Abandoned => {
            summary.abandoned += 1;
            return Ok(false);
        }
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object(key: &str, etag: &str) -> ObjectRef {
        ObjectRef {
            bucket: None,
            key: key.into(),
            size: Some(1),
            etag: Some(etag.into()),
        }
    }

    fn record(key: &str, etag: &str, state: State, output: Option<&str>) -> (String, Record) {
        let record = Record {
            id: key.into(),
            etag: etag.into(),
            state,
            output: output.map(str::to_owned),
            attempts: 1,
        };
        (key.into(), record)
    }

    fn todo_keys(planned: &Planned) -> Vec<String> {
        planned
            .chunks
            .iter()
            .flat_map(|c| c.clone().into_raw_items())
            .map(|i| i.id)
            .collect()
    }

    #[test]
    fn plan_skips_finished_items_and_redoes_changed_or_lost_ones() {
        let history: journal::History = [
            record("done.jpg", "e1", State::Succeeded, Some("done.jpg")),
            record("lost.jpg", "e1", State::Succeeded, Some("lost.jpg")),
            record("changed.jpg", "old", State::Succeeded, Some("changed.jpg")),
            record("bad.jpg", "e1", State::DeadLettered, None),
        ]
        .into_iter()
        .collect();
        let objects = || {
            ["bad.jpg", "changed.jpg", "done.jpg", "lost.jpg", "new.jpg"]
                .iter()
                .map(|k| object(k, "e1"))
                .collect::<Vec<_>>()
        };
        let outputs: HashSet<String> = ["done.jpg".to_owned(), "changed.jpg".to_owned()].into();

        let planned = plan(objects(), &history, Some(&outputs), false, 2);
        assert_eq!(todo_keys(&planned), ["changed.jpg", "lost.jpg", "new.jpg"]);
        assert_eq!(planned.chunks.len(), 2, "2 items per chunk");
        assert_eq!(
            (planned.skipped_succeeded, planned.skipped_dead_lettered),
            (1, 1)
        );

        let retry = plan(objects(), &history, Some(&outputs), true, 10);
        assert_eq!(
            todo_keys(&retry),
            ["bad.jpg", "changed.jpg", "lost.jpg", "new.jpg"]
        );

        // Same plan, same chunk ids: re-planning never duplicates work.
        let again = plan(objects(), &history, Some(&outputs), false, 2);
        let ids = |p: &Planned| {
            p.chunks
                .iter()
                .map(|c| c.chunk_id.clone())
                .collect::<Vec<_>>()
        };
        assert_eq!(ids(&planned), ids(&again));
    }
}
