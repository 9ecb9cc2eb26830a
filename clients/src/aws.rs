//! The AWS configuration every AWS client of shoal starts from.

/// Loads the AWS configuration from the default chain (environment,
/// profile, web identity, instance metadata), honouring `AWS_ENDPOINT_URL`
/// and the per-service `AWS_ENDPOINT_URL_<SERVICE>`.
pub async fn sdk_config() -> aws_config::SdkConfig {
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .load()
        .await
}
