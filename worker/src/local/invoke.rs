//! `invoke`: run the handler once on one event and print the result, like
//! `sam local invoke` for a batch handler.

use std::io::{Read, Write};
use std::path::Path;

use serde_json::json;

use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::handler::{ErrorKind, Handler};
use crate::message;

/// Runs every item of the event at `event` once (no retries) and prints one
/// JSON line per item to standard output. Returns whether all succeeded.
pub async fn invoke<H: Handler>(engine: Engine<H>, event: &Path) -> Result<bool> {
    let (name, body) = if event == Path::new("-") {
        let mut body = Vec::new();
        std::io::stdin()
            .read_to_end(&mut body)
            .map_err(|e| Error::io("read", Path::new("standard input"), e))?;
        ("standard input".to_owned(), body)
    } else {
        let body = std::fs::read(event).map_err(|e| Error::io("read event", event, e))?;
        (event.display().to_string(), body)
    };
    let items = message::parse_direct(&body, "invoke").map_err(|e| Error::Event {
        path: name.clone(),
        reason: e.to_string(),
    })?;
    if items.is_empty() {
        return Err(Error::Event {
            path: name,
            reason: "the event contains no items".into(),
        });
    }
    let mut all_ok = true;
    let mut stdout = std::io::stdout().lock();
    for item in &items {
        let attempt = engine.attempt(item, 1).await;
        let duration_ms = attempt.duration.as_secs_f64() * 1000.0;
        let line = match attempt.result {
            Ok(success) => {
                let output = match (&success.output_key, &success.output) {
                    (Some(key), _) => json!({"stored": engine
                        .output_store()
                        .map(|s| s.location(key))
                        .unwrap_or_else(|| key.clone())}),
                    (None, Some(blob)) if blob.content_type == "application/json" => {
                        serde_json::from_slice(&blob.bytes).unwrap_or(serde_json::Value::Null)
                    }
                    (None, Some(blob)) => json!({
                        "bytes": blob.bytes.len(),
                        "contentType": blob.content_type,
                        "note": "not stored: pass --output DIR to store outputs",
                    }),
                    (None, None) => serde_json::Value::Null,
                };
                json!({"item": item.id, "requestId": attempt.request_id, "status": "succeeded",
                       "durationMs": duration_ms, "output": output})
            }
            Err(failure) => {
                all_ok = false;
                json!({"item": item.id, "requestId": attempt.request_id, "status": "failed",
                       "durationMs": duration_ms, "category": failure.category,
                       "retryable": failure.kind == ErrorKind::Retryable, "reason": failure.reason})
            }
        };
        writeln!(stdout, "{line}")
            .map_err(|e| Error::io("write", Path::new("standard output"), e))?;
    }
    Ok(all_ok)
}
