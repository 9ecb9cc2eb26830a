//! Pipelines: a BatchJob whose source is another BatchJob (`source.batchJob`).
//! Pure decisions, tested without an API server.
//!
//! Contract:
//! - The downstream job waits (phase Pending, `Ready=False`,
//!   `WaitingForUpstream` or `UpstreamNotFound`) until the upstream job has
//!   Succeeded, then fans out every object under the upstream's output
//!   prefix except its `_shoal/` folder, exactly like an S3 source.
//! - An upstream that Failed fails the downstream (`UpstreamFailed`): a
//!   partial input is not silently processed.
//! - The input location is recorded in the downstream's status
//!   (`status.input`) when fan-out starts, so deleting the upstream
//!   afterwards (e.g. its `ttlSecondsAfterFinished`) changes nothing.
//! - Give each stage its own output prefix: whatever is under the
//!   upstream's prefix is input, including objects an earlier run left.

use crate::crd::{BatchJob, BatchJobSource, InputLocation, Phase, S3Source};

/// What the upstream job means for the downstream one now.
#[derive(Debug, Clone, PartialEq)]
pub enum Upstream {
    /// Its outputs are ready: fan them out.
    Ready(S3Source),
    /// Not there or not done: wait. `(reason, message)` for the condition.
    Wait(&'static str, String),
    /// It cannot give an input: the downstream fails.
    Fail(&'static str, String),
}

/// The fan-out source of a `batchJob` source whose upstream is
/// `upstream` (`None`: not found in the namespace).
pub fn resolve(source: &BatchJobSource, upstream: Option<&BatchJob>) -> Upstream {
    let name = &source.name;
    let Some(upstream) = upstream else {
        return Upstream::Wait(
            "UpstreamNotFound",
            format!("waiting for BatchJob {name} to exist"),
        );
    };
    let phase = upstream.status.as_ref().map_or(Phase::Pending, |s| s.phase);
    match phase {
        Phase::Succeeded => match &upstream.spec.output {
            Some(output) => Upstream::Ready(as_s3(
                source,
                &InputLocation {
                    bucket: output.bucket.clone(),
                    prefix: output.prefix.clone(),
                },
            )),
            None => Upstream::Fail(
                "UpstreamHasNoOutput",
                format!("BatchJob {name} succeeded but has no output to read"),
            ),
        },
        Phase::Failed => Upstream::Fail(
            "UpstreamFailed",
            format!("BatchJob {name} failed; its outputs are not a complete input"),
        ),
        other => Upstream::Wait(
            "WaitingForUpstream",
            format!("waiting for BatchJob {name} to succeed (it is {other:?})"),
        ),
    }
}

/// The S3 source reading `input` with the chunk limits of `source`.
pub fn as_s3(source: &BatchJobSource, input: &InputLocation) -> S3Source {
    S3Source {
        bucket: input.bucket.clone(),
        prefix: input.prefix.clone(),
        max_items_per_chunk: source.max_items_per_chunk,
        max_bytes_per_chunk: source.max_bytes_per_chunk,
        list: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{BatchJobSpec, BatchJobStatus, HandlerSpec, OutputSpec, SourceSpec};

    fn upstream(phase: Phase, output: bool) -> BatchJob {
        let mut job = BatchJob::new(
            "thumbnails",
            BatchJobSpec {
                handler: HandlerSpec::image("x"),
                template: None,
                source: SourceSpec::default(),
                queue: None,
                scaling: None,
                failure_policy: None,
                output: output.then(|| OutputSpec {
                    bucket: "photos".into(),
                    prefix: "thumbs/".into(),
                }),
                ttl_seconds_after_finished: None,
                suspend: None,
                redrive: None,
            },
        );
        job.status = Some(BatchJobStatus {
            phase,
            ..BatchJobStatus::default()
        });
        job
    }

    fn source() -> BatchJobSource {
        BatchJobSource {
            name: "thumbnails".into(),
            max_items_per_chunk: Some(100),
            max_bytes_per_chunk: None,
        }
    }

    #[test]
    fn a_succeeded_upstream_gives_its_output_prefix_as_input() {
        assert_eq!(
            resolve(&source(), Some(&upstream(Phase::Succeeded, true))),
            Upstream::Ready(S3Source {
                bucket: "photos".into(),
                prefix: "thumbs/".into(),
                max_items_per_chunk: Some(100),
                max_bytes_per_chunk: None,
                list: None,
            })
        );
    }

    #[test]
    fn the_downstream_waits_for_a_missing_or_unfinished_upstream() {
        for phase in [Phase::Pending, Phase::Splitting, Phase::Running] {
            assert!(matches!(
                resolve(&source(), Some(&upstream(phase, true))),
                Upstream::Wait("WaitingForUpstream", _)
            ));
        }
        assert!(matches!(
            resolve(&source(), None),
            Upstream::Wait("UpstreamNotFound", _)
        ));
    }

    #[test]
    fn a_failed_upstream_or_one_without_output_fails_the_downstream() {
        assert!(matches!(
            resolve(&source(), Some(&upstream(Phase::Failed, true))),
            Upstream::Fail("UpstreamFailed", _)
        ));
        assert!(matches!(
            resolve(&source(), Some(&upstream(Phase::Succeeded, false))),
            Upstream::Fail("UpstreamHasNoOutput", _)
        ));
    }
}
