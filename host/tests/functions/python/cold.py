"""A function whose init phase (its import) takes INIT_SECONDS, longer than
the invocation timeout of the test that runs it. For each SQS record it
writes the time the invocation had left into OUT_DIR/<messageId>."""

import os
import time

time.sleep(float(os.environ.get("INIT_SECONDS", "2")))


def handler(event, context):
    for record in event["Records"]:
        path = os.path.join(os.environ["OUT_DIR"], record["messageId"])
        with open(path, "w") as out:
            out.write(str(context.get_remaining_time_in_millis()))
    return {"batchItemFailures": []}
