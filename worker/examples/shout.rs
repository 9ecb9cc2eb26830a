//! The handler from the README: upper-cases text files.
//!
//! `cargo run -p shoal-worker --example shout -- run --input DIR --output DIR`

use shoal_worker::{Blob, Context, HandlerError, Item, Object, handler_fn};

async fn shout(item: Item<Object>, _ctx: Context) -> Result<Blob, HandlerError> {
    let text = std::str::from_utf8(&item.payload.bytes)
        .map_err(|e| HandlerError::permanent(format!("not UTF-8: {e}")))?;
    Ok(Blob {
        bytes: text.to_uppercase().into_bytes().into(),
        extension: "txt".into(),
        content_type: "text/plain".into(),
    })
}

fn main() -> std::process::ExitCode {
    shoal_worker::main(handler_fn(shout))
}
