//! Whether an object in the cluster still holds what the operator applied.
//!
//! The API server adds defaults to what it stores (`imagePullPolicy`,
//! `terminationMessagePath`, ...) and other managers add fields of their
//! own, so the live object is never equal to the applied one. It has
//! drifted when a value the operator set differs or is gone: someone
//! edited the Deployment by hand, and the next apply puts it back.

use serde_json::Value;

/// Whether `live` holds every value of `desired`: objects key by key
/// (extra keys in `live` are fine), arrays of scalars exactly (order
/// matters for `args`), arrays of objects element by element, each
/// desired element held by the live element at the same position.
pub fn holds(live: &Value, desired: &Value) -> bool {
    difference(live, desired).is_none()
}

/// The path of the first value of `desired` that `live` does not hold
/// (`template.spec.containers[0].image`), if any; see [`holds`].
pub fn difference(live: &Value, desired: &Value) -> Option<String> {
    differs_at(live, desired, String::new())
}

fn differs_at(live: &Value, desired: &Value, path: String) -> Option<String> {
    let here = || {
        Some(if path.is_empty() {
            ".".to_owned()
        } else {
            path.clone()
        })
    };
    match (live, desired) {
        (Value::Object(live), Value::Object(desired)) => desired.iter().find_map(|(key, want)| {
            let at = if path.is_empty() {
                key.clone()
            } else {
                format!("{path}.{key}")
            };
            match live.get(key) {
                Some(have) => differs_at(have, want, at),
                None if want.is_null() => None,
                None => Some(at),
            }
        }),
        (Value::Array(live), Value::Array(desired)) => {
            if desired.iter().all(|v| !v.is_object()) {
                return (live != desired).then(here).flatten();
            }
            if live.len() < desired.len() {
                return here();
            }
            desired
                .iter()
                .zip(live)
                .enumerate()
                .find_map(|(i, (want, have))| differs_at(have, want, format!("{path}[{i}]")))
        }
        (Value::Number(have), Value::Number(want)) => {
            (have.as_f64() != want.as_f64()).then(here).flatten()
        }
        (have, want) => (have != want).then(here).flatten(),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::holds;

    #[test]
    fn defaults_added_by_the_api_server_are_not_drift() {
        let desired = json!({"containers": [{"name": "w", "image": "a:1", "args": ["worker"]}]});
        let live = json!({"containers": [{
            "name": "w", "image": "a:1", "args": ["worker"],
            "imagePullPolicy": "IfNotPresent", "terminationMessagePath": "/dev/termination-log"
        }], "dnsPolicy": "ClusterFirst"});
        assert!(holds(&live, &desired));
    }

    #[test]
    fn a_changed_or_removed_value_is_drift() {
        let desired =
            json!({"containers": [{"name": "w", "image": "a:1", "args": ["worker", "-v"]}]});
        for live in [
            json!({"containers": [{"name": "w", "image": "evil:1", "args": ["worker", "-v"]}]}),
            json!({"containers": [{"name": "w", "image": "a:1", "args": ["-v", "worker"]}]}),
            json!({"containers": [{"name": "w", "image": "a:1"}]}),
            json!({"containers": []}),
        ] {
            assert!(!holds(&live, &desired), "{live}");
        }
    }
}
