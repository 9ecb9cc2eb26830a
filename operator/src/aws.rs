//! The AWS configuration the operator's SQS and S3 clients start from.

use std::time::Duration;

/// How long one attempt of an AWS request may take to be answered (its
/// head, for a streamed body). The SDK sets no such limit by default: a
/// server that takes a request and never answers would hold the reconcile
/// waiting on it for good. An attempt past it is retried as the SDK
/// retries any timeout.
pub const ATTEMPT_LIMIT: Duration = Duration::from_secs(20);

/// How long a connection may take to open (the SDK's own default).
const CONNECT_LIMIT: Duration = Duration::from_millis(3100);

/// The default chain (environment, profile, web identity, instance
/// metadata), with [`ATTEMPT_LIMIT`] on every attempt.
pub async fn config() -> aws_config::SdkConfig {
    let timeouts = aws_config::timeout::TimeoutConfig::builder()
        .connect_timeout(CONNECT_LIMIT)
        .operation_attempt_timeout(ATTEMPT_LIMIT)
        .build();
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .timeout_config(timeouts)
        .load()
        .await
}
