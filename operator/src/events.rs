//! Kubernetes Events about BatchJobs, written beside the reconciles
//! instead of inside them.
//!
//! Contract:
//! - [`Events::publish`] never waits for the API server: a reconcile hands
//!   its Events over and goes on, as client-go's recorder does. An Event's
//!   `eventTime` is when it was handed over.
//! - The Events of one object are written in the order they were handed
//!   over: each object has one lane (chosen by its namespace and name);
//!   [`LANES`] lanes write beside each other.
//! - Bounded: a lane holds at most [`LANE_CAPACITY`] batches waiting. Past
//!   that, Events are dropped, logged and counted
//!   (`shoal_operator_events_total{outcome="dropped"}`), never waited for.
//! - The same Event again on the same object (type, reason and note)
//!   within [`SERIES_WINDOW`] raises the count of the first (its
//!   `series`) instead of making a new object. A lane remembers an Event by
//!   a 64-bit hash of that key, its name and its count, about 100 bytes,
//!   for that long. (kube's `Recorder` keeps the whole Event for it, and
//!   leaves the note out of the key, so a second note showed the first.)
//! - A write the API server refuses, or does not answer within
//!   [`WRITE_LIMIT`], is logged and counted, not retried: Events are a
//!   record for people, never the operator's state.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::{Event, EventSeries};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::Client;
use kube::api::{Api, Patch, PatchParams, PostParams};
use tokio::sync::{mpsc, oneshot};

use crate::metrics::Metrics;

/// Lanes writing beside each other.
pub const LANES: usize = 8;
/// Batches a lane holds waiting, at most.
pub const LANE_CAPACITY: usize = 256;
/// How long a repeat counts into the first Event (kube's and client-go's
/// window).
pub const SERIES_WINDOW: Duration = Duration::from_secs(6 * 60);
/// How long one Event write may take, answer included.
pub const WRITE_LIMIT: Duration = Duration::from_secs(30);
/// How often a lane forgets Events older than [`SERIES_WINDOW`].
const PRUNE_EVERY: Duration = Duration::from_secs(30);
/// The longest object name an Event's name starts with: the name is
/// `<object>.<16 hex digits>`, at most 253 bytes.
const NAME_PREFIX_MAX: usize = 253 - 17;

/// One Event to write.
#[derive(Debug, Clone)]
pub struct Note {
    /// `Warning` rather than `Normal`.
    pub warning: bool,
    /// Short, CamelCase.
    pub reason: String,
    /// What happened, at most 1,024 bytes (cut by the caller).
    pub note: String,
}

impl Note {
    /// A `Normal` Event.
    pub fn normal(reason: impl Into<String>, note: impl Into<String>) -> Self {
        Self {
            warning: false,
            reason: reason.into(),
            note: note.into(),
        }
    }

    /// A `Warning` Event when `warning`, else a `Normal` one.
    pub fn new(warning: bool, reason: impl Into<String>, note: impl Into<String>) -> Self {
        Self {
            warning,
            ..Self::normal(reason, note)
        }
    }
}

enum Message {
    Publish {
        regarding: ObjectReference,
        notes: Vec<Note>,
        at: Timestamp,
    },
    Flush(oneshot::Sender<()>),
}

/// Hands Events over to the lanes that write them; cheap to clone.
#[derive(Clone)]
pub struct Events {
    lanes: Arc<[mpsc::Sender<Message>]>,
    metrics: Arc<Metrics>,
}

impl Events {
    /// Starts the lanes (on the current Tokio runtime), writing as
    /// `controller`. They stop once every handle is dropped and what was
    /// handed over is written.
    pub fn start(client: &Client, controller: &str, metrics: Arc<Metrics>) -> Self {
        let lanes = (0..LANES)
            .map(|_| {
                let (tx, rx) = mpsc::channel(LANE_CAPACITY);
                let lane = Lane {
                    client: client.clone(),
                    controller: controller.to_owned(),
                    metrics: metrics.clone(),
                    seen: HashMap::new(),
                    pruned: Instant::now(),
                };
                tokio::spawn(lane.run(rx));
                tx
            })
            .collect();
        Self { lanes, metrics }
    }

    /// Hands `notes` about `regarding` over, in that order; never waits.
    pub fn publish(&self, regarding: ObjectReference, notes: Vec<Note>) {
        if notes.is_empty() {
            return;
        }
        let mut hasher = DefaultHasher::new();
        (&regarding.namespace, &regarding.name).hash(&mut hasher);
        let lane = usize::try_from(hasher.finish() % LANES as u64).unwrap_or(0);
        let Some(tx) = self.lanes.get(lane) else {
            return;
        };
        let message = Message::Publish {
            regarding,
            notes,
            at: Timestamp::now(),
        };
        if let Err(e) = tx.try_send(message)
            && let Message::Publish {
                regarding, notes, ..
            } = e.into_inner()
        {
            self.metrics.event("dropped", notes.len());
            let reasons: Vec<String> = notes.into_iter().map(|n| n.reason).collect();
            tracing::warn!(
                object = regarding.name.as_deref().unwrap_or_default(),
                namespace = regarding.namespace.as_deref().unwrap_or_default(),
                ?reasons,
                "events dropped: the API server takes them slower than they come"
            );
        }
    }

    /// Waits until everything handed over before this call is written (or
    /// refused).
    pub async fn flush(&self) {
        let mut acks = Vec::with_capacity(self.lanes.len());
        for tx in self.lanes.iter() {
            let (ack, done) = oneshot::channel();
            if tx.send(Message::Flush(ack)).await.is_ok() {
                acks.push(done);
            }
        }
        for done in acks {
            let _ = done.await;
        }
    }
}

/// An Event written in the last [`SERIES_WINDOW`].
struct Seen {
    name: String,
    count: i32,
    last: Instant,
}

/// One lane: writes its Events one after the other.
struct Lane {
    client: Client,
    controller: String,
    metrics: Arc<Metrics>,
    seen: HashMap<u64, Seen>,
    pruned: Instant,
}

impl Lane {
    async fn run(mut self, mut rx: mpsc::Receiver<Message>) {
        while let Some(message) = rx.recv().await {
            match message {
                Message::Flush(ack) => {
                    let _ = ack.send(());
                }
                Message::Publish {
                    regarding,
                    notes,
                    at,
                } => {
                    if self.pruned.elapsed() >= PRUNE_EVERY {
                        self.seen.retain(|_, s| s.last.elapsed() < SERIES_WINDOW);
                        self.pruned = Instant::now();
                    }
                    for note in notes {
                        let reason = note.reason.clone();
                        // The API server's answer has a limit on its head
                        // (the client's); this one covers the whole write,
                        // so a stalled body never holds the lane.
                        let write = self.write(&regarding, note, at);
                        if tokio::time::timeout(WRITE_LIMIT, write).await.is_err() {
                            self.metrics.event("failed", 1);
                            tracing::warn!(
                                object = regarding.name.as_deref().unwrap_or_default(),
                                namespace = regarding.namespace.as_deref().unwrap_or_default(),
                                reason,
                                "cannot publish event: no answer within {WRITE_LIMIT:?}"
                            );
                        }
                    }
                }
            }
        }
    }

    /// Writes one Event: the count of an earlier one raised, or a new one.
    async fn write(&mut self, regarding: &ObjectReference, note: Note, at: Timestamp) {
        let namespace = regarding.namespace.as_deref().unwrap_or("default");
        let api: Api<Event> = Api::namespaced(self.client.clone(), namespace);
        let key = key(regarding, &note);
        if let Some(seen) = self
            .seen
            .get_mut(&key)
            .filter(|s| s.last.elapsed() < SERIES_WINDOW)
        {
            let count = seen.count.saturating_add(1);
            let series = serde_json::json!({
                "series": EventSeries { count, last_observed_time: MicroTime(at) }
            });
            match api
                .patch(&seen.name, &PatchParams::default(), &Patch::Merge(&series))
                .await
            {
                Ok(_) => {
                    seen.count = count;
                    seen.last = Instant::now();
                    self.metrics.event("repeated", 1);
                    return;
                }
                // Gone (the API server keeps Events an hour): a new one.
                Err(kube::Error::Api(e)) if e.code == 404 => {}
                Err(e) => {
                    self.refused(regarding, &note.reason, &e);
                    return;
                }
            }
        }
        let name = event_name(regarding);
        let event = Event {
            action: Some("Reconcile".to_owned()),
            event_time: Some(MicroTime(at)),
            metadata: ObjectMeta {
                name: Some(name.clone()),
                namespace: Some(namespace.to_owned()),
                ..ObjectMeta::default()
            },
            note: Some(note.note.clone()),
            reason: Some(note.reason.clone()),
            regarding: Some(regarding.clone()),
            reporting_controller: Some(self.controller.clone()),
            reporting_instance: Some(self.controller.clone()),
            type_: Some(if note.warning { "Warning" } else { "Normal" }.to_owned()),
            ..Event::default()
        };
        match api.create(&PostParams::default(), &event).await {
            Ok(_) => {
                self.seen.insert(
                    key,
                    Seen {
                        name,
                        count: 1,
                        last: Instant::now(),
                    },
                );
                self.metrics.event("published", 1);
            }
            Err(e) => self.refused(regarding, &note.reason, &e),
        }
    }

    fn refused(&self, regarding: &ObjectReference, reason: &str, error: &kube::Error) {
        self.metrics.event("failed", 1);
        tracing::warn!(
            object = regarding.name.as_deref().unwrap_or_default(),
            namespace = regarding.namespace.as_deref().unwrap_or_default(),
            reason,
            %error,
            "cannot publish event"
        );
    }
}

/// What makes two Events the same: the object (by uid too: a new object
/// of the same name is another) and the type, reason and note.
fn key(regarding: &ObjectReference, note: &Note) -> u64 {
    let mut hasher = DefaultHasher::new();
    (
        &regarding.namespace,
        &regarding.name,
        &regarding.uid,
        &regarding.kind,
    )
        .hash(&mut hasher);
    (note.warning, &note.reason, &note.note).hash(&mut hasher);
    hasher.finish()
}

/// A new Event's name: the object's (cut to fit) and the time in
/// nanoseconds, as kube and client-go name theirs.
fn event_name(regarding: &ObjectReference) -> String {
    let object = regarding.name.as_deref().unwrap_or("shoal");
    let mut end = object.len().min(NAME_PREFIX_MAX);
    while !object.is_char_boundary(end) {
        end -= 1;
    }
    let prefix = object[..end].trim_end_matches(['-', '.']);
    let nanos = Timestamp::now().as_nanosecond();
    format!("{prefix}.{:016x}", nanos.unsigned_abs() as u64)
}

#[cfg(test)]
mod tests {
    #![allow(
        clippy::unwrap_used,
        clippy::expect_used,
        reason = "test code: a panic is how a test reports failure"
    )]

    use super::*;
    use http::{Method, Request, Response, StatusCode};
    use kube::client::Body;
    use serde_json::{Value, json};

    fn reference(name: &str) -> ObjectReference {
        ObjectReference {
            kind: Some("BatchJob".into()),
            name: Some(name.into()),
            namespace: Some("media".into()),
            uid: Some("u1".into()),
            ..ObjectReference::default()
        }
    }

    fn note(reason: &str, note: &str) -> Note {
        Note {
            warning: false,
            reason: reason.into(),
            note: note.into(),
        }
    }

    fn metrics() -> Arc<Metrics> {
        Arc::new(Metrics::new(crate::metrics::DEFAULT_PER_JOB_LIMIT).unwrap())
    }

    fn counted(metrics: &Metrics, outcome: &str) -> String {
        let text = metrics.encode().unwrap();
        let series = format!("shoal_operator_events_total{{outcome=\"{outcome}\"}} ");
        text.lines()
            .find_map(|l| l.strip_prefix(series.as_str()))
            .unwrap_or("absent")
            .to_owned()
    }

    /// A mock API server for Events: creates echo the Event; a patch of an
    /// Event named in `gone` is answered 404, other patches with the Event.
    /// Returns every request as (method, path, body).
    fn serve(
        mut handle: tower_test::mock::Handle<Request<Body>, Response<Body>>,
        gone: Vec<String>,
    ) -> tokio::task::JoinHandle<Vec<(Method, String, Value)>> {
        tokio::spawn(async move {
            let mut seen = Vec::new();
            while let Some((request, respond)) = handle.next_request().await {
                let method = request.method().clone();
                let path = request.uri().path().to_owned();
                let bytes = request.into_body().collect_bytes().await.unwrap();
                let body: Value = serde_json::from_slice(&bytes).unwrap();
                let name = path.rsplit('/').next().unwrap_or_default().to_owned();
                let (status, answer) = if method == Method::PATCH && gone.contains(&name) {
                    let status = json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                        "reason": "NotFound", "code": 404, "message": "not found"});
                    (StatusCode::NOT_FOUND, status)
                } else if method == Method::PATCH {
                    let event = json!({"apiVersion": "events.k8s.io/v1", "kind": "Event",
                        "metadata": {"name": name, "namespace": "media"}, "eventTime": null});
                    (StatusCode::OK, event)
                } else {
                    (StatusCode::CREATED, body.clone())
                };
                seen.push((method, path, body));
                respond.send_response(
                    Response::builder()
                        .status(status)
                        .body(Body::from(serde_json::to_vec(&answer).unwrap()))
                        .unwrap(),
                );
            }
            seen
        })
    }

    #[tokio::test]
    async fn events_are_written_in_order_and_a_repeat_raises_the_first_ones_count() {
        let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let metrics = metrics();
        let events = Events::start(&Client::new(service, "default"), "shoal", metrics.clone());
        let server = serve(handle, vec![]);
        let a = reference("a");
        events.publish(
            a.clone(),
            vec![note("QueuesCreated", "q"), note("Scaled", "workers 0 -> 1")],
        );
        events.publish(reference("b"), vec![note("Scaled", "workers 0 -> 1")]);
        events.publish(a.clone(), vec![note("Scaled", "workers 0 -> 1")]);
        events.publish(a.clone(), vec![note("Scaled", "workers 1 -> 2")]);
        events.flush().await;
        assert_eq!(counted(&metrics, "published"), "4");
        assert_eq!(counted(&metrics, "repeated"), "1");
        drop(events);
        let seen = server.await.unwrap();
        let of_a: Vec<_> = seen
            .iter()
            .filter(|(_, path, body)| {
                path.starts_with("/apis/events.k8s.io/v1/namespaces/media/events/a.")
                    || body["regarding"]["name"] == "a"
            })
            .collect();
        assert_eq!(of_a.len(), 4, "{seen:?}");
        let (method, _, first) = of_a[0];
        assert_eq!(method, Method::POST);
        assert_eq!(first["reason"], "QueuesCreated");
        assert_eq!(first["type"], "Normal");
        assert_eq!(first["reportingController"], "shoal");
        assert_eq!(first["regarding"]["uid"], "u1");
        assert!(first["eventTime"].is_string(), "{first}");
        let scaled = &of_a[1].2;
        assert_eq!(
            (&of_a[1].0, &scaled["note"]),
            (&Method::POST, &json!("workers 0 -> 1"))
        );
        // The repeat: a patch of the first Scaled's count, not a new Event.
        let (method, path, patch) = of_a[2];
        assert_eq!(method, Method::PATCH);
        let name = scaled["metadata"]["name"].as_str().unwrap();
        assert!(path.ends_with(&format!("/events/{name}")), "{path}");
        assert_eq!(patch["series"]["count"], 2, "{patch}");
        assert!(patch["series"]["lastObservedTime"].is_string(), "{patch}");
        // Another note is another Event.
        assert_eq!(
            (&of_a[3].0, &of_a[3].2["note"]),
            (&Method::POST, &json!("workers 1 -> 2"))
        );
    }

    #[tokio::test]
    async fn a_repeat_of_an_event_gone_from_the_api_server_is_written_anew() {
        let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let metrics = metrics();
        let client = Client::new(service, "default");
        let events = Events::start(&client, "shoal", metrics.clone());
        // First the Event is written, and its name learned.
        let server = serve(handle, vec![]);
        events.publish(reference("a"), vec![note("Scaled", "n")]);
        events.flush().await;
        drop(events);
        drop(client);
        let seen = server.await.unwrap();
        let name = seen[0].2["metadata"]["name"].as_str().unwrap().to_owned();

        // The same Event again, with the first one gone: a 404, then a new one.
        let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let server = serve(handle, vec![name.clone()]);
        let mut lane = Lane {
            client: Client::new(service, "default"),
            controller: "shoal".into(),
            metrics: metrics.clone(),
            seen: HashMap::new(),
            pruned: Instant::now(),
        };
        let a = reference("a");
        let again = note("Scaled", "n");
        lane.seen.insert(
            key(&a, &again),
            Seen {
                name: name.clone(),
                count: 1,
                last: Instant::now(),
            },
        );
        lane.write(&a, again, Timestamp::now()).await;
        drop(lane);
        let seen = server.await.unwrap();
        let calls: Vec<_> = seen
            .iter()
            .map(|(m, p, _)| (m.clone(), p.clone()))
            .collect();
        assert_eq!(calls.len(), 2, "{calls:?}");
        assert_eq!(
            calls[0],
            (
                Method::PATCH,
                format!("/apis/events.k8s.io/v1/namespaces/media/events/{name}")
            )
        );
        assert_eq!(
            calls[1],
            (
                Method::POST,
                "/apis/events.k8s.io/v1/namespaces/media/events".to_owned()
            )
        );
        assert_eq!(counted(&metrics, "published"), "2");
        assert_eq!(counted(&metrics, "failed"), "0");
    }

    #[tokio::test]
    async fn past_what_the_lanes_hold_events_are_dropped_and_counted_never_waited_for() {
        // An API server that never answers.
        let (service, _handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let metrics = metrics();
        let events = Events::start(&Client::new(service, "default"), "shoal", metrics.clone());
        // (The lanes have not run yet: this test's runtime has one thread.)
        for i in 0..LANE_CAPACITY + 44 {
            events.publish(reference("a"), vec![note("Scaled", &format!("{i}"))]);
        }
        assert_eq!(counted(&metrics, "dropped"), "44");
    }

    #[test]
    fn an_event_is_the_same_only_with_the_same_object_reason_and_note() {
        let a = reference("a");
        let k = key(&a, &note("Scaled", "workers 0 -> 1"));
        assert_eq!(k, key(&a, &note("Scaled", "workers 0 -> 1")));
        assert_ne!(k, key(&a, &note("Scaled", "workers 1 -> 2")));
        assert_ne!(k, key(&reference("b"), &note("Scaled", "workers 0 -> 1")));
        let mut again = reference("a");
        again.uid = Some("u2".into());
        assert_ne!(k, key(&again, &note("Scaled", "workers 0 -> 1")));
    }

    #[test]
    fn event_names_fit_the_api_servers_limit() {
        let name = event_name(&reference(&"j".repeat(253)));
        assert_eq!(name.len(), 253, "{name}");
        let name = event_name(&reference("a-b-"));
        assert!(name.starts_with("a-b."), "{name}");
        assert_eq!(name.len(), "a-b.".len() + 16);
    }
}
