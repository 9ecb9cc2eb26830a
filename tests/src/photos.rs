//! The thumbnail worker (`thumbnail-e2e`) over a [`Stack`]: photos under
//! `s3://photos/in/`, thumbnails written to `s3://photos/thumbs/`.

use std::collections::BTreeSet;
use std::path::Path;

use crate::process::Proc;
use crate::sqs::{Queues, counts};
use crate::stack::{Stack, tiny_jpeg, upload};

/// `n` photo names, `PREFIXnnnnn.jpg`.
pub fn names(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}{i:05}.jpg")).collect()
}

/// Starts `bin worker` on `queues`, reading `s3://photos/in/` and writing
/// `s3://photos/thumbs/`, with `extra` variables and `args` added; its
/// log is `dir/NAME.log`.
pub fn worker(
    bin: &str,
    stack: &Stack,
    queues: &Queues,
    dir: &Path,
    name: &str,
    extra: &[(&str, String)],
    args: &[&str],
) -> Proc {
    let mut env = stack.env();
    env.extend(extra.iter().cloned());
    let mut all = vec![
        "worker",
        "--queue",
        &queues.url,
        "--input",
        "s3://photos/in/",
        "--output",
        "s3://photos/thumbs/",
    ];
    all.extend_from_slice(args);
    Proc::spawn(bin, &all, &env, &dir.join(format!("{name}.log")))
}

/// Whether the queue at `url` holds no message, visible, in flight or
/// delayed.
pub async fn queue_empty(stack: &Stack, url: &str) -> bool {
    counts(&stack.sqs, url).await == (0, 0, 0)
}

/// The thumbnail keys the photos named `inputs` leave.
pub fn expected_outputs(inputs: &[String]) -> BTreeSet<String> {
    inputs.iter().map(|k| format!("thumbs/{k}")).collect()
}

/// Uploads a small photo as `in/KEY` for each of `keys`.
pub async fn upload_inputs(stack: &Stack, keys: &[String]) {
    let keys: Vec<String> = keys.iter().map(|k| format!("in/{k}")).collect();
    upload(&stack.s3, "photos", &keys, &tiny_jpeg()).await;
}
