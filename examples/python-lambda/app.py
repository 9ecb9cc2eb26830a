"""Thumbnails of images uploaded to S3: a Python Lambda function as it is
deployed on AWS (boto3, Pillow), run unchanged by shoal.

Triggers: S3 (ObjectCreated notifications), or an SQS queue that S3 sends
its notifications to, with ReportBatchItemFailures on: a message whose
images fail is reported in batchItemFailures and retried alone.

Environment: THUMBNAIL_BUCKET (where thumbnails go), THUMBNAIL_MAX_EDGE
(longest edge in pixels, 256 by default).
"""

import io
import json
import os
import urllib.parse

import boto3
from PIL import Image

s3 = boto3.client("s3")
BUCKET = os.environ["THUMBNAIL_BUCKET"]
MAX_EDGE = int(os.environ.get("THUMBNAIL_MAX_EDGE", "256"))


def thumbnail(record):
    bucket = record["s3"]["bucket"]["name"]
    key = urllib.parse.unquote_plus(record["s3"]["object"]["key"])
    body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    image = Image.open(io.BytesIO(body))
    image.thumbnail((MAX_EDGE, MAX_EDGE))
    out = io.BytesIO()
    image.convert("RGB").save(out, "JPEG", quality=80)
    target = key.rsplit(".", 1)[0] + ".jpg"
    s3.put_object(
        Bucket=BUCKET, Key=target, Body=out.getvalue(), ContentType="image/jpeg"
    )
    return target


def from_queue(records):
    failures = []
    for record in records:
        try:
            for notification in json.loads(record["body"]).get("Records", []):
                thumbnail(notification)
        except Exception as error:
            print(f"message {record['messageId']} failed: {error!r}")
            failures.append({"itemIdentifier": record["messageId"]})
    print(f"{len(records)} messages, {len(failures)} failed")
    return {"batchItemFailures": failures}


def handler(event, context):
    records = event["Records"]
    if records and records[0].get("eventSource") == "aws:sqs":
        return from_queue(records)
    return {"thumbnails": [thumbnail(record) for record in records]}
