//! Pushes the runtime's metrics to a Prometheus Pushgateway: Lambda has no
//! scrape target, so when `SHOAL_PUSHGATEWAY_URL` is set each invocation
//! ends with an HTTP `PUT` of the whole registry (the same metric names as
//! the `/metrics` endpoint of the other modes).
//!
//! Contract:
//! - The grouping key is `job` / `function` / `instance`, where `instance`
//!   names this execution environment, so concurrent environments never
//!   overwrite each other's counters. `PUT` replaces the group: counters are
//!   cumulative per environment, exactly as a scrape would see them.
//! - The push happens before the response is returned, because Lambda
//!   freezes the environment once it has the response; it is bounded by
//!   `SHOAL_PUSHGATEWAY_TIMEOUT` (default 2 s).
//! - A failed push is logged and never fails the invocation; the next push
//!   carries the counts (they are cumulative).

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use crate::error::{Error, Result};
use crate::metrics::Metrics;

/// The Prometheus text format version the body is written in.
const CONTENT_TYPE: &str = "text/plain; version=0.0.4";

/// Where and how to push.
#[derive(Clone)]
pub struct Pushgateway {
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    url: http::Uri,
    timeout: Duration,
}

impl std::fmt::Debug for Pushgateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pushgateway")
            .field("url", &self.url)
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// A label value as one URL path segment: characters outside
/// `[A-Za-z0-9._-]` become `_` (Lambda log stream names hold `/`, `[`, `$`).
fn segment(value: &str) -> String {
    let cleaned: String = value
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    if cleaned.is_empty() {
        "_".into()
    } else {
        cleaned
    }
}

/// The push URL for `base` and the grouping key.
pub fn push_url(base: &str, job: &str, function: &str, instance: &str) -> Result<http::Uri> {
    let base = base.trim_end_matches('/');
    let url = format!(
        "{base}/metrics/job/{}/function/{}/instance/{}",
        segment(job),
        segment(function),
        segment(instance)
    );
    let uri: http::Uri = url
        .parse()
        .map_err(|e| Error::Config(format!("SHOAL_PUSHGATEWAY_URL {base:?} is not a URL: {e}")))?;
    match uri.scheme_str() {
        Some("http" | "https") => Ok(uri),
        _ => Err(Error::Config(format!(
            "SHOAL_PUSHGATEWAY_URL {base:?} must start with http:// or https://"
        ))),
    }
}

impl Pushgateway {
    /// A pusher for the gateway at `base` (`http(s)://host:port[/path]`).
    pub fn new(
        base: &str,
        job: &str,
        function: &str,
        instance: &str,
        timeout: Duration,
    ) -> Result<Self> {
        let url = push_url(base, job, function, instance)?;
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_native_roots()
            .map_err(|e| Error::Config(format!("no TLS roots for the Pushgateway: {e}")))?
            .https_or_http()
            .enable_http1()
            .build();
        let client = Client::builder(TokioExecutor::new()).build(connector);
        Ok(Self {
            client,
            url,
            timeout,
        })
    }

    /// The URL pushes go to.
    pub fn url(&self) -> &http::Uri {
        &self.url
    }

    /// Replaces this environment's group with the current metrics.
    pub async fn push(&self, metrics: &Metrics) -> Result<()> {
        let body = metrics
            .encode()
            .map_err(|e| Error::Push(format!("encoding metrics: {e}")))?;
        let request = http::Request::put(self.url.clone())
            .header(http::header::CONTENT_TYPE, CONTENT_TYPE)
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| Error::Push(format!("building the request to {}: {e}", self.url)))?;
        let send = async {
            let response = self
                .client
                .request(request)
                .await
                .map_err(|e| Error::Push(format!("PUT {}: {e}", self.url)))?;
            let status = response.status();
            if status.is_success() {
                return Ok(());
            }
            let text = response
                .into_body()
                .collect()
                .await
                .map(|b| String::from_utf8_lossy(&b.to_bytes()).trim().to_string())
                .unwrap_or_default();
            Err(Error::Push(format!(
                "PUT {} answered {status}: {text}",
                self.url
            )))
        };
        tokio::time::timeout(self.timeout, send)
            .await
            .map_err(|_| {
                Error::Push(format!(
                    "PUT {} took longer than {:?}",
                    self.url, self.timeout
                ))
            })?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grouping_key_is_one_path_segment_per_label() -> Result<()> {
        let url = push_url(
            "http://gw:9091/",
            "shoal",
            "thumbs-prod",
            "2026/11/27/[$LATEST]0123abcd",
        )?;
        assert_eq!(
            url.to_string(),
            "http://gw:9091/metrics/job/shoal/function/thumbs-prod/instance/2026_11_27___LATEST_0123abcd"
        );
        Ok(())
    }

    #[test]
    fn empty_label_values_still_make_a_segment() -> Result<()> {
        let url = push_url("https://gw.example/prefix", "shoal", "", "a")?;
        assert_eq!(
            url.to_string(),
            "https://gw.example/prefix/metrics/job/shoal/function/_/instance/a"
        );
        Ok(())
    }

    #[test]
    fn other_schemes_are_refused_with_the_variable_named() {
        let err = push_url("gw:9091", "shoal", "f", "i").err();
        let text = err.map(|e| e.to_string()).unwrap_or_default();
        assert!(text.contains("SHOAL_PUSHGATEWAY_URL"), "{text}");
    }
}
