//! The commands: each reads or patches BatchJobs (and lists their pods and
//! Events) through the API server, then prints for people or as JSON.

use std::io::Write;
use std::time::Duration;

use futures_util::{AsyncBufReadExt, StreamExt, TryStreamExt, stream};
use k8s_openapi::api::core::v1::{Event, Pod};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ListParams, LogParams, Patch, PatchParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config, ResourceExt};
use serde_json::{Value, json};
use shoal_operator::crd::BatchJob;
use shoal_operator::workload;

use crate::progress::{Progress, pad, short_duration, table};
use crate::{Error, Global, Output, Result};

/// The field manager of the plugin's patches.
const MANAGER: &str = "kubectl-shoal";

/// A client from the kubeconfig `global` names, and its context's
/// namespace.
pub async fn client(global: &Global) -> Result<(Client, String)> {
    let options = KubeConfigOptions {
        context: global.context.clone(),
        ..KubeConfigOptions::default()
    };
    let config = match &global.kubeconfig {
        Some(path) => {
            let kubeconfig = Kubeconfig::read_from(path)
                .map_err(|e| Error::Config(format!("reading {}: {e}", path.display())))?;
            Config::from_custom_kubeconfig(kubeconfig, &options)
                .await
                .map_err(|e| Error::Config(format!("{}: {e}", path.display())))?
        }
        None if global.context.is_some() => Config::from_kubeconfig(&options)
            .await
            .map_err(|e| Error::Config(e.to_string()))?,
        None => Config::infer()
            .await
            .map_err(|e| Error::Config(e.to_string()))?,
    };
    let namespace = config.default_namespace.clone();
    let client = Client::try_from(config).map_err(Error::kube("building the API client"))?;
    Ok((client, namespace))
}

/// BatchJob `namespace/name`, or [`Error::NotFound`].
pub async fn job(client: &Client, namespace: &str, name: &str) -> Result<BatchJob> {
    let api: Api<BatchJob> = Api::namespaced(client.clone(), namespace);
    api.get_opt(name)
        .await
        .map_err(Error::kube(format!("reading batchjob {namespace}/{name}")))?
        .ok_or_else(|| Error::NotFound {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
        })
}

pub(crate) fn write_json(out: &mut impl Write, value: &impl serde::Serialize) -> Result<()> {
    serde_json::to_writer_pretty(&mut *out, value).map_err(|e| Error::Output(e.to_string()))?;
    writeln!(out).map_err(|e| Error::Output(e.to_string()))
}

pub(crate) fn write_text(out: &mut impl Write, text: &str) -> Result<()> {
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .map_err(|e| Error::Output(e.to_string()))
}

/// `status`: one job, the namespace's jobs, or every namespace's
/// (`namespace` `None`).
pub async fn status(
    client: &Client,
    namespace: Option<&str>,
    name: Option<&str>,
    output: Output,
    out: &mut impl Write,
) -> Result<()> {
    let jobs = match (namespace, name) {
        (Some(namespace), Some(name)) => vec![job(client, namespace, name).await?],
        (Some(namespace), None) => {
            Api::<BatchJob>::namespaced(client.clone(), namespace)
                .list(&ListParams::default())
                .await
                .map_err(Error::kube(format!(
                    "listing batchjobs in namespace {namespace}"
                )))?
                .items
        }
        (None, _) => {
            Api::<BatchJob>::all(client.clone())
                .list(&ListParams::default())
                .await
                .map_err(Error::kube("listing batchjobs in every namespace"))?
                .items
        }
    };
    let now = Timestamp::now();
    let rows: Vec<Progress> = jobs.iter().map(|job| Progress::of(job, now)).collect();
    match output {
        Output::Json => write_json(out, &rows),
        Output::Human if rows.is_empty() => write_text(
            out,
            &match namespace {
                Some(namespace) => format!("No BatchJobs in namespace {namespace}.\n"),
                None => "No BatchJobs.\n".to_owned(),
            },
        ),
        Output::Human => write_text(out, &table(&rows, namespace.is_none())),
    }
}

/// The job's Events, oldest first, at most the last 20.
async fn events(client: &Client, job: &BatchJob) -> Result<Vec<Event>> {
    let namespace = job.namespace().unwrap_or_default();
    let mut selector = format!(
        "involvedObject.kind=BatchJob,involvedObject.name={}",
        job.name_any()
    );
    if let Some(uid) = &job.metadata.uid {
        selector.push_str(&format!(",involvedObject.uid={uid}"));
    }
    let mut events = Api::<Event>::namespaced(client.clone(), &namespace)
        .list(&ListParams::default().fields(&selector))
        .await
        .map_err(Error::kube(format!(
            "listing the events of batchjob {namespace}/{}",
            job.name_any()
        )))?
        .items;
    events.sort_by_key(last_seen);
    let skip = events.len().saturating_sub(20);
    Ok(events.into_iter().skip(skip).collect())
}

/// When an Event was last seen (series, last timestamp, event time, first).
fn last_seen(event: &Event) -> Option<Timestamp> {
    event
        .series
        .as_ref()
        .and_then(|s| s.last_observed_time.as_ref().map(|t| t.0))
        .or_else(|| event.last_timestamp.as_ref().map(|t| t.0))
        .or_else(|| event.event_time.as_ref().map(|t| t.0))
        .or_else(|| event.first_timestamp.as_ref().map(|t| t.0))
}

fn ago(now: Timestamp, then: Option<Timestamp>) -> String {
    then.map_or_else(
        || "-".to_owned(),
        |t| short_duration((now.as_millisecond() - t.as_millisecond()) as f64 / 1000.0),
    )
}

/// `describe`: one job's progress, conditions, redrive, results and
/// recent Events.
pub async fn describe(
    client: &Client,
    namespace: &str,
    name: &str,
    output: Output,
    out: &mut impl Write,
) -> Result<()> {
    let job = job(client, namespace, name).await?;
    let events = events(client, &job).await?;
    let now = Timestamp::now();
    let progress = Progress::of(&job, now);
    let status = job.status.clone().unwrap_or_default();
    if output == Output::Json {
        let events: Vec<Value> = events
            .iter()
            .map(|e| {
                json!({
                    "type": e.type_,
                    "reason": e.reason,
                    "message": e.message,
                    "count": e.count.or_else(|| e.series.as_ref().and_then(|s| s.count)),
                    "lastSeen": last_seen(e).map(|t| t.to_string()),
                })
            })
            .collect();
        return write_json(
            out,
            &json!({
                "progress": progress,
                "queueUrl": status.queue_url,
                "deadLetterQueueUrl": status.dead_letter_queue_url,
                "redrive": status.redrive,
                "manifest": status.manifest,
                "failures": status.failures,
                "usage": status.usage,
                "conditions": status.conditions,
                "events": events,
            }),
        );
    }
    let mut text = String::new();
    let mut field = |label: &str, value: String| {
        text.push_str(&format!("{:<14}{value}\n", format!("{label}:")));
    };
    field("Name", progress.name.clone());
    field("Namespace", progress.namespace.clone());
    field("Phase", progress.phase_cell());
    field(
        "Chunks",
        format!(
            "{}: {} done, {} dead-lettered, {} in flight, {} waiting",
            progress.chunks_cell(),
            progress.succeeded,
            progress.dead_lettered,
            progress.in_flight,
            progress.waiting
        ),
    );
    field(
        "Workers",
        format!(
            "{} ready of {}",
            progress.ready_workers, progress.desired_workers
        ),
    );
    if let Some(start) = &status.start_time {
        field(
            "Started",
            format!("{} ({} ago)", start.0, ago(now, Some(start.0))),
        );
    }
    if let Some(done) = &status.completion_time {
        field("Finished", done.0.to_string());
    }
    if let Some(rate) = progress.chunks_per_second {
        let eta = progress.eta_seconds.map_or_else(String::new, |s| {
            format!(", about {} left", short_duration(s))
        });
        field("Rate", format!("{rate:.2} chunks/s{eta}"));
    }
    if let Some(url) = &status.queue_url {
        field("Queue", url.clone());
    }
    if let Some(url) = &status.dead_letter_queue_url {
        field("Dead letters", url.clone());
    }
    if let Some(redrive) = &status.redrive {
        field(
            "Redrive",
            format!(
                "round {}: {} moved{}",
                redrive.round,
                redrive.moved,
                if redrive.done { ", done" } else { ", moving" }
            ),
        );
    }
    if let Some(manifest) = &status.manifest {
        field("Results", manifest.clone());
    }
    if !progress.message.is_empty() {
        field("Message", progress.message.clone());
    }
    if !status.failures.is_empty() {
        text.push_str("Failed items (the first; the failure report under Results has all):\n");
        let mut rows = vec![
            ["ITEM", "ATTEMPTS", "CAUSE", "CATEGORY", "REASON"]
                .map(str::to_owned)
                .to_vec(),
        ];
        for f in &status.failures {
            rows.push(vec![
                printable(&f.item),
                f.attempts.to_string(),
                printable(f.cause.as_deref().unwrap_or_default()),
                printable(f.category.as_deref().unwrap_or_default()),
                printable(f.reason.as_deref().unwrap_or_default()),
            ]);
        }
        text.push_str(&indent(&pad(&rows)));
    }
    text.push_str("Conditions:\n");
    let mut rows = vec![
        ["TYPE", "STATUS", "REASON", "MESSAGE"]
            .map(str::to_owned)
            .to_vec(),
    ];
    for c in &status.conditions {
        rows.push(vec![
            c.type_.clone(),
            c.status.clone(),
            c.reason.clone(),
            c.message.clone(),
        ]);
    }
    text.push_str(&indent(&pad(&rows)));
    text.push_str("Events:\n");
    if events.is_empty() {
        text.push_str("  <none>\n");
    } else {
        let mut rows = vec![
            ["LAST SEEN", "TYPE", "REASON", "MESSAGE"]
                .map(str::to_owned)
                .to_vec(),
        ];
        for e in &events {
            rows.push(vec![
                ago(now, last_seen(e)),
                e.type_.clone().unwrap_or_default(),
                e.reason.clone().unwrap_or_default(),
                e.message.clone().unwrap_or_default(),
            ]);
        }
        text.push_str(&indent(&pad(&rows)));
    }
    write_text(out, &text)
}

/// `text` with control characters escaped (`\n`, `\u{1b}`): an object
/// key or an error message is anyone's text, and must neither break a
/// table's lines nor drive the terminal.
pub fn printable(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

fn indent(text: &str) -> String {
    text.lines().map(|l| format!("  {l}\n")).collect()
}

/// How `logs` reads.
#[derive(Debug, Clone, Copy)]
pub struct LogOptions {
    /// Lines from the end of each pod's log.
    pub tail: i64,
    /// Keep reading until interrupted.
    pub follow: bool,
}

/// `logs`: the worker pods' logs, each line after its pod's name (JSON:
/// one `{"pod", "line"}` object per line). With `follow`, the pods running
/// when it starts are followed.
pub async fn logs(
    client: &Client,
    namespace: &str,
    name: &str,
    how: LogOptions,
    output: Output,
    out: &mut impl Write,
) -> Result<()> {
    let job = job(client, namespace, name).await?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let selector = workload::pod_selector(&job);
    let mut names: Vec<String> = pods
        .list(&ListParams::default().labels(&selector))
        .await
        .map_err(Error::kube(format!(
            "listing the worker pods of batchjob {namespace}/{name}"
        )))?
        .items
        .iter()
        .map(ResourceExt::name_any)
        .collect();
    names.sort();
    if names.is_empty() {
        eprintln!("batchjob {namespace}/{name} has no worker pods now");
        return Ok(());
    }
    let params = LogParams {
        container: Some(workload::CONTAINER.to_owned()),
        tail_lines: Some(how.tail.max(0)),
        follow: how.follow,
        ..LogParams::default()
    };
    let mut unread = 0;
    if !how.follow {
        for pod in &names {
            match pods.logs(pod, &params).await {
                Ok(text) => {
                    for line in text.lines() {
                        write_line(out, output, pod, line, false)?;
                    }
                }
                Err(e) => {
                    no_log(namespace, pod, e)?;
                    unread += 1;
                }
            }
        }
        out.flush().map_err(|e| Error::Output(e.to_string()))?;
        return all_unread(namespace, name, unread, names.len());
    }
    let mut streams = Vec::new();
    for pod in &names {
        match pods.log_stream(pod, &params).await {
            Ok(reader) => {
                let pod_name = pod.clone();
                streams.push(
                    reader
                        .lines()
                        .map_ok(move |line| (pod_name.clone(), line))
                        .boxed(),
                );
            }
            Err(e) => {
                no_log(namespace, pod, e)?;
                unread += 1;
            }
        }
    }
    all_unread(namespace, name, unread, names.len())?;
    let mut merged = stream::select_all(streams);
    while let Some(next) = merged.next().await {
        match next {
            Ok((pod, line)) => {
                write_line(out, output, &pod, &line, true)?;
            }
            Err(e) => eprintln!("a log stream ended: {e}"),
        }
    }
    Ok(())
}

/// A pod whose log could not be read: refused (401, 403) is an error for
/// every pod alike, so it ends the command; anything else (a pod whose
/// container has not started) is said and skipped.
fn no_log(namespace: &str, pod: &str, error: kube::Error) -> Result<()> {
    if let kube::Error::Api(status) = &error
        && matches!(status.code, 401 | 403)
    {
        return Err(Error::Kube {
            what: format!("reading the log of pod {namespace}/{pod}"),
            source: error,
        });
    }
    eprintln!("[{pod}] no log: {error}");
    Ok(())
}

/// An error when not one of `pods` pods had a log to read.
fn all_unread(namespace: &str, name: &str, unread: usize, pods: usize) -> Result<()> {
    if unread > 0 && unread == pods {
        return Err(Error::Request(format!(
            "none of the {pods} worker pods of batchjob {namespace}/{name} has a log to read yet"
        )));
    }
    Ok(())
}

/// One log line of `pod`, flushed when following.
fn write_line(
    out: &mut impl Write,
    output: Output,
    pod: &str,
    line: &str,
    flush: bool,
) -> Result<()> {
    let written = match output {
        Output::Json => serde_json::to_writer(&mut *out, &json!({"pod": pod, "line": line}))
            .map_err(std::io::Error::other)
            .and_then(|()| writeln!(out)),
        Output::Human => writeln!(out, "[{pod}] {line}"),
    };
    written
        .and_then(|()| if flush { out.flush() } else { Ok(()) })
        .map_err(|e| Error::Output(e.to_string()))
}

/// `suspend` (`true`) and `resume` (`false`): sets `spec.suspend`.
pub async fn suspend(
    client: &Client,
    namespace: &str,
    name: &str,
    on: bool,
    output: Output,
    out: &mut impl Write,
) -> Result<()> {
    let job = job(client, namespace, name).await?;
    let api: Api<BatchJob> = Api::namespaced(client.clone(), namespace);
    let patch = json!({"spec": {"suspend": on}});
    api.patch(
        name,
        &PatchParams {
            field_manager: Some(MANAGER.to_owned()),
            ..PatchParams::default()
        },
        &Patch::Merge(&patch),
    )
    .await
    .map_err(Error::kube(format!(
        "setting spec.suspend of batchjob {namespace}/{name}"
    )))?;
    let finished = job.status.as_ref().is_some_and(|s| s.phase.is_finished());
    match output {
        Output::Json => write_json(
            out,
            &json!({"namespace": namespace, "name": name, "suspend": on, "finished": finished}),
        ),
        Output::Human => {
            let verb = if on { "suspended" } else { "resumed" };
            let note = if finished {
                " (it has finished: nothing changes)"
            } else {
                ""
            };
            write_text(out, &format!("batchjob {namespace}/{name} {verb}{note}\n"))
        }
    }
}

/// `redrive`: asks for a new round; with `wait`, waits that long for the
/// operator to finish it.
pub async fn redrive(
    client: &Client,
    namespace: &str,
    name: &str,
    wait: Option<Duration>,
    output: Output,
    out: &mut impl Write,
) -> Result<()> {
    job(client, namespace, name).await?;
    let round = shoal_operator::redrive::request(client.clone(), namespace, name)
        .await
        .map_err(|e| Error::Request(e.to_string()))?;
    let moved = match wait {
        None => None,
        Some(limit) => Some(
            shoal_operator::redrive::wait(client.clone(), namespace, name, round, limit)
                .await
                .map_err(|e| match e {
                    shoal_operator::error::Error::Invalid(why) => Error::TimedOut(why),
                    other => Error::Request(other.to_string()),
                })?,
        ),
    };
    match (output, moved) {
        (Output::Json, moved) => write_json(
            out,
            &json!({"namespace": namespace, "name": name, "round": round, "moved": moved}),
        ),
        (Output::Human, None) => write_text(
            out,
            &format!("batchjob {namespace}/{name}: redrive {round} requested\n"),
        ),
        (Output::Human, Some(moved)) => write_text(
            out,
            &format!(
                "batchjob {namespace}/{name}: redrive {round} moved {moved} dead letters back to the work queue\n"
            ),
        ),
    }
}
