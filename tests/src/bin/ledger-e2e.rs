//! A handler for the chaos tests (`CARGO_BIN_EXE_ledger-e2e`): each item
//! (a raw message body) takes `SHOAL_E2E_DELAY_MS`, then its body is
//! appended as one line to the file `SHOAL_LEDGER`, so a test counts which
//! items succeeded and how many times (a line per successful run). Writes
//! no output object.

use std::io::Write;
use std::time::Duration;

use bytes::Bytes;
use shoal_worker::{Context, Handler, HandlerError, Item};

struct Ledger {
    path: std::path::PathBuf,
    delay: Duration,
}

impl Handler for Ledger {
    type Input = Bytes;
    type Output = ();

    async fn call(&self, item: Item<Bytes>, ctx: Context) -> Result<(), HandlerError> {
        tokio::select! {
            () = tokio::time::sleep(self.delay) => {}
            () = ctx.cancellation().cancelled() => {
                return Err(HandlerError::retryable("cancelled"));
            }
        }
        let mut line = item.payload.to_vec();
        line.push(b'\n');
        // One write of a short line to a file opened for appending: lines
        // from concurrent items never interleave.
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .and_then(|mut file| file.write_all(&line))
            .map_err(|e| HandlerError::retryable(format!("ledger {}: {e}", self.path.display())))
    }
}

fn main() -> std::process::ExitCode {
    shoal_worker::main_with(|| {
        let path = std::env::var_os("SHOAL_LEDGER").ok_or("SHOAL_LEDGER is not set")?;
        let delay = std::env::var("SHOAL_E2E_DELAY_MS")
            .ok()
            .and_then(|ms| ms.parse().ok())
            .map_or(Duration::ZERO, Duration::from_millis);
        Ok::<_, &str>(Ledger {
            path: path.into(),
            delay,
        })
    })
}
