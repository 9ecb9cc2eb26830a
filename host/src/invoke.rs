//! Lambda's Invoke API in front of [`Environments`]:
//! `POST /2015-03-31/functions/{name}/invocations`, as the AWS Runtime
//! Interface Emulator serves it, so a client of the emulator (a test, a
//! local trigger) can use shoal's host instead, with more than one
//! environment.
//!
//! - The request body is the event (at most 6 MB: `413` beyond, as
//!   Lambda's synchronous invoke refuses it).
//! - A response is `200` with the function's answer. Any failure is `200`
//!   with `X-Amz-Function-Error: Unhandled` and
//!   `{errorMessage, errorType, stackTrace}`: the function's own error as
//!   it posted it, or the host's (timeout, exit, init error, response too
//!   large) in Lambda's words.
//! - Every invocation prints `START`, `END` and `REPORT` lines on standard
//!   error, as Lambda writes them to the function's log.

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use http_body_util::{BodyExt, Limited};

use crate::{Environments, Failure, Report};

/// Lambda's limit on a synchronous invocation's payload.
pub const MAX_REQUEST_BYTES: usize = 6 * 1024 * 1024;

/// Serves the Invoke API for `environments` on `listener` until
/// `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    environments: Arc<Environments>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let router = Router::new()
        .route("/2015-03-31/functions/{function}/invocations", post(invoke))
        .with_state(environments);
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await
}

fn json(status: StatusCode, function_error: bool, body: String) -> Response {
    let mut response = (status, [("content-type", "application/json")], body).into_response();
    if function_error {
        response.headers_mut().insert(
            "x-amz-function-error",
            axum::http::HeaderValue::from_static("Unhandled"),
        );
    }
    response
}

async fn invoke(State(environments): State<Arc<Environments>>, body: Body) -> Response {
    let event = match Limited::new(body, MAX_REQUEST_BYTES).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            let message = format!(
                "Request must be smaller than {MAX_REQUEST_BYTES} bytes for the InvokeFunction operation"
            );
            return json(
                StatusCode::PAYLOAD_TOO_LARGE,
                false,
                serde_json::json!({"Type": "User", "message": message}).to_string(),
            );
        }
        Err(e) => {
            return json(
                StatusCode::BAD_REQUEST,
                false,
                serde_json::json!({"Type": "User", "message": format!("reading the request: {e}")})
                    .to_string(),
            );
        }
    };
    let (result, report) = environments.invoke(event).await;
    log_report(&report, environments.config().memory_mb, &result);
    match result {
        Ok(answer) => (
            StatusCode::OK,
            [("content-type", "application/json")],
            answer,
        )
            .into_response(),
        Err(failure) => {
            let (error_type, message, trace) = match &failure {
                Failure::Function(e) | Failure::Init(e) => {
                    (e.error_type.clone(), e.message.clone(), e.trace.clone())
                }
                other => (other.error_type().to_owned(), other.to_string(), Vec::new()),
            };
            json(
                StatusCode::OK,
                true,
                serde_json::json!({"errorMessage": message, "errorType": error_type, "stackTrace": trace})
                    .to_string(),
            )
        }
    }
}

/// `START`, `END` and `REPORT` lines of one invocation, on standard error.
fn log_report(report: &Report, memory_mb: u32, result: &Result<bytes::Bytes, Failure>) {
    let id = &report.request_id;
    let duration_ms = report.duration.as_secs_f64() * 1000.0;
    let billed = report.duration.as_nanos().div_ceil(1_000_000).max(1);
    let mut line = format!(
        "REPORT RequestId: {id}\tDuration: {duration_ms:.2} ms\tBilled Duration: {billed} ms\tMemory Size: {memory_mb} MB\tMax Memory Used: {} MB",
        report.max_memory_used_mb.unwrap_or(0)
    );
    if let Some(init) = report.init_duration {
        line.push_str(&format!(
            "\tInit Duration: {:.2} ms",
            init.as_secs_f64() * 1000.0
        ));
    }
    if let Err(failure) = result {
        line.push_str(&format!("\tStatus: {}", failure.error_type()));
    }
    eprintln!("START RequestId: {id} Version: $LATEST\nEND RequestId: {id}\n{line}");
}
