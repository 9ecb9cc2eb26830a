//! Everything the reconciler decides from the BatchJob and what it
//! observed, without API calls: defaults, queue names, progress and phase,
//! the failure tolerance, conditions. Unit-tested here.

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;

pub use crate::conditions::{condition, lifecycle_conditions, ready_condition, suspension_change};
use crate::crd::{BatchJob, ChunkCounts, Phase, S3Source, SplitCheckpoint};
use crate::scaling::Policy;
use crate::sqs::{Backlog, QueueSettings};
use crate::workload;

/// Scaling policy of `job`, with the CRD's defaults.
pub fn policy(job: &BatchJob) -> Policy {
    let scaling = job.spec.scaling.clone().unwrap_or_default();
    let concurrency = job
        .spec
        .handler
        .concurrency
        .unwrap_or(workload::DEFAULT_CONCURRENCY);
    let min = scaling.min_workers.unwrap_or(0).max(0);
    Policy {
        min,
        // The CRD checks min <= max only when both are set.
        max: scaling.max_workers.unwrap_or(10).max(min),
        target_per_worker: scaling
            .target_backlog_per_worker
            .map_or(10 * i64::from(concurrency), i64::from),
        scale_down_delay: Duration::from_secs(
            u64::try_from(scaling.scale_down_delay_seconds.unwrap_or(30)).unwrap_or(0),
        ),
        max_step: scaling.max_step.unwrap_or(10),
    }
}

/// `s3://bucket/prefix` of the job's outputs.
pub fn output_location(job: &BatchJob) -> Option<String> {
    job.spec
        .output
        .as_ref()
        .map(|o| format!("s3://{}/{}", o.bucket, o.prefix))
}

/// Most bytes of an Event's note the API server accepts.
pub const EVENT_NOTE_MAX: usize = 1024;

/// `note` cut (on a character boundary, marked with `…`) to
/// [`EVENT_NOTE_MAX`] bytes.
pub fn event_note(note: String) -> String {
    if note.len() <= EVENT_NOTE_MAX {
        return note;
    }
    cut(&note, EVENT_NOTE_MAX)
}

/// `text` in at most `max` bytes (at least 4): cut on a character boundary
/// and marked with `…` when it is longer.
pub fn cut(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max.saturating_sub('…'.len_utf8());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

/// Seconds one delivery may be held: SQS extends a lease to 12 h at most
/// (43,200 s, less a margin), RabbitMQ closes a channel after its default
/// `consumer_timeout` (1,800 s, less a margin).
pub const LEASE_BUDGET_SQS: u64 = 43_000;
/// See [`LEASE_BUDGET_SQS`].
pub const LEASE_BUDGET_AMQP: u64 = 1_750;

/// `source` with at most as many items per chunk as one delivery can run
/// within its queue's longest lease: `concurrency` items at a time, each
/// up to the timeout. (1,000 items of 60 s one at a time would take 16 h:
/// past SQS's 12 h, the chunk would be delivered again while it runs.)
pub fn within_lease(job: &BatchJob, mut source: S3Source) -> S3Source {
    let handler = &job.spec.handler;
    let timeout = u64::from(
        handler
            .timeout_seconds
            .unwrap_or(crate::workload::DEFAULT_TIMEOUT_SECONDS)
            .max(1),
    );
    let amqp = job.spec.queue.as_ref().is_some_and(|q| q.amqp.is_some());
    let budget = if amqp {
        LEASE_BUDGET_AMQP
    } else {
        LEASE_BUDGET_SQS
    };
    let rounds = (budget / timeout).max(1);
    let concurrency = u64::from(handler.concurrency.unwrap_or(1).max(1));
    let cap = u32::try_from(rounds.saturating_mul(concurrency)).unwrap_or(u32::MAX);
    let items = source
        .max_items_per_chunk
        .unwrap_or(crate::fanout::DEFAULT_MAX_ITEMS);
    if items > cap {
        source.max_items_per_chunk = Some(cap);
    }
    source
}

/// The queues the operator creates for `job`. Named `queue.name`, or
/// `shoal-<namespace>-<name>-<hash>`: the readable part in SQS's alphabet
/// and cut to fit, the hash (12 hex digits of SHA-256 over namespace, name
/// and uid) making the name unique to this job, so no two jobs (`a.b` and
/// `a-b`, `team-a/x` and `team/a-x`, two long names, a job deleted and
/// made again) ever share a queue. Always a FIFO queue (`.fifo`, at most
/// 80 characters with `-dlq.fifo`): a FIFO queue drops a chunk sent twice
/// within five minutes (deduplication id = chunk id), which is what makes
/// a fan-out interrupted by an operator crash enqueue every chunk once. A
/// `queue.name` ending in `.fifo` is FIFO too; any other is a standard
/// queue. The dead-letter queue is `queue.deadLetterQueue` or the work
/// queue's name plus `-dlq`.
pub fn queue_settings(job: &BatchJob, namespace: &str) -> QueueSettings {
    let spec = job.spec.queue.clone().unwrap_or_default();
    let name_given = spec.name.is_some();
    let dead_letter_name_given = spec.dead_letter_queue.is_some();
    let name = spec
        .name
        .unwrap_or_else(|| format!("{}.fifo", default_queue_base(job, namespace)));
    let fifo = name.ends_with(".fifo");
    let timeout = job
        .spec
        .handler
        .timeout_seconds
        .unwrap_or(workload::DEFAULT_TIMEOUT_SECONDS);
    QueueSettings {
        dead_letter_name: spec.dead_letter_queue.unwrap_or_else(|| {
            match name.strip_suffix(".fifo") {
                Some(base) => format!("{base}-dlq.fifo"),
                None => format!("{name}-dlq"),
            }
        }),
        name,
        fifo,
        max_receive_count: spec.max_receive_count.unwrap_or(5),
        visibility_timeout: spec
            .visibility_timeout_seconds
            .unwrap_or_else(|| (timeout.saturating_mul(6)).clamp(30, 43_200)),
        job: format!("{namespace}/{}", job.name_any()),
        owner: job.metadata.uid.clone().unwrap_or_default(),
        name_given,
        dead_letter_name_given,
    }
}

/// `shoal-<namespace>-<name>-<hash>` in SQS's alphabet (letters, digits,
/// `-`, `_`), at most 71 characters; see [`queue_settings`].
fn default_queue_base(job: &BatchJob, namespace: &str) -> String {
    use sha2::{Digest, Sha256};
    let name = job.name_any();
    let uid = job.metadata.uid.as_deref().unwrap_or_default();
    // Separators no Kubernetes name holds: the hash input is unambiguous.
    let digest = Sha256::digest(format!("{namespace}\n{name}\n{uid}").as_bytes());
    let hash: String = digest.iter().take(6).map(|b| format!("{b:02x}")).collect();
    let readable: String = format!("{namespace}-{name}")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .take(71 - "shoal-".len() - 1 - hash.len())
        .collect();
    format!("shoal-{readable}-{hash}")
}

/// The RabbitMQ queue of `job`: `source.amqp.queue`, else `queue.name`,
/// else `shoal.<namespace>.<name>`: unique per job, since Kubernetes names
/// hold no `.` in namespaces, and no family member of another job's (the
/// CRD refuses job names ending in `.dlq`, `.dlx` or `.retry.<n>s` here)
/// (no `.fifo`: RabbitMQ has no FIFO queue type,
/// and does not deduplicate). Past 200 characters the name is cut and a
/// hash of the whole is appended, within RabbitMQ's 255 bytes with the
/// `.retry.1024s` suffix.
pub fn amqp_queue(job: &BatchJob, namespace: &str) -> String {
    if let Some(source) = &job.spec.source.amqp {
        return source.queue.clone();
    }
    if let Some(name) = job.spec.queue.as_ref().and_then(|q| q.name.clone()) {
        return name;
    }
    let full = format!("shoal.{namespace}.{}", job.name_any());
    if full.len() <= 200 {
        return full;
    }
    use sha2::{Digest, Sha256};
    let hash: String = Sha256::digest(full.as_bytes())
        .iter()
        .take(6)
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("{}.{hash}", &full[..180])
}

/// Deliveries of a message before it is dead-lettered on RabbitMQ:
/// `queue.maxReceiveCount` (default 5), at most 100 (the worker's limit).
pub fn max_attempts(job: &BatchJob) -> u32 {
    job.spec
        .queue
        .as_ref()
        .and_then(|q| q.max_receive_count)
        .unwrap_or(5)
        .clamp(1, 100)
}

/// Completion when the counts may be up to `lag` old (RabbitMQ's
/// management statistics; zero for SQS): queues that look drained make a
/// job Succeeded only once they have looked drained for twice `lag`, so a
/// chunk a worker took just before the last refresh is seen first.
/// Returns the phase and since when the queues have looked drained.
pub fn settle(
    phase: Phase,
    drained_since: Option<&Time>,
    now: Timestamp,
    lag: Duration,
) -> (Phase, Option<Time>) {
    if phase != Phase::Succeeded || lag.is_zero() {
        return (phase, None);
    }
    let since = drained_since.map_or(now, |t| t.0);
    let drained_for = Duration::try_from(now.duration_since(since)).unwrap_or(Duration::ZERO);
    if drained_for >= lag.saturating_mul(2) {
        (Phase::Succeeded, Some(Time(since)))
    } else {
        (Phase::Running, Some(Time(since)))
    }
}

/// Whether `dead_lettered` of `total` chunks is more than the failure
/// policy tolerates (nothing, when it is unset).
pub fn tolerance_exceeded(job: &BatchJob, dead_lettered: i64, total: i64) -> bool {
    let policy = job.spec.failure_policy.clone().unwrap_or_default();
    if policy.max_failed_chunks.is_none() && policy.max_failed_percent.is_none() {
        return dead_lettered > 0;
    }
    let over_count = policy
        .max_failed_chunks
        .is_some_and(|max| dead_lettered > max);
    let over_percent = policy.max_failed_percent.is_some_and(|pct| {
        dead_lettered.saturating_mul(100) > i64::from(pct).saturating_mul(total)
    });
    over_count || over_percent
}

/// Chunk counts and phase of a fan-out job from its queues: `backlog` of
/// the work queue, `dead` of the dead-letter queue.
///
/// Once every chunk is sent, the counts show each chunk once: a chunk on
/// its way to the dead-letter queue (a worker sends it there, then
/// deletes it from the work queue; the two queues are read one after the
/// other) shows in both for a moment, and is counted as dead-lettered, not
/// also as in flight or waiting. The phase is decided from the queues as
/// read: a job does not succeed while any message is left.
pub fn fanout_progress(
    job: &BatchJob,
    split: &SplitCheckpoint,
    backlog: Backlog,
    dead: Backlog,
) -> (ChunkCounts, Phase) {
    let total = split.chunks;
    let dead_lettered = dead.total();
    let pending = backlog.total();
    let mut shown = backlog;
    if split.done {
        let twice = pending
            .saturating_add(dead_lettered)
            .saturating_sub(total)
            .max(0);
        let from_in_flight = twice.min(shown.in_flight.max(0));
        shown.in_flight -= from_in_flight;
        shown.visible -= (twice - from_in_flight).min(shown.visible.max(0));
    }
    let counts = ChunkCounts {
        total,
        succeeded: total
            .saturating_sub(pending)
            .saturating_sub(dead_lettered)
            .max(0),
        dead_lettered,
        in_flight: shown.in_flight,
        visible: shown.visible,
    };
    let phase = if tolerance_exceeded(job, dead_lettered, total) {
        Phase::Failed
    } else if !split.done {
        Phase::Splitting
    } else if pending == 0 {
        Phase::Succeeded
    } else {
        Phase::Running
    };
    (counts, phase)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{BatchJobSpec, HandlerSpec, ScalingSpec, SourceSpec, SqsSource};
    use crate::scaling;

    #[test]
    fn event_notes_are_cut_to_what_the_api_server_takes() {
        assert_eq!(event_note("short".into()), "short");
        let long = "é".repeat(700);
        let cut = event_note(long.clone());
        assert!(cut.len() <= EVENT_NOTE_MAX, "{}", cut.len());
        assert!(cut.ends_with('…'));
        assert!(long.starts_with(cut.trim_end_matches('…')));
        assert_eq!(event_note("x".repeat(1024)).len(), 1024);
    }

    fn job(scaling: Option<ScalingSpec>, concurrency: Option<u32>) -> BatchJob {
        BatchJob::new(
            "j",
            BatchJobSpec {
                handler: HandlerSpec {
                    image: "i".into(),
                    command: vec![],
                    args: vec![],
                    env: vec![],
                    memory_mib: None,
                    timeout_seconds: None,
                    concurrency,
                    service_account_name: None,
                    function: None,
                    ..HandlerSpec::image("i")
                },
                template: None,
                source: SourceSpec {
                    sqs: Some(SqsSource {
                        queue_url: "http://q".into(),
                    }),
                    ..SourceSpec::default()
                },
                queue: None,
                scaling,
                failure_policy: None,
                output: None,
                ttl_seconds_after_finished: None,
                suspend: None,
                redrive: None,
            },
        )
    }

    #[test]
    fn defaults_follow_the_crd_documentation() {
        let p = policy(&job(None, Some(4)));
        assert_eq!(
            p,
            Policy {
                min: 0,
                max: 10,
                target_per_worker: 40,
                scale_down_delay: Duration::from_secs(30),
                max_step: 10,
            }
        );
    }

    fn done(chunks: i64) -> SplitCheckpoint {
        SplitCheckpoint {
            after_key: Some("k".into()),
            chunks,
            items: chunks * 4,
            done: true,
            ..SplitCheckpoint::default()
        }
    }

    fn backlog(visible: i64, in_flight: i64) -> Backlog {
        Backlog { visible, in_flight }
    }

    #[test]
    fn succeeded_only_when_split_and_every_chunk_is_accounted_for() {
        let j = job(None, None);
        let (counts, phase) = fanout_progress(&j, &done(8), backlog(0, 0), backlog(0, 0));
        assert_eq!(phase, Phase::Succeeded);
        assert_eq!((counts.total, counts.succeeded), (8, 8));
        let (counts, phase) = fanout_progress(&j, &done(8), backlog(2, 1), backlog(0, 0));
        assert_eq!((phase, counts.succeeded), (Phase::Running, 5));
        let splitting = SplitCheckpoint {
            done: false,
            ..done(3)
        };
        let (_, phase) = fanout_progress(&j, &splitting, backlog(0, 0), backlog(0, 0));
        assert_eq!(
            phase,
            Phase::Splitting,
            "an empty queue mid-split is not the end"
        );
    }

    #[test]
    fn a_chunk_on_its_way_to_the_dead_letter_queue_is_counted_once() {
        let j = job(None, None);
        // 4 chunks: all 4 still leased in the work queue, 1 of them
        // already in the dead-letter queue.
        let (counts, phase) = fanout_progress(&j, &done(4), backlog(0, 4), backlog(1, 0));
        assert_eq!(phase, Phase::Failed);
        assert_eq!(
            (
                counts.succeeded,
                counts.in_flight,
                counts.visible,
                counts.dead_lettered
            ),
            (0, 3, 0, 1)
        );
        // Past the leased ones, from those waiting.
        let (counts, _) = fanout_progress(&j, &done(4), backlog(3, 1), backlog(2, 0));
        assert_eq!(
            (counts.in_flight, counts.visible, counts.dead_lettered),
            (0, 2, 2)
        );
        // Mid-split the total is what was recorded so far: shown as read.
        let splitting = SplitCheckpoint {
            done: false,
            ..done(4)
        };
        let (counts, _) = fanout_progress(&j, &splitting, backlog(2, 4), backlog(1, 0));
        assert_eq!((counts.in_flight, counts.visible), (4, 2));
    }

    #[test]
    fn dead_letters_beyond_the_tolerance_fail_the_job() {
        let strict = job(None, None);
        let (counts, phase) = fanout_progress(&strict, &done(10), backlog(3, 0), backlog(1, 0));
        assert_eq!(
            (phase, counts.dead_lettered, counts.succeeded),
            (Phase::Failed, 1, 6)
        );
        let mut tolerant = job(None, None);
        tolerant.spec.failure_policy = Some(crate::crd::FailurePolicy {
            max_failed_chunks: None,
            max_failed_percent: Some(10),
        });
        assert!(!tolerance_exceeded(&tolerant, 1, 10));
        assert!(tolerance_exceeded(&tolerant, 2, 10));
        let (_, phase) = fanout_progress(&tolerant, &done(10), backlog(0, 0), backlog(1, 0));
        assert_eq!(phase, Phase::Succeeded, "within tolerance");
        tolerant.spec.failure_policy = Some(crate::crd::FailurePolicy {
            max_failed_chunks: Some(0),
            max_failed_percent: Some(50),
        });
        assert!(
            tolerance_exceeded(&tolerant, 1, 10),
            "either limit fails the job"
        );
    }

    #[test]
    fn created_queues_are_named_after_the_job_within_sqs_limits() {
        let mut j = job(None, Some(1));
        j.metadata.name = Some("thumbs.v2".into());
        j.metadata.uid = Some("6a1f0c2e-0000-4000-8000-000000000001".into());
        let q = queue_settings(&j, "media");
        let hash = q.name.rsplit('-').next().unwrap().trim_end_matches(".fifo");
        assert_eq!(hash.len(), 12);
        assert_eq!(q.name, format!("shoal-media-thumbs-v2-{hash}.fifo"));
        assert_eq!(
            q.dead_letter_name,
            format!("shoal-media-thumbs-v2-{hash}-dlq.fifo")
        );
        assert!(q.fifo && !q.name_given && !q.dead_letter_name_given);
        assert_eq!(q.owner, "6a1f0c2e-0000-4000-8000-000000000001");
        assert_eq!(q.job, "media/thumbs.v2");
        assert_eq!((q.max_receive_count, q.visibility_timeout), (5, 360));
        j.metadata.name = Some("x".repeat(200));
        let q = queue_settings(&j, "media");
        assert_eq!(q.name.len(), 76);
        assert_eq!(q.dead_letter_name.len(), 80);
        // A named standard queue stays standard.
        j.spec.queue = Some(crate::crd::QueueSpec {
            name: Some("photos".into()),
            ..Default::default()
        });
        let q = queue_settings(&j, "media");
        assert_eq!(
            (q.name.as_str(), q.dead_letter_name.as_str(), q.fifo),
            ("photos", "photos-dlq", false)
        );
    }

    #[test]
    fn no_two_jobs_share_a_default_queue() {
        let named = |namespace: &str, name: &str, uid: &str| {
            let mut j = job(None, Some(1));
            j.metadata.name = Some(name.into());
            j.metadata.uid = Some(uid.into());
            queue_settings(&j, namespace).name
        };
        let long = |c: &str| c.repeat(120);
        let pairs = [
            (named("ns", "a.b", "u1"), named("ns", "a-b", "u2")),
            (named("team-a", "x", "u1"), named("team", "a-x", "u2")),
            (
                named("ns", &(long("y") + "1"), "u1"),
                named("ns", &(long("y") + "2"), "u2"),
            ),
            // Deleted and made again: a fresh queue, not the old one.
            (named("ns", "same", "u1"), named("ns", "same", "u2")),
        ];
        for (a, b) in pairs {
            assert_ne!(a, b);
            assert!(a.len() <= 76 && b.len() <= 76, "{a} {b}");
        }
    }

    #[test]
    fn rabbitmq_queues_take_the_source_the_name_or_the_job_without_fifo() {
        let mut j = job(None, Some(1));
        j.metadata.name = Some("thumbs.v2".into());
        assert_eq!(amqp_queue(&j, "media"), "shoal.media.thumbs.v2");
        // Unique where the SQS-alphabet names would collide.
        j.metadata.name = Some("b-c".into());
        let a = amqp_queue(&j, "a");
        j.metadata.name = Some("c".into());
        assert_ne!(a, amqp_queue(&j, "a-b"));
        j.metadata.name = Some("x".repeat(253));
        let long = amqp_queue(&j, "media");
        assert_eq!(long.len(), 193);
        assert!(long.starts_with("shoal.media.xxx"));
        j.spec.queue = Some(crate::crd::QueueSpec {
            name: Some("photos".into()),
            max_receive_count: Some(700),
            ..Default::default()
        });
        assert_eq!(amqp_queue(&j, "media"), "photos");
        assert_eq!(max_attempts(&j), 100, "the worker's limit");
        j.spec.source = SourceSpec {
            amqp: Some(crate::crd::AmqpSource {
                connection: crate::crd::AmqpConnection {
                    secret_name: "rabbitmq".into(),
                    key: None,
                    management_url: None,
                },
                queue: "orders".into(),
            }),
            ..SourceSpec::default()
        };
        assert_eq!(amqp_queue(&j, "media"), "orders");
    }

    #[test]
    fn lagging_counts_make_a_drained_job_wait_twice_the_lag() {
        let t0: Timestamp = "2026-11-27T10:00:00Z".parse().unwrap();
        let lag = Duration::from_secs(5);
        let at = |secs: i64| t0 + k8s_openapi::jiff::SignedDuration::from_secs(secs);
        // SQS: no lag, done at once.
        assert_eq!(
            settle(Phase::Succeeded, None, t0, Duration::ZERO),
            (Phase::Succeeded, None)
        );
        // First drained look: still Running, the time is kept.
        let (phase, since) = settle(Phase::Succeeded, None, t0, lag);
        assert_eq!(
            (phase, since.as_ref().map(|t| t.0)),
            (Phase::Running, Some(t0))
        );
        let (phase, _) = settle(Phase::Succeeded, since.as_ref(), at(9), lag);
        assert_eq!(phase, Phase::Running);
        let (phase, _) = settle(Phase::Succeeded, since.as_ref(), at(10), lag);
        assert_eq!(phase, Phase::Succeeded);
        // Work seen again: the clock starts over.
        assert_eq!(
            settle(Phase::Running, since.as_ref(), at(11), lag),
            (Phase::Running, None)
        );
        assert_eq!(settle(Phase::Failed, None, t0, lag), (Phase::Failed, None));
    }

    #[test]
    fn a_min_above_the_default_max_raises_the_max() {
        let scaling = ScalingSpec {
            min_workers: Some(50),
            ..ScalingSpec::default()
        };
        let p = policy(&job(Some(scaling), None));
        assert_eq!((p.min, p.max), (50, 50));
        // And deciding with it never panics on inverted bounds.
        assert_eq!(scaling::decide(&p, 0, 0, None).replicas, 50);
    }

    #[test]
    fn chunks_fit_in_one_lease() {
        let source = |items| S3Source {
            bucket: "b".into(),
            prefix: String::new(),
            max_items_per_chunk: items,
            max_bytes_per_chunk: None,
            list: None,
        };
        let mut j = job(None, None);
        // The default (60 s, one at a time) fits 716 items in 43,000 s.
        assert_eq!(
            within_lease(&j, source(Some(1000))).max_items_per_chunk,
            Some(716)
        );
        assert_eq!(
            within_lease(&j, source(None)).max_items_per_chunk,
            None,
            "10 fit"
        );
        j.spec.handler.timeout_seconds = Some(4 * 3600);
        assert_eq!(within_lease(&j, source(None)).max_items_per_chunk, Some(2));
        j.spec.handler.concurrency = Some(4);
        assert_eq!(within_lease(&j, source(None)).max_items_per_chunk, Some(8));
        // One item longer than the budget still makes a chunk of one.
        j.spec.handler.timeout_seconds = Some(43_200);
        j.spec.handler.concurrency = None;
        assert_eq!(within_lease(&j, source(None)).max_items_per_chunk, Some(1));
        // On RabbitMQ the budget is the consumer timeout.
        j.spec.handler.timeout_seconds = Some(600);
        j.spec.queue = Some(crate::crd::QueueSpec {
            amqp: Some(crate::crd::AmqpConnection {
                secret_name: "s".into(),
                key: None,
                management_url: None,
            }),
            ..crate::crd::QueueSpec::default()
        });
        assert_eq!(within_lease(&j, source(None)).max_items_per_chunk, Some(2));
    }
}
