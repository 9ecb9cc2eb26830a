//! What an SQS worker makes of the queue's attributes at start-up: its
//! settings (lease, attempt limit, dead-letter queue) or a clear refusal.

use std::collections::HashMap;
use std::time::Duration;

use aws_sdk_sqs::types::QueueAttributeName;

use super::SqsOptions;
use super::dead_letter_queue::DeadLetterQueue;

/// What start-up learns from the queue's attributes.
pub(super) struct QueueSettings {
    pub(super) visibility: Duration,
    pub(super) max_attempts: u32,
    pub(super) dead_letter: DeadLetterQueue,
}

/// The queue's settings from its attributes and `options`: fails, saying
/// why, when it has nowhere to dead-letter to.
pub(super) fn settings(
    options: &SqsOptions,
    fifo: bool,
    attributes: &HashMap<QueueAttributeName, String>,
) -> std::result::Result<QueueSettings, String> {
    let queue_visibility = attributes
        .get(&QueueAttributeName::VisibilityTimeout)
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(30);
    let redrive = attributes
        .get(&QueueAttributeName::RedrivePolicy)
        .map(|policy| parse_redrive(policy))
        .transpose()?;
    let dead_letter = match (&options.dead_letter_queue, &redrive) {
        (Some(url), _) => DeadLetterQueue::from_url(url),
        (None, Some((target, _))) => DeadLetterQueue::from_arn(target),
        (None, None) => {
            return Err(
                "it has no redrive policy, so failed items would have nowhere to go: \
                 set one (deadLetterTargetArn, maxReceiveCount) or pass --dead-letter-queue"
                    .into(),
            );
        }
    };
    if fifo != dead_letter.fifo {
        return Err(format!(
            "it and its dead-letter queue {} must both be FIFO or both standard",
            dead_letter.name
        ));
    }
    Ok(QueueSettings {
        visibility: options
            .visibility
            .unwrap_or(Duration::from_secs(queue_visibility)),
        max_attempts: redrive
            .as_ref()
            .map_or(options.max_attempts, |(_, count)| *count)
            .max(1),
        dead_letter,
    })
}

/// `(deadLetterTargetArn, maxReceiveCount)` of a redrive policy.
fn parse_redrive(policy: &str) -> std::result::Result<(String, u32), String> {
    let value: serde_json::Value = serde_json::from_str(policy)
        .map_err(|e| format!("its redrive policy is not JSON ({e}): {policy}"))?;
    let target = value
        .get("deadLetterTargetArn")
        .and_then(|v| v.as_str())
        .ok_or_else(|| format!("its redrive policy has no deadLetterTargetArn: {policy}"))?;
    let count = match value.get("maxReceiveCount") {
        Some(serde_json::Value::Number(n)) => n.as_u64(),
        Some(serde_json::Value::String(s)) => s.parse().ok(),
        _ => None,
    }
    .and_then(|n| u32::try_from(n).ok())
    .ok_or_else(|| format!("its redrive policy has no valid maxReceiveCount: {policy}"))?;
    Ok((target.to_owned(), count))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redrive_policy_parses_numbers_and_strings() {
        let arn = "arn:aws:sqs:us-east-1:000000000000:jobs-dlq";
        assert_eq!(
            parse_redrive(&format!(
                r#"{{"deadLetterTargetArn":"{arn}","maxReceiveCount":"4"}}"#
            )),
            Ok((arn.to_owned(), 4))
        );
        assert_eq!(
            parse_redrive(&format!(
                r#"{{"deadLetterTargetArn":"{arn}","maxReceiveCount":7}}"#
            )),
            Ok((arn.to_owned(), 7))
        );
        assert!(parse_redrive(r#"{"maxReceiveCount":7}"#).is_err());
        assert!(parse_redrive("nope").is_err());
    }

    fn options(dead_letter_queue: Option<&str>) -> SqsOptions {
        SqsOptions {
            queue_url: "http://127.0.0.1:9324/000000000000/jobs".into(),
            dead_letter_queue: dead_letter_queue.map(str::to_owned),
            visibility: None,
            wait_time: Duration::from_secs(20),
            max_attempts: 3,
        }
    }

    #[test]
    fn a_queue_without_a_place_for_dead_letters_is_refused_with_the_reason() {
        let none = HashMap::new();
        let err = settings(&options(None), false, &none)
            .err()
            .unwrap_or_default();
        assert!(err.contains("no redrive policy"), "{err}");
        let redrive = HashMap::from([(
            QueueAttributeName::RedrivePolicy,
            r#"{"deadLetterTargetArn":"arn:aws:sqs:us-east-1:000000000000:jobs-dlq.fifo","maxReceiveCount":"4"}"#
                .to_owned(),
        )]);
        let err = settings(&options(None), false, &redrive)
            .err()
            .unwrap_or_default();
        assert!(err.contains("both be FIFO or both standard"), "{err}");
    }

    #[test]
    fn the_redrive_policy_sets_the_attempts_and_the_queue_the_lease() {
        let attributes = HashMap::from([
            (QueueAttributeName::VisibilityTimeout, "45".to_owned()),
            (
                QueueAttributeName::RedrivePolicy,
                r#"{"deadLetterTargetArn":"arn:aws:sqs:us-east-1:000000000000:jobs-dlq","maxReceiveCount":"4"}"#
                    .to_owned(),
            ),
        ]);
        let found = settings(&options(None), false, &attributes);
        let found = found
            .as_ref()
            .map(|f| (f.visibility, f.max_attempts, f.dead_letter.name.as_str()));
        assert_eq!(found, Ok((Duration::from_secs(45), 4, "jobs-dlq")));
        // Without a redrive policy, a named dead-letter queue and the
        // worker's own limit.
        let found = settings(
            &options(Some("http://127.0.0.1:9324/000000000000/other-dlq")),
            false,
            &HashMap::new(),
        );
        let found = found
            .as_ref()
            .map(|f| (f.visibility, f.max_attempts, f.dead_letter.name.as_str()));
        assert_eq!(found, Ok((Duration::from_secs(30), 3, "other-dlq")));
    }
}
