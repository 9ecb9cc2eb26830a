//! The operator's client of the Kubernetes API server: every request
//! counted and timed in the operator's metrics, and given
//! [`API_ANSWER_LIMIT`] to start being answered.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use crate::metrics::Metrics;

/// How long the API server may take to start answering a request.
pub const API_ANSWER_LIMIT: Duration = Duration::from_secs(30);

/// A client of the API server named by the in-cluster or `KUBECONFIG`
/// credentials, measured in `metrics`.
pub async fn measured_client(metrics: Arc<Metrics>) -> Result<kube::Client, kube::Error> {
    let config = kube::Config::infer()
        .await
        .map_err(kube::Error::InferConfig)?;
    client_from(config, metrics)
}

/// A client of the API server of `config`, counting and timing its
/// requests in `metrics`, each given [`API_ANSWER_LIMIT`] to start being
/// answered.
pub fn client_from(
    config: kube::Config,
    metrics: Arc<Metrics>,
) -> Result<kube::Client, kube::Error> {
    // kube sets no read timeout (a watch may be quiet for minutes), so a
    // request the API server takes and never answers would wait forever.
    // The limit is on the answer's head: a watch's comes at once, its
    // events after.
    let answer_within = tower::timeout::TimeoutLayer::new(API_ANSWER_LIMIT);
    // Outside the limit, so that a request cut by it is timed too.
    let measured = MeasuredLayer { metrics };
    Ok(kube::client::ClientBuilder::try_from(config)?
        .with_layer(&answer_within)
        .with_layer(&measured)
        .build())
}

/// Counts each request by verb and times it until its answer's head (or
/// its error).
#[derive(Clone)]
struct MeasuredLayer {
    metrics: Arc<Metrics>,
}

impl<S> tower::Layer<S> for MeasuredLayer {
    type Service = Measured<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Measured {
            inner,
            metrics: self.metrics.clone(),
        }
    }
}

/// The service of [`MeasuredLayer`].
#[derive(Clone)]
struct Measured<S> {
    inner: S,
    metrics: Arc<Metrics>,
}

impl<S, B> tower::Service<http::Request<B>> for Measured<S>
where
    S: tower::Service<http::Request<B>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let verb = self.metrics.api_request(request.method());
        let timer = Timer {
            metrics: self.metrics.clone(),
            verb,
            sent: Instant::now(),
        };
        let answer = self.inner.call(request);
        Box::pin(async move {
            let answer = answer.await;
            drop(timer);
            answer
        })
    }
}

/// Observes a request's time when dropped: when its answer's head came,
/// or when the caller gave up on it (its own limit), so the slowest
/// requests are never left out.
struct Timer {
    metrics: Arc<Metrics>,
    verb: &'static str,
    sent: Instant,
}

impl Drop for Timer {
    fn drop(&mut self) {
        self.metrics.api_answered(self.verb, self.sent.elapsed());
    }
}

#[cfg(test)]
mod tests {
    #![allow(
        clippy::unwrap_used,
        clippy::expect_used,
        reason = "test code: a panic is how a test reports failure"
    )]

    use super::*;
    use k8s_openapi::api::core::v1::ConfigMap;

    #[tokio::test(start_paused = true)]
    async fn a_request_the_api_server_takes_and_never_answers_ends_at_the_limit() {
        // A server that takes connections (the kernel does) and never
        // reads or answers.
        let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", silent.local_addr().unwrap());
        let metrics = Arc::new(Metrics::new(crate::metrics::DEFAULT_PER_JOB_LIMIT).unwrap());
        let mut config = kube::Config::new(url.parse().unwrap());
        // (The connect limit is as long: left out, so that only the answer's
        // can end the wait.)
        config.connect_timeout = None;
        let client = client_from(config, metrics.clone()).unwrap();
        let started = tokio::time::Instant::now();
        let answer = kube::Api::<ConfigMap>::namespaced(client, "default")
            .get("anything")
            .await;
        let Err(kube::Error::Service(error)) = answer else {
            panic!("expected the limit's error, got {answer:?}");
        };
        assert!(
            error.is::<tower::timeout::error::Elapsed>(),
            "expected the limit's error, got {error}"
        );
        assert_eq!(started.elapsed(), API_ANSWER_LIMIT);
        let text = metrics.encode().unwrap();
        assert!(
            text.contains("shoal_operator_api_requests_total{verb=\"GET\"} 1"),
            "counted"
        );
        // Timed, on the real clock (the paused one does not move it):
        // one GET answered (by the limit) in under 30 s of real time.
        assert!(
            text.contains(
                "shoal_operator_api_request_duration_seconds_bucket{verb=\"GET\",le=\"30\"} 1"
            ),
            "timed: {text}"
        );
    }

    #[tokio::test]
    async fn a_request_its_caller_gives_up_on_is_timed_too() {
        let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", silent.local_addr().unwrap());
        let metrics = Arc::new(Metrics::new(crate::metrics::DEFAULT_PER_JOB_LIMIT).unwrap());
        let client = client_from(kube::Config::new(url.parse().unwrap()), metrics.clone()).unwrap();
        let api = kube::Api::<ConfigMap>::namespaced(client, "default");
        let gave_up = tokio::time::timeout(Duration::from_millis(200), api.get("anything")).await;
        assert!(gave_up.is_err(), "the silent server answered: {gave_up:?}");
        let text = metrics.encode().unwrap();
        assert!(
            text.contains("shoal_operator_api_request_duration_seconds_count{verb=\"GET\"} 1"),
            "timed: {text}"
        );
    }
}
