//! Names of the AMQP topology shoal declares for a queue `Q`: the quorum
//! queue, its dead-letter exchange `Q.dlx` and queue `Q.dlq`, and retry
//! queues `Q.retry.<N>s` with one TTL each; and the `--queue` URL that
//! names the broker and `Q`. The worker, the operator and the kubectl
//! plugin agree on these; the broker calls are in `shoal-clients`.

use std::time::Duration;

/// Retry queue TTLs: powers of two seconds up to this.
pub const MAX_RETRY_S: u64 = 1024;

/// Where to connect and what to consume, from a `--queue` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The connection URI (scheme, credentials, host, port, vhost).
    pub uri: String,
    /// The queue's name.
    pub queue: String,
}

/// Splits `amqp[s]://…/vhost/queue` into connection URI and queue name.
pub fn parse_target(url: &str) -> std::result::Result<Target, String> {
    let rest = url
        .strip_prefix("amqp://")
        .or_else(|| url.strip_prefix("amqps://"))
        .ok_or_else(|| "not an amqp:// or amqps:// URL".to_owned())?;
    let scheme_len = url.len() - rest.len();
    let (authority, path) = rest
        .split_once('/')
        .ok_or_else(|| "no queue name: expected amqp://host/vhost/queue".to_owned())?;
    let (vhost, queue) = match path.rsplit_once('/') {
        Some((vhost, queue)) => (Some(vhost), queue),
        None => (None, path),
    };
    let queue = percent_encoding::percent_decode_str(queue)
        .decode_utf8()
        .map_err(|e| format!("queue name is not UTF-8: {e}"))?
        .into_owned();
    if queue.is_empty() {
        return Err("no queue name: expected amqp://host/vhost/queue".into());
    }
    let mut uri = format!("{}{authority}", &url[..scheme_len]);
    if let Some(vhost) = vhost {
        uri.push('/');
        uri.push_str(vhost);
    }
    Ok(Target { uri, queue })
}

/// Name of the retry queue of `queue` whose messages wait `bucket` seconds.
pub fn retry_queue(queue: &str, bucket: u64) -> String {
    format!("{queue}.retry.{bucket}s")
}

/// Every retry queue `queue` may have (one per bucket, 1 s to
/// [`MAX_RETRY_S`]).
pub fn retry_queues(queue: &str) -> Vec<String> {
    std::iter::successors(Some(1_u64), |b| (*b < MAX_RETRY_S).then_some(b * 2))
        .map(|bucket| retry_queue(queue, bucket))
        .collect()
}

/// Name of the dead-letter exchange of `queue`.
pub fn dead_letter_exchange(queue: &str) -> String {
    format!("{queue}.dlx")
}

/// Name of the dead-letter queue of `queue`.
pub fn dead_letter_queue(queue: &str) -> String {
    format!("{queue}.dlq")
}

/// The retry queue for `delay`: its TTL in seconds (a power of two).
pub fn retry_bucket(delay: Duration) -> u64 {
    let secs = delay.as_secs() + u64::from(delay.subsec_nanos() > 0);
    secs.max(1).next_power_of_two().min(MAX_RETRY_S)
}

/// Queue argument naming the uid of the BatchJob the operator declared a
/// queue for. RabbitMQ keeps arguments it does not know and leaves them out
/// of its equivalence check, so a worker declaring the queue without it is
/// still equivalent.
pub const OWNER_ARGUMENT: &str = "x-shoal-batchjob-uid";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_urls_split_into_connection_and_queue() {
        assert_eq!(
            parse_target("amqp://shoal:secret@127.0.0.1:5672/%2f/thumbnails"),
            Ok(Target {
                uri: "amqp://shoal:secret@127.0.0.1:5672/%2f".into(),
                queue: "thumbnails".into(),
            })
        );
        assert_eq!(
            parse_target("amqps://broker/jobs"),
            Ok(Target {
                uri: "amqps://broker".into(),
                queue: "jobs".into(),
            })
        );
        assert_eq!(
            parse_target("amqp://u@h/media/photo%20jobs").map(|t| t.queue),
            Ok("photo jobs".to_owned())
        );
        assert!(parse_target("https://sqs/jobs").is_err());
        assert!(parse_target("amqp://host").is_err());
        assert!(parse_target("amqp://host/vhost/").is_err());
    }

    #[test]
    fn retry_delays_round_up_to_a_power_of_two_seconds() {
        assert_eq!(retry_bucket(Duration::from_millis(200)), 1);
        assert_eq!(retry_bucket(Duration::from_secs(1)), 1);
        assert_eq!(retry_bucket(Duration::from_millis(1500)), 2);
        assert_eq!(retry_bucket(Duration::from_secs(5)), 8);
        assert_eq!(retry_bucket(Duration::from_secs(5000)), MAX_RETRY_S);
        let names = retry_queues("jobs");
        assert_eq!(names.len(), 11);
        assert_eq!(names.first().map(String::as_str), Some("jobs.retry.1s"));
        assert_eq!(names.last().map(String::as_str), Some("jobs.retry.1024s"));
    }
}
