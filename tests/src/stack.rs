//! The services a queue worker talks to, started together: ElasticMQ for
//! SQS and moto for S3, both on loopback; plus helpers to feed them.

use std::collections::BTreeSet;

use aws_sdk_s3::primitives::ByteStream;
use shoal_protocol::message::{Chunk, ChunkItem, ObjectRef};

use crate::elasticmq::ElasticMq;
use crate::moto::Moto;

/// ElasticMQ (SQS) and moto (S3), with clients for the test.
pub struct Stack {
    /// The SQS server.
    pub sqs_server: ElasticMq,
    /// The S3 server.
    pub s3_server: Moto,
    /// SQS client.
    pub sqs: aws_sdk_sqs::Client,
    /// S3 client.
    pub s3: aws_sdk_s3::Client,
}

impl Stack {
    /// Starts both servers on loopback.
    pub fn start() -> Self {
        Self::start_at("127.0.0.1")
    }

    /// Starts both servers bound to `address`.
    pub fn start_at(address: &str) -> Self {
        let sqs_server = ElasticMq::start_at(address);
        let s3_server = Moto::start_at(address);
        let sqs = crate::sqs::client(&sqs_server.endpoint());
        let s3 = s3_server.s3();
        Self {
            sqs_server,
            s3_server,
            sqs,
            s3,
        }
    }

    /// Environment for a worker process: SQS calls go to ElasticMQ, S3
    /// calls to moto, through the AWS default chain.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        let mut env: Vec<(&'static str, String)> = self
            .s3_server
            .env()
            .into_iter()
            .filter(|(k, _)| *k != "AWS_ENDPOINT_URL")
            .collect();
        env.push(("AWS_ENDPOINT_URL_S3", self.s3_server.endpoint().to_owned()));
        env.push(("AWS_ENDPOINT_URL_SQS", self.sqs_server.endpoint()));
        env
    }

    /// [`Stack::env`] as the items of a BatchJob's `handler.env` list
    /// (YAML, indented for `spec.handler`).
    pub fn env_yaml(&self) -> String {
        self.env()
            .iter()
            .map(|(k, v)| format!("      - name: {k}\n        value: \"{v}\"\n"))
            .collect()
    }
}

/// A small JPEG (a 1200x800 sample photo), the same bytes every call.
pub fn tiny_jpeg() -> Vec<u8> {
    sample("photo-0000.jpg")
}

/// The shipped sample no decoder reads (a truncated JPEG): a poison item.
pub fn corrupt_jpeg() -> Vec<u8> {
    sample("corrupt.jpg")
}

fn sample(name: &str) -> Vec<u8> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples/thumbnail/samples")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// Creates `bucket` and uploads `body` under each of `keys` (16 at once).
pub async fn upload(s3: &aws_sdk_s3::Client, bucket: &str, keys: &[String], body: &[u8]) {
    s3.create_bucket()
        .bucket(bucket)
        .send()
        .await
        .unwrap_or_else(|e| panic!("create bucket {bucket}: {e:?}"));
    let mut set = tokio::task::JoinSet::new();
    for key in keys {
        if set.len() >= 16
            && let Some(done) = set.join_next().await
        {
            done.unwrap_or_else(|e| panic!("upload task: {e}"));
        }
        let (s3, bucket, key, body) = (s3.clone(), bucket.to_owned(), key.clone(), body.to_vec());
        set.spawn(async move {
            s3.put_object()
                .bucket(&bucket)
                .key(&key)
                .body(ByteStream::from(body))
                .send()
                .await
                .unwrap_or_else(|e| panic!("put s3://{bucket}/{key}: {e:?}"));
        });
    }
    while let Some(done) = set.join_next().await {
        done.unwrap_or_else(|e| panic!("upload task: {e}"));
    }
}

/// How many of `keys` are outputs (not in shoal's `_shoal/` folders).
pub fn outputs(keys: &BTreeSet<String>) -> usize {
    keys.iter().filter(|k| !k.contains("/_shoal/")).count()
}

/// Every key under `prefix` in `bucket`.
pub async fn keys(s3: &aws_sdk_s3::Client, bucket: &str, prefix: &str) -> BTreeSet<String> {
    let mut pages = s3
        .list_objects_v2()
        .bucket(bucket)
        .prefix(prefix)
        .into_paginator()
        .send();
    let mut keys = BTreeSet::new();
    while let Some(page) = pages.next().await {
        let page = page.unwrap_or_else(|e| panic!("list s3://{bucket}/{prefix}: {e:?}"));
        for object in page.contents() {
            if let Some(key) = object.key() {
                keys.insert(key.to_owned());
            }
        }
    }
    keys
}

/// A chunk message body over `keys` (object references without a bucket).
pub fn chunk_body(keys: &[String]) -> String {
    let items = keys
        .iter()
        .map(|key| {
            ChunkItem::Object(ObjectRef {
                bucket: None,
                key: key.clone(),
                size: None,
                etag: None,
            })
        })
        .collect();
    serde_json::to_string(&Chunk::new(items)).unwrap_or_else(|e| panic!("encode chunk: {e}"))
}

/// Creates the buckets `photos` and `thumbs` and puts one small JPEG in
/// `photos` under `key`.
pub async fn photos_and_thumbs(s3: &aws_sdk_s3::Client, key: &str) {
    for bucket in ["photos", "thumbs"] {
        s3.create_bucket()
            .bucket(bucket)
            .send()
            .await
            .unwrap_or_else(|e| panic!("create bucket {bucket}: {e:?}"));
    }
    s3.put_object()
        .bucket("photos")
        .key(key)
        .body(ByteStream::from(tiny_jpeg()))
        .send()
        .await
        .unwrap_or_else(|e| panic!("put s3://photos/{key}: {e:?}"));
}

/// One record of a Lambda SQS event, as the SQS event source sends it.
pub fn sqs_record(id: &str, body: &str) -> serde_json::Value {
    serde_json::json!({
        "messageId": id,
        "receiptHandle": format!("receipt-{id}"),
        "body": body,
        "attributes": {"ApproximateReceiveCount": "1", "SentTimestamp": "1764230400000"},
        "messageAttributes": {},
        "md5OfBody": "",
        "eventSource": "aws:sqs",
        "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:jobs",
        "awsRegion": "us-east-1"
    })
}
