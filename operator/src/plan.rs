//! Everything the reconciler decides from the BatchJob and what it
//! observed, without API calls: defaults, queue names, progress and phase,
//! the failure tolerance, conditions. Unit-tested here.

mod progress;

pub use progress::{fanout_progress, settle, tolerance_exceeded};

use std::time::Duration;

use kube::ResourceExt;

pub use crate::conditions::{condition, lifecycle_conditions, ready_condition, suspension_change};
use crate::crd::{BatchJob, S3Source};
use crate::scaling::Policy;
use crate::sqs::QueueSettings;
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

    pub(super) fn job(scaling: Option<ScalingSpec>, concurrency: Option<u32>) -> BatchJob {
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
