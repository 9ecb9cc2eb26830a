"""Thumbnails of images uploaded to S3: a Python Lambda function as it is
deployed on AWS (an S3 trigger, boto3, Pillow), run unchanged by shoal.

Environment: THUMBNAIL_BUCKET (where thumbnails go), THUMBNAIL_MAX_EDGE
(longest edge in pixels, 256 by default).
"""

import io
import os
import urllib.parse

import boto3
from PIL import Image

s3 = boto3.client("s3")
BUCKET = os.environ["THUMBNAIL_BUCKET"]
MAX_EDGE = int(os.environ.get("THUMBNAIL_MAX_EDGE", "256"))


def handler(event, context):
    made = []
    for record in event["Records"]:
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
        made.append(target)
    return {"thumbnails": made}
