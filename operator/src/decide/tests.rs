//! The decision, without an API server or a queue: phases, scaling and the
//! scale-down timer, what is announced, and when the job is looked at next.

#![allow(
    clippy::unwrap_used,
    reason = "test code: a panic is how a test reports failure"
)]

use k8s_openapi::jiff::SignedDuration;

use super::*;
use crate::crd::{BatchJobSpec, HandlerSpec, ScalingSpec, SourceSpec, SplitCheckpoint};

fn job(source: SourceSpec, scaling: Option<ScalingSpec>) -> BatchJob {
    let mut job = BatchJob::new(
        "thumbs",
        BatchJobSpec {
            handler: HandlerSpec::image("x"),
            template: None,
            source,
            queue: None,
            scaling,
            failure_policy: None,
            output: None,
            ttl_seconds_after_finished: None,
            suspend: None,
            redrive: None,
        },
    );
    job.metadata.namespace = Some("default".into());
    job.metadata.generation = Some(1);
    job
}

fn fan_out() -> SourceSpec {
    SourceSpec {
        s3: Some(
            serde_json::from_value(serde_json::json!({"bucket": "photos", "prefix": "in/"}))
                .unwrap(),
        ),
        ..SourceSpec::default()
    }
}

fn backlog(visible: i64, in_flight: i64) -> Backlog {
    Backlog { visible, in_flight }
}

/// `o` with the usual defaults: nothing leased, no dead letters, no redrive.
fn observed<'a>(
    job: &'a BatchJob,
    previous: &'a BatchJobStatus,
    work: Backlog,
    replicas: Option<i32>,
    now: Timestamp,
) -> Observed<'a> {
    Observed {
        job,
        previous,
        status: previous.clone(),
        backlog: work,
        dead: Backlog::default(),
        replicas,
        ready: replicas.unwrap_or(0),
        bad_list: None,
        moving: false,
        redriving: false,
        drained_since: previous.drained_since.clone(),
        lag: Duration::ZERO,
        url: "memory://work",
        workers: None,
        now,
    }
}

fn split(chunks: i64, done: bool) -> Option<SplitCheckpoint> {
    Some(SplitCheckpoint {
        chunks,
        done,
        ..SplitCheckpoint::default()
    })
}

#[test]
fn a_fan_out_goes_splitting_then_running_then_succeeded() {
    let job = job(fan_out(), None);
    let now = Timestamp::now();
    // A listing page sent 3 chunks and more pages remain.
    let start = BatchJobStatus {
        split: split(3, false),
        ..BatchJobStatus::default()
    };
    let d = decide(observed(&job, &start, backlog(3, 0), None, now));
    assert_eq!(d.status.phase, Phase::Splitting);
    assert!(d.phase_changed);
    assert_eq!(d.scaled, Some((0, 1)), "workers start while it splits");
    assert!(d.pending.busy, "the next page at once");
    assert_eq!(cadence::next_look(&d.pending), cadence::BUSY);

    // The listing is done: 5 chunks, 2 done.
    let mut running = d.status.clone();
    running.split = split(5, true);
    let d = decide(observed(&job, &running, backlog(2, 1), Some(1), now));
    assert_eq!(d.status.phase, Phase::Running);
    assert_eq!(d.status.chunks.total, 5);
    assert_eq!(d.status.chunks.succeeded, 2);
    assert_eq!(d.scaled, None, "one worker is enough for a backlog of 3");
    assert!(!d.pending.busy);

    // Drained: Succeeded, workers to zero, completion recorded.
    let d = decide(observed(&job, &d.status, backlog(0, 0), Some(1), now));
    assert_eq!(d.status.phase, Phase::Succeeded);
    assert!(d.phase_changed);
    assert_eq!(d.status.chunks.succeeded, 5);
    assert_eq!(d.replicas, 0);
    assert_eq!(d.scaled, Some((1, 0)));
    assert!(d.status.completion_time.is_some());
    let ready = &d.status.conditions[0];
    assert_eq!(
        (ready.type_.as_str(), ready.reason.as_str()),
        ("Ready", "Succeeded")
    );
}

#[test]
fn dead_letters_make_a_finished_fan_out_failed() {
    let job = job(fan_out(), None);
    let previous = BatchJobStatus {
        split: split(4, true),
        phase: Phase::Running,
        ..BatchJobStatus::default()
    };
    let mut o = observed(&job, &previous, backlog(0, 0), Some(1), Timestamp::now());
    o.dead = backlog(1, 0);
    let d = decide(o);
    assert_eq!(d.status.phase, Phase::Failed);
    assert_eq!(d.status.chunks.dead_lettered, 1);
    assert_eq!(d.replicas, 0);
}

#[test]
fn scaling_down_waits_for_the_delay_and_says_when_to_look_again() {
    let scaling = ScalingSpec {
        scale_down_delay_seconds: Some(30),
        ..ScalingSpec::default()
    };
    let job = job(fan_out(), Some(scaling));
    let now = Timestamp::now();
    let previous = BatchJobStatus {
        split: split(100, true),
        phase: Phase::Running,
        ..BatchJobStatus::default()
    };
    // A backlog of 10 wants one worker; four run.
    let d = decide(observed(&job, &previous, backlog(10, 0), Some(4), now));
    assert_eq!(d.replicas, 4, "not before the delay");
    assert_eq!(d.scaled, None);
    assert!(d.status.scale_down_since.is_some(), "the timer starts");
    assert_eq!(d.pending.scale_down_in, Some(Duration::from_secs(30)));

    // 31 s later, with the timer recorded: down.
    let later = now.checked_add(SignedDuration::from_secs(31)).unwrap();
    let d = decide(observed(&job, &d.status, backlog(10, 0), Some(4), later));
    assert_eq!(d.replicas, 1);
    assert_eq!(d.scaled, Some((4, 1)));
    assert!(d.status.scale_down_since.is_none(), "the timer is done");
}

#[test]
fn no_deployment_and_nothing_to_do_is_not_a_scaling() {
    let job = job(
        SourceSpec {
            sqs: Some(
                serde_json::from_value(serde_json::json!({"queueUrl": "https://sqs/q"})).unwrap(),
            ),
            ..SourceSpec::default()
        },
        None,
    );
    let previous = BatchJobStatus::default();
    let d = decide(observed(
        &job,
        &previous,
        backlog(0, 0),
        None,
        Timestamp::now(),
    ));
    assert_eq!(d.status.phase, Phase::Running);
    assert_eq!(d.replicas, 0);
    assert_eq!(d.scaled, None, "no Scaled event for 0 -> 0");
    assert_eq!(
        cadence::next_look(&d.pending),
        cadence::IDLE,
        "an idle queue job waits for a change"
    );
}

#[test]
fn a_suspended_job_runs_no_workers_and_says_so_once() {
    let mut job = job(fan_out(), None);
    job.spec.suspend = Some(true);
    let now = Timestamp::now();
    let previous = BatchJobStatus {
        split: split(10, true),
        phase: Phase::Running,
        ..BatchJobStatus::default()
    };
    let d = decide(observed(&job, &previous, backlog(8, 0), Some(3), now));
    assert_eq!(d.replicas, 0);
    assert_eq!(d.scaled, Some((3, 0)));
    assert_eq!(d.suspension.as_ref().map(|s| s.0), Some("Suspended"));
    let again = decide(observed(&job, &d.status, backlog(8, 0), Some(0), now));
    assert_eq!(again.suspension, None, "said once");
    assert_eq!(again.scaled, None);
}

#[test]
fn a_redrive_keeps_one_worker_and_looks_again_soon() {
    let job = job(fan_out(), None);
    let previous = BatchJobStatus {
        split: split(4, true),
        phase: Phase::Failed,
        ..BatchJobStatus::default()
    };
    let mut o = observed(&job, &previous, backlog(0, 0), Some(0), Timestamp::now());
    o.redriving = true;
    o.moving = true;
    let d = decide(o);
    assert_eq!(d.status.phase, Phase::Running, "letters on their way back");
    assert_eq!(d.replicas, 1);
    assert_eq!(cadence::next_look(&d.pending), cadence::BUSY);
}
