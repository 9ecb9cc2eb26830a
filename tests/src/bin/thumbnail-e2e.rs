//! The thumbnail handler binary, built inside this package so the
//! end-to-end tests get it from the same cargo invocation
//! (`CARGO_BIN_EXE_thumbnail-e2e`). Identical to `examples/thumbnail`'s
//! main, except that `SHOAL_E2E_DELAY_MS` (tests only) makes every
//! invocation take at least that long, so a test can act while items are
//! in flight (only first attempts with `SHOAL_E2E_DELAY_FIRST_ATTEMPT=1`,
//! so a redelivered item runs at once). With `SHOAL_LEDGER`, each item that
//! succeeds appends its id as a line to that file (the chaos tests count
//! successes and duplicates from it).

use std::time::Duration;

use shoal_worker::payload::{Blob, Object};
use shoal_worker::{Context, Handler, HandlerError, Item};
use thumbnail::Thumbnailer;

struct Paced {
    inner: Thumbnailer,
    delay: Duration,
    first_attempt_only: bool,
    ledger: Option<std::path::PathBuf>,
}

impl Handler for Paced {
    type Input = Object;
    type Output = Blob;

    async fn call(&self, item: Item<Object>, ctx: Context) -> Result<Blob, HandlerError> {
        let delay = if self.first_attempt_only && ctx.attempt > 1 {
            Duration::ZERO
        } else {
            self.delay
        };
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = ctx.cancellation().cancelled() => {
                return Err(HandlerError::retryable("cancelled"));
            }
        }
        let id = item.id.clone();
        let thumbnail = self.inner.call(item, ctx).await?;
        if let Some(ledger) = &self.ledger {
            use std::io::Write;
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(ledger)
                .and_then(|mut file| file.write_all(format!("{id}\n").as_bytes()))
                .map_err(|e| HandlerError::retryable(format!("ledger: {e}")))?;
        }
        Ok(thumbnail)
    }
}

fn main() -> std::process::ExitCode {
    shoal_worker::main_with(|| {
        let delay = std::env::var("SHOAL_E2E_DELAY_MS")
            .ok()
            .and_then(|ms| ms.parse().ok())
            .map_or(Duration::ZERO, Duration::from_millis);
        let first_attempt_only =
            std::env::var("SHOAL_E2E_DELAY_FIRST_ATTEMPT").is_ok_and(|v| v == "1");
        Thumbnailer::from_env().map(|inner| Paced {
            inner,
            delay,
            first_attempt_only,
            ledger: std::env::var_os("SHOAL_LEDGER").map(Into::into),
        })
    })
}
