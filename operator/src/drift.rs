//! Whether an object in the cluster still holds what the operator applied.
//!
//! The API server adds defaults to what it stores (`imagePullPolicy`,
//! `terminationMessagePath`, ...) and other managers add fields of their
//! own, so the live object is never equal to the applied one. It has
//! drifted when a value the operator set differs or is gone: someone
//! edited the Deployment by hand, and the next apply puts it back.
//!
//! The API server also stores some values differently from how they were
//! sent, and those are not drift: a Go zero value (`false`, `0`, `""`,
//! empty list or object) is left out, and a resource quantity is kept in
//! canonical form (`1024Mi` as `1Gi`), compared here by value.

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
                None if is_zero(want) => None,
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
        (Value::String(have), Value::String(want))
            if have != want && is_quantity(&path) && same_quantity(have, want) =>
        {
            None
        }
        (have, want) => (have != want).then(here).flatten(),
    }
}

/// Whether the API server leaves `value` out when it stores it: null, or
/// the zero value of its Go type (`omitempty`).
fn is_zero(value: &Value) -> bool {
    match value {
        Value::Null => true,
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_f64() == Some(0.0),
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
    }
}

/// Whether the value at `path` is a resource quantity: a container's
/// requests and limits, an `emptyDir`'s size limit, a claim's storage.
fn is_quantity(path: &str) -> bool {
    path.contains(".resources.") || path.ends_with(".sizeLimit")
}

/// Whether `a` and `b` are the same quantity written two ways.
fn same_quantity(a: &str, b: &str) -> bool {
    use kube_quantity::ParsedQuantity;
    match (ParsedQuantity::try_from(a), ParsedQuantity::try_from(b)) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
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
    fn zero_values_left_out_and_quantities_in_canonical_form_are_not_drift() {
        let desired = json!({"containers": [{
            "volumeMounts": [{"name": "m", "mountPath": "/m", "readOnly": false}],
            "resources": {"limits": {"memory": "1024Mi", "nvidia.com/gpu": "1000"}}
        }], "tolerations": [{"key": "spot", "value": ""}], "priorityClassName": "",
            "volumes": [{"name": "s", "emptyDir": {"sizeLimit": "1.5Gi"}}]});
        let live = json!({"containers": [{
            "volumeMounts": [{"name": "m", "mountPath": "/m"}],
            "resources": {"limits": {"memory": "1Gi", "nvidia.com/gpu": "1k"}}
        }], "tolerations": [{"key": "spot"}],
            "volumes": [{"name": "s", "emptyDir": {"sizeLimit": "1536Mi"}}]});
        assert_eq!(super::difference(&live, &desired), None);
        // A different amount is drift; so is a quantity-looking string
        // outside resources.
        let more = json!({"containers": [{"resources": {"limits": {"memory": "2Gi"}}}]});
        let less = json!({"containers": [{"resources": {"limits": {"memory": "1Gi"}}}]});
        assert!(!holds(&less, &more));
        assert!(!holds(&json!({"args": ["1k"]}), &json!({"args": ["1000"]})));
        assert!(!holds(&json!({"image": "1k"}), &json!({"image": "1000"})));
        assert!(!holds(&json!({}), &json!({"readOnly": true})));
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
