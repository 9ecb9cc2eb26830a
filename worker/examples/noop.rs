//! A handler that does nothing: what `bench/sqs-worker.sh` runs to measure
//! the queue runtime's own overhead.

use shoal_worker::{Context, HandlerError, Item, handler_fn};

async fn noop(_item: Item<bytes::Bytes>, _ctx: Context) -> Result<(), HandlerError> {
    Ok(())
}

fn main() -> std::process::ExitCode {
    shoal_worker::main(handler_fn(noop))
}
