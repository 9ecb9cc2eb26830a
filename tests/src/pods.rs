//! Worker processes from the pod template of a Deployment the operator
//! wrote, for tests without a kubelet: the container's command and args,
//! and its environment resolved as the kubelet resolves it: `value`s with
//! `$(VAR)` references to variables defined before them expanded (`$$`
//! escapes a `$`), `secretKeyRef`s read from the Secret in the API server.
//! Only the metrics address changes, since the processes share one host.

use serde_json::Value;

use crate::free_port;
use crate::kube::ControlPlane;
use crate::process::Proc;

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// `text` with `$(NAME)` replaced by the value of an earlier variable in
/// `defined`, as Kubernetes expands them: unknown references stay as they
/// are, `$$` is a literal `$`.
pub fn expand(text: &str, defined: &[(String, String)]) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let tail = &rest[at..];
        if let Some(after) = tail.strip_prefix("$$") {
            out.push('$');
            rest = after;
        } else if let Some((name, after)) = tail
            .strip_prefix("$(")
            .and_then(|t| t.split_once(')'))
            .filter(|(name, _)| defined.iter().any(|(k, _)| k == name))
        {
            let value = defined
                .iter()
                .rev()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.as_str())
                .unwrap_or_default();
            out.push_str(value);
            rest = after;
        } else {
            out.push('$');
            rest = &tail[1..];
        }
    }
    out.push_str(rest);
    out
}

/// Value of `key` in Secret `name` (current namespace).
fn secret_value(plane: &ControlPlane, name: &str, key: &str) -> String {
    use base64::Engine;
    let encoded = plane.jsonpath(&["secret", name], &format!("{{.data.{key}}}"));
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .unwrap_or_else(|e| panic!("secret {name} key {key} is not base64: {e}"));
    String::from_utf8(bytes).unwrap_or_else(|e| panic!("secret {name} key {key}: {e}"))
}

/// The environment of the first container of Deployment `deployment`,
/// resolved in order as the kubelet does.
pub fn template_env(plane: &ControlPlane, deployment: &Value) -> Vec<(String, String)> {
    let container = &deployment["spec"]["template"]["spec"]["containers"][0];
    let mut resolved: Vec<(String, String)> = Vec::new();
    for var in container["env"].as_array().into_iter().flatten() {
        let name = var["name"].as_str().unwrap_or_default().to_owned();
        let value = if let Some(secret) = var["valueFrom"]["secretKeyRef"].as_object() {
            let secret_name = secret["name"].as_str().unwrap_or_default();
            let key = secret["key"].as_str().unwrap_or_default();
            secret_value(plane, secret_name, key)
        } else {
            expand(var["value"].as_str().unwrap_or_default(), &resolved)
        };
        resolved.push((name, value));
    }
    resolved
}

/// `count` worker processes from Deployment `name`'s pod template. The
/// template's command must be `handler` (the test's handler binary) and
/// its last argument `worker`.
pub fn start_workers(plane: &ControlPlane, name: &str, handler: &str, count: usize) -> Vec<Proc> {
    let json = plane.kubectl(&["get", "deployment", name, "-o", "json"]);
    let deployment: Value =
        serde_json::from_str(&json).unwrap_or_else(|e| panic!("deployment {name}: {e}"));
    let container = &deployment["spec"]["template"]["spec"]["containers"][0];
    let command = strings(&container["command"]);
    let args = strings(&container["args"]);
    assert_eq!(command, [handler], "the handler command of the BatchJob");
    assert_eq!(args.last().map(String::as_str), Some("worker"));
    let template_env: Vec<(String, String)> = template_env(plane, &deployment)
        .into_iter()
        .filter(|(k, _)| k != "SHOAL_METRICS_ADDR")
        .collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    (0..count)
        .map(|n| {
            let mut env: Vec<(&str, String)> = template_env
                .iter()
                .map(|(k, v)| (k.as_str(), v.clone()))
                .collect();
            env.push(("SHOAL_METRICS_ADDR", format!("127.0.0.1:{}", free_port())));
            Proc::spawn(
                &command[0],
                &args,
                &env,
                &plane.dir().join(format!("{name}-{n}.log")),
            )
        })
        .collect()
}

/// Stops `workers` as the kubelet stops a pod: SIGTERM, then waits for
/// each to exit (at most a minute) after it drained.
pub fn stop_workers(workers: Vec<Proc>) {
    for worker in &workers {
        worker.signal("TERM");
    }
    for mut worker in workers {
        let status = worker.wait(std::time::Duration::from_secs(60));
        assert!(
            status.success(),
            "worker exit {status}: {}",
            worker.log_text()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_expand_like_the_kubelet() {
        let defined = vec![
            ("URL".to_owned(), "amqp://u:p@h/%2f".to_owned()),
            ("N".to_owned(), "1".to_owned()),
        ];
        assert_eq!(expand("$(URL)/jobs", &defined), "amqp://u:p@h/%2f/jobs");
        assert_eq!(
            expand("$$(URL) $(MISSING) $(N)$", &defined),
            "$(URL) $(MISSING) 1$"
        );
    }
}
