//! One attempt's timing and cancellation: its request id, the deadline
//! that fails it, the token that stops it, and a panic turned into a
//! failure instead of the end of the worker.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::Failure;
use crate::handler::{Deadline, ErrorKind};
use crate::metrics::ErrorCategory;

/// A fresh request id: a version-4 UUID, as Lambda's. Drawn from a fast
/// thread-local generator (not the OS one): ids must be unique, not secret.
pub(crate) fn request_id() -> String {
    uuid::Builder::from_random_bytes(fastrand::u128(..).to_le_bytes())
        .into_uuid()
        .to_string()
}

/// Resolves when `token` is cancelled; never without one.
pub(super) async fn cancelled(token: Option<&CancellationToken>) {
    match token {
        Some(token) => token.cancelled().await,
        None => std::future::pending().await,
    }
}

pub(super) fn timed_out(timeout: Duration) -> Failure {
    Failure {
        category: ErrorCategory::Timeout,
        kind: ErrorKind::Retryable,
        reason: format!("Task timed out after {:.2} seconds", timeout.as_secs_f64()),
    }
}

/// Waits for an attempt's task until `deadline` (which does not run while
/// the handler pauses it, see [`crate::handler::Context::pause_deadline`]), or until
/// `stop` is cancelled;
/// either one cancels the context (`cancel`) and aborts the task. A panic
/// fails the attempt, not the worker.
pub(super) async fn join_within<T>(
    mut task: tokio::task::JoinHandle<T>,
    deadline: &Deadline,
    timeout: Duration,
    cancel: &CancellationToken,
    stop: Option<&CancellationToken>,
) -> Result<T, Failure> {
    let abort = task.abort_handle();
    let joined = loop {
        let (at, _, paused) = deadline.at();
        tokio::select! {
            biased;
            joined = &mut task => break Ok(joined),
            () = deadline.resumed(), if paused => {}
            () = tokio::time::sleep_until(at.into()), if !paused => {
                let (now_at, _, now_paused) = deadline.at();
                if !now_paused && now_at <= at {
                    break Err(());
                }
            }
            () = cancelled(stop) => {
                cancel.cancel();
                abort.abort();
                return Err(Failure {
                    category: ErrorCategory::Handler,
                    kind: ErrorKind::Retryable,
                    reason: "invocation cancelled before it finished".into(),
                });
            }
        }
    };
    match joined {
        Err(()) => {
            cancel.cancel();
            abort.abort();
            Err(timed_out(timeout))
        }
        Ok(Err(join)) if join.is_panic() => Err(Failure {
            category: ErrorCategory::Panic,
            kind: ErrorKind::Retryable,
            reason: format!(
                "handler panicked: {}",
                panic_message(join.into_panic().as_ref())
            ),
        }),
        Ok(Err(_cancelled)) => Err(Failure {
            category: ErrorCategory::Handler,
            kind: ErrorKind::Retryable,
            reason: "invocation was cancelled".into(),
        }),
        Ok(Ok(value)) => Ok(value),
    }
}

/// The message of a panic payload (`panic!` with a literal or a format).
pub(crate) fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_owned()
    }
}
