//! The Lambda Runtime API of one execution environment, on loopback.
//!
//! - `GET /2018-06-01/runtime/invocation/next`: waits for the next event
//!   and returns it with `Lambda-Runtime-Aws-Request-Id`,
//!   `Lambda-Runtime-Deadline-Ms`, `Lambda-Runtime-Invoked-Function-Arn`
//!   and `Lambda-Runtime-Trace-Id`. The first call ends the init phase.
//! - `POST /2018-06-01/runtime/invocation/{id}/response`: the result
//!   (`202`); larger than the limit: `413`, and the invocation fails.
//! - `POST /2018-06-01/runtime/invocation/{id}/error`: an error
//!   (`{errorType, errorMessage, stackTrace}`, `202`).
//! - `POST /2018-06-01/runtime/init/error`: init failed (`202`).
//!
//! A request id other than the invocation's gets `400 InvalidRequestID`
//! and changes nothing; an init error after init gets `403`. Bodies are
//! read up to their limit and no further.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Mutex;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use bytes::Bytes;
use http_body_util::{BodyExt, Limited};
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};

use crate::{Failure, FunctionError};

/// The largest error document read; the rest is cut.
const MAX_ERROR_BYTES: usize = 64 * 1024;

/// An event handed to the function.
#[derive(Debug)]
pub(crate) struct Event {
    pub request_id: String,
    pub body: Bytes,
    pub deadline_ms: u64,
    pub trace_id: String,
}

/// The invocation in progress: its id and where its outcome goes.
pub(crate) struct Pending {
    pub request_id: String,
    pub done: oneshot::Sender<Result<Bytes, Failure>>,
}

/// How the init phase ended.
#[derive(Debug)]
pub(crate) enum Init {
    /// The function asked for its first event.
    Ready,
    /// The function reported an init error.
    Failed(FunctionError),
}

/// What the server and its environment share.
pub(crate) struct Shared {
    pub max_response: usize,
    pub function_arn: String,
    pub events: tokio::sync::Mutex<mpsc::Receiver<Event>>,
    pub pending: Mutex<Option<Pending>>,
    pub init: Mutex<Option<oneshot::Sender<Init>>>,
}

impl Shared {
    /// Resolves the pending invocation `request_id` with `outcome`; false
    /// when no invocation with that id is pending.
    fn settle(&self, request_id: &str, outcome: Result<Bytes, Failure>) -> bool {
        let Ok(mut pending) = self.pending.lock() else {
            return false;
        };
        match pending.take() {
            Some(p) if p.request_id == request_id => {
                // The invoker may have given up (timeout) already.
                let _ = p.done.send(outcome);
                true
            }
            other => {
                *pending = other;
                false
            }
        }
    }

    fn init_done(&self, how: Init) -> bool {
        let sender = self.init.lock().ok().and_then(|mut s| s.take());
        match sender {
            Some(sender) => {
                let _ = sender.send(how);
                true
            }
            None => false,
        }
    }
}

/// Serves the Runtime API for `shared` on a loopback port the kernel
/// picks; returns its address and the server task.
pub(crate) async fn serve(
    shared: Arc<Shared>,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
    let address = listener.local_addr()?;
    let router = Router::new()
        .route("/2018-06-01/runtime/invocation/next", get(next))
        .route(
            "/2018-06-01/runtime/invocation/{id}/response",
            post(response),
        )
        .route("/2018-06-01/runtime/invocation/{id}/error", post(error))
        .route("/2018-06-01/runtime/init/error", post(init_error))
        .fallback(not_found)
        .with_state(shared);
    let task = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, router).await {
            tracing::warn!(error = %e, "the Runtime API server stopped");
        }
    });
    Ok((address, task))
}

fn status(code: StatusCode, error_type: &str, message: &str) -> Response {
    let body = serde_json::json!({"errorType": error_type, "errorMessage": message});
    (
        code,
        [("content-type", "application/json")],
        body.to_string(),
    )
        .into_response()
}

fn accepted() -> Response {
    (
        StatusCode::ACCEPTED,
        [("content-type", "application/json")],
        r#"{"status":"OK"}"#,
    )
        .into_response()
}

async fn not_found() -> Response {
    status(
        StatusCode::NOT_FOUND,
        "NotFound",
        "no such Runtime API path",
    )
}

async fn next(State(shared): State<Arc<Shared>>) -> Response {
    shared.init_done(Init::Ready);
    let event = shared.events.lock().await.recv().await;
    let Some(event) = event else {
        return status(
            StatusCode::GONE,
            "EnvironmentEnded",
            "this execution environment is ending",
        );
    };
    let mut headers = HeaderMap::new();
    let mut set = |name: &'static str, value: &str| {
        if let Ok(value) = HeaderValue::from_str(value) {
            headers.insert(name, value);
        }
    };
    set("lambda-runtime-aws-request-id", &event.request_id);
    set("lambda-runtime-deadline-ms", &event.deadline_ms.to_string());
    set("lambda-runtime-invoked-function-arn", &shared.function_arn);
    set("lambda-runtime-trace-id", &event.trace_id);
    set("content-type", "application/json");
    (StatusCode::OK, headers, event.body).into_response()
}

/// `body` read up to `limit` bytes: `Err(true)` when it is longer, `Err(false)`
/// when it could not be read.
async fn read(body: Body, limit: usize) -> Result<Bytes, bool> {
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) => Err(e.is::<http_body_util::LengthLimitError>()),
    }
}

async fn response(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    body: Body,
) -> Response {
    let is_pending = shared
        .pending
        .lock()
        .ok()
        .is_some_and(|p| p.as_ref().is_some_and(|p| p.request_id == id));
    if !is_pending {
        return invalid_id(&id);
    }
    match read(body, shared.max_response).await {
        Ok(bytes) => {
            shared.settle(&id, Ok(bytes));
            accepted()
        }
        Err(true) => {
            shared.settle(&id, Err(Failure::ResponseTooLarge(shared.max_response)));
            status(
                StatusCode::PAYLOAD_TOO_LARGE,
                "RequestEntityTooLarge",
                &format!(
                    "response payload size exceeded maximum allowed payload size ({} bytes)",
                    shared.max_response
                ),
            )
        }
        Err(false) => status(
            StatusCode::BAD_REQUEST,
            "InvalidRequest",
            "the response body could not be read",
        ),
    }
}

fn invalid_id(id: &str) -> Response {
    let shown: String = id.chars().take(64).collect();
    status(
        StatusCode::BAD_REQUEST,
        "InvalidRequestID",
        &format!("{shown:?} is not the request id of the invocation in progress"),
    )
}

/// The error document of an `/error` or `/init/error` post: JSON as
/// runtimes send it; anything else becomes the message, with the
/// `Lambda-Runtime-Function-Error-Type` header or `Unhandled` as type.
async fn function_error(headers: &HeaderMap, body: Body) -> FunctionError {
    let bytes = match read(body, MAX_ERROR_BYTES).await {
        Ok(bytes) => bytes,
        Err(true) => Bytes::from_static(b"(error document over 64 KiB)"),
        Err(false) => Bytes::new(),
    };
    let header_type = headers
        .get("lambda-runtime-function-error-type")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let mut error =
        serde_json::from_slice::<FunctionError>(&bytes).unwrap_or_else(|_| FunctionError {
            error_type: String::new(),
            message: String::from_utf8_lossy(&bytes).into_owned(),
            trace: Vec::new(),
        });
    if error.error_type.is_empty() {
        error.error_type = header_type.unwrap_or_else(|| "Unhandled".to_owned());
    }
    error
}

async fn error(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let error = function_error(&headers, body).await;
    if shared.settle(&id, Err(Failure::Function(error))) {
        accepted()
    } else {
        invalid_id(&id)
    }
}

async fn init_error(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Body) -> Response {
    let error = function_error(&headers, body).await;
    if shared.init_done(Init::Failed(error)) {
        accepted()
    } else {
        status(
            StatusCode::FORBIDDEN,
            "InvalidStateTransition",
            "init has ended: report errors of an invocation to its /error",
        )
    }
}

/// `stackTrace` as runtimes send it: a list of strings (Node.js, Python 3),
/// of lists (older Python clients), or anything: each entry as text.
pub(crate) fn lenient_trace<'de, D>(deserializer: D) -> Result<Vec<String>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    let value: serde_json::Value = serde::Deserialize::deserialize(deserializer)?;
    Ok(match value {
        serde_json::Value::Array(frames) => frames
            .into_iter()
            .map(|frame| match frame {
                serde_json::Value::String(s) => s,
                other => other.to_string(),
            })
            .collect(),
        serde_json::Value::Null => Vec::new(),
        serde_json::Value::String(s) => vec![s],
        other => vec![other.to_string()],
    })
}

#[cfg(test)]
mod tests {
    #![allow(
        clippy::unwrap_used,
        reason = "test code: a panic is how a test reports failure"
    )]

    use super::*;

    #[test]
    fn error_documents_of_every_runtime_parse() {
        let python: FunctionError = serde_json::from_str(
            r#"{"errorMessage": "bad", "errorType": "ValueError", "requestId": "x", "stackTrace": ["  File \"app.py\", line 3\n"]}"#,
        )
        .unwrap();
        assert_eq!(
            (python.error_type.as_str(), python.message.as_str()),
            ("ValueError", "bad")
        );
        assert_eq!(python.trace.len(), 1);
        let old: FunctionError = serde_json::from_str(
            r#"{"errorMessage": "m", "errorType": "T", "stackTrace": [["app.py", 3, "handler", "raise"]]}"#,
        )
        .unwrap();
        assert_eq!(old.trace, [r#"["app.py",3,"handler","raise"]"#]);
        let bare: FunctionError = serde_json::from_str(r#"{"errorMessage": "m"}"#).unwrap();
        assert!(bare.error_type.is_empty() && bare.trace.is_empty());
    }
}
