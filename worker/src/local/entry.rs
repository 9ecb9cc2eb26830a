//! The `run` and `invoke` commands: open the stores they name, run, and
//! turn the outcome into the process's exit status.

use std::sync::Arc;

use super::{RunOptions, invoke, run};
use crate::app::exit;
use crate::engine::Engine;
use crate::error::Result;
use crate::handler::Handler;
use crate::setup::Setup;
use crate::store::Location;

/// `run`: the batch `options` names; prints the summary. Exit status 3
/// when more items were dead-lettered than the options tolerate, 130 when
/// interrupted.
pub(crate) async fn run_mode<H: Handler>(
    handler: Arc<H>,
    setup: Setup,
    options: RunOptions,
) -> Result<u8> {
    let mut stores = setup.stores();
    let input = stores.open(&options.input, &options.excluded()).await?;
    let output = stores.open(&options.output, &[]).await?;
    let engine = Engine::new(handler, input, Some(output), setup.config, setup.metrics);
    setup.ready.set(true);
    let summary = run(engine, &options).await?;
    setup.ready.set(false);
    print!("{summary}");
    tracing::info!(
        total = summary.total,
        succeeded = summary.succeeded + summary.skipped_succeeded,
        dead_lettered = summary.dead_lettered_total(),
        failed_invocations = summary.failed_invocations,
        remaining = summary.remaining,
        elapsed_s = summary.elapsed.as_secs_f64(),
        "batch summary"
    );
    Ok(if summary.interrupted {
        exit::INTERRUPTED
    } else if let Some(tolerated) = options.tolerated_failure_percent
        && !summary.within_tolerance(tolerated)
    {
        tracing::error!(
            dead_lettered = summary.dead_lettered_total(),
            total = summary.total,
            tolerated_percent = tolerated,
            "{:.1}% of the items dead-lettered, above the tolerated {tolerated}%",
            summary.dead_letter_percent(),
        );
        exit::ITEMS_FAILED
    } else {
        exit::OK
    })
}

/// `invoke`: one event file through the handler, as Lambda would deliver
/// it. Exit status 3 when the invocation failed.
pub(crate) async fn invoke_mode<H: Handler>(
    handler: Arc<H>,
    setup: Setup,
    input: &Location,
    output: Option<&Location>,
    event: &std::path::Path,
) -> Result<u8> {
    let mut stores = setup.stores();
    let input = stores.open(input, &[]).await?;
    let output = stores.open_optional(output).await?;
    let engine = Engine::new(handler, input, output, setup.config, setup.metrics);
    setup.ready.set(true);
    let ok = invoke(engine, event).await?;
    Ok(if ok { exit::OK } else { exit::ITEMS_FAILED })
}
