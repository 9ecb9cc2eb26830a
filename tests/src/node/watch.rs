//! Watching a real node's worker pods from the test: every state a pod
//! went through ([`PodWatch`]), and what each worker holds
//! ([`in_flight_by_pod`], read from its metrics port on the pod network).

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::bed::{Bed, selector};
use crate::kube::{ControlPlane, tool_from_env};
use crate::process::Proc;

/// Each worker pod's `shoal_messages_in_flight`, read from its metrics
/// port on the pod network (the test runs in the node's namespace); pods
/// that do not answer yet are left out.
pub fn in_flight_by_pod(bed: &Bed<'_>, job: &str) -> BTreeMap<String, i64> {
    let agent = crate::prom::http_agent(Duration::from_secs(5));
    bed.plane()
        .jsonpath(
            &["pods", "-l", &selector(job)],
            r#"{range .items[*]}{.metadata.name} {.status.podIP}{"\n"}{end}"#,
        )
        .lines()
        .filter_map(|line| {
            let (pod, ip) = line.split_once(' ')?;
            let mut response = agent
                .get(&format!("http://{ip}:9090/metrics"))
                .call()
                .ok()?;
            let text = response.body_mut().read_to_string().ok()?;
            let count = text
                .lines()
                .find_map(|l| l.strip_prefix("shoal_messages_in_flight "))?
                .trim()
                .parse()
                .ok()?;
            Some((pod.to_owned(), count))
        })
        .collect()
}

/// `kubectl get pods -w -o json` of a job's pods, to a file: every state
/// a pod went through, including the last one of a pod since deleted.
pub struct PodWatch {
    process: Proc,
}

impl PodWatch {
    pub fn start(plane: &ControlPlane, job: &str) -> Self {
        let kubectl = tool_from_env("SHOAL_KUBECTL");
        let log = plane.dir().join(format!("watch-{job}.json"));
        let process = Proc::spawn(
            &kubectl,
            &[
                "--kubeconfig",
                &plane.kubeconfig().to_string_lossy(),
                "get",
                "pods",
                "-l",
                &selector(job),
                "--watch",
                "-o",
                "json",
            ],
            &[],
            &log,
        );
        Self { process }
    }

    pub fn text(&self) -> String {
        self.process.log_text()
    }

    /// The pods whose worker container was Ready in some state seen.
    pub fn ever_ready(&self) -> BTreeSet<String> {
        serde_json::Deserializer::from_str(&self.text())
            .into_iter::<Value>()
            .map_while(Result::ok)
            .filter(|pod| pod["status"]["containerStatuses"][0]["ready"] == true)
            .filter_map(|pod| pod["metadata"]["name"].as_str().map(str::to_owned))
            .collect()
    }

    /// The exit code of `pod`'s worker container in the last state seen.
    pub fn last_exit(&self, pod: &str) -> Option<i64> {
        let started = Instant::now();
        loop {
            let text = self.text();
            let mut last = None;
            for value in serde_json::Deserializer::from_str(&text).into_iter::<Value>() {
                let Ok(value) = value else { break };
                if value["metadata"]["name"] != pod {
                    continue;
                }
                if let Some(code) =
                    value["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"]
                        .as_i64()
                {
                    last = Some(code);
                }
            }
            if last.is_some() || started.elapsed() > Duration::from_secs(60) {
                return last;
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }
}
