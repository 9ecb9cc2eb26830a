//! The S3 client, built the same way by the
//! worker and the operator, so an endpoint that works for one works for
//! the other.

use aws_sdk_s3::Client;

/// Builds an S3 client. Path-style addressing is used when asked, and by
/// default whenever a custom endpoint is configured, since S3-compatible
/// servers on a plain host name (or an IP address) need it.
pub fn s3_client(config: &aws_config::SdkConfig, force_path_style: Option<bool>) -> Client {
    let s3_config = aws_sdk_s3::config::Builder::from(config)
        .force_path_style(force_path_style.unwrap_or_else(|| custom_endpoint(config)))
        .build();
    Client::from_conf(s3_config)
}

/// Whether `config` gives S3 an endpoint of its own, wherever it was set:
/// `AWS_ENDPOINT_URL_S3` or `AWS_ENDPOINT_URL`, or `endpoint_url` in the
/// shared config file's profile or in its `services` section (a mounted
/// config file in a pod), or in code. The SDK resolves the client's
/// endpoint in the same order.
fn custom_endpoint(config: &aws_config::SdkConfig) -> bool {
    let key = aws_types::service_config::ServiceConfigKey::builder()
        .service_id("S3")
        .env("AWS_ENDPOINT_URL")
        .profile("endpoint_url")
        .build();
    let configured = key
        .ok()
        .and_then(|key| config.service_config()?.load_config(key))
        .is_some();
    configured || config.endpoint_url().is_some()
}

#[cfg(test)]
mod tests {
    #![allow(
        clippy::unwrap_used,
        reason = "test code: a panic is how a test reports failure"
    )]

    use aws_runtime::env_config::file::{EnvConfigFileKind, EnvConfigFiles};

    use super::*;

    async fn with_config_file(text: &str) -> aws_config::SdkConfig {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config");
        std::fs::write(&path, text).unwrap();
        let files = EnvConfigFiles::builder()
            .with_file(EnvConfigFileKind::Config, &path)
            .build();
        aws_config::defaults(aws_config::BehaviorVersion::latest())
            .profile_files(files)
            .load()
            .await
    }

    #[tokio::test]
    async fn an_endpoint_from_a_mounted_config_file_is_custom_too() {
        // As a pod gets it from a ConfigMap: per service, or for every one.
        for text in [
            "[default]\nservices = local\n[services local]\ns3 =\n  endpoint_url = http://10.0.0.7:5000\n",
            "[default]\nendpoint_url = http://10.0.0.7:5000\n",
        ] {
            let config = with_config_file(text).await;
            assert!(custom_endpoint(&config), "{text}");
        }
        // (The test processes run without AWS_ENDPOINT_URL*.)
        let config = with_config_file("[default]\nregion = eu-west-1\n").await;
        assert!(!custom_endpoint(&config), "AWS itself");
    }
}
