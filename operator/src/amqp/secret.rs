//! The broker URL of a BatchJob, read from the Secret its connection
//! names. Used by the operator's reconciler and by `kubectl shoal invoke`.

use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;

use super::Broker;
use crate::crd::AmqpConnection;
use crate::error::{Error, Result};

/// Key of an optional management API base URL in a broker's Secret; see
/// [`Broker::parse`].
const MANAGEMENT_KEY: &str = "managementUrl";

/// The broker named by `connection`'s Secret, or why it cannot be used
/// (a reason for the `Ready` condition and a message naming the Secret,
/// never its value). Errors are API failures other than 403.
pub async fn from_secret(
    client: &kube::Client,
    namespace: &str,
    connection: &AmqpConnection,
) -> Result<std::result::Result<Broker, (&'static str, String)>> {
    let name = &connection.secret_name;
    let key = connection.key();
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let secret = match secrets.get_opt(name).await {
        Ok(Some(secret)) => secret,
        Ok(None) => {
            return Ok(Err((
                "BrokerSecretNotFound",
                format!("secret {namespace}/{name} (the RabbitMQ URL) does not exist"),
            )));
        }
        Err(kube::Error::Api(status)) if status.code == 403 => {
            return Ok(Err((
                "BrokerSecretForbidden",
                format!(
                    "the operator may not read secret {namespace}/{name}: grant it (chart value rbac.amqpSecrets)"
                ),
            )));
        }
        Err(e) => {
            return Err(Error::Kube {
                what: format!("reading secret {namespace}/{name}"),
                source: e,
            });
        }
    };
    let text = |key: &str| {
        secret
            .data
            .as_ref()
            .and_then(|d| d.get(key))
            .map(|v| String::from_utf8(v.0.clone()))
    };
    let value = text(key);
    let management = match text(MANAGEMENT_KEY) {
        None => None,
        Some(Ok(url)) => Some(url),
        Some(Err(_)) => {
            return Ok(Err((
                "BrokerSecretInvalid",
                format!("secret {namespace}/{name}, key {MANAGEMENT_KEY}: not UTF-8"),
            )));
        }
    };
    let invalid = |why: String| {
        Err((
            "BrokerSecretInvalid",
            format!("secret {namespace}/{name}, key {key}: {why}"),
        ))
    };
    Ok(match value {
        None => invalid("no such key".into()),
        Some(Err(_)) => invalid("not UTF-8".into()),
        Some(Ok(url)) => match Broker::parse(
            &url,
            connection.management_url.as_deref(),
            management.as_deref(),
        ) {
            Ok(broker) => Ok(broker),
            Err(why) => invalid(why),
        },
    })
}
