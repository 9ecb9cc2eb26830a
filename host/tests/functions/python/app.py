"""Handlers of a Python Lambda function, as a Lambda user writes them.

host/tests/python_ric.rs runs them behind shoal's Runtime API with AWS's
own runtime interface client (awslambdaric).
"""

import os
import time

INVOCATIONS = 0


def echo(event, context):
    global INVOCATIONS
    INVOCATIONS += 1
    return {
        "event": event,
        "requestId": context.aws_request_id,
        "function": context.function_name,
        "memory": context.memory_limit_in_mb,
        "arn": context.invoked_function_arn,
        "remainingMs": context.get_remaining_time_in_millis(),
        "logGroup": context.log_group_name,
        "pid": os.getpid(),
        "invocations": INVOCATIONS,
        "env": {
            name: os.environ.get(name)
            for name in (
                "AWS_LAMBDA_FUNCTION_NAME",
                "AWS_LAMBDA_FUNCTION_MEMORY_SIZE",
                "AWS_REGION",
                "_HANDLER",
                "LAMBDA_TASK_ROOT",
                "JOB_SETTING",
                "SHOAL_QUEUE",
            )
        },
    }


def fail(event, context):
    raise ValueError("cannot process " + str(event.get("key")))


def nap(event, context):
    time.sleep(event["seconds"])
    return {"slept": event["seconds"], "pid": os.getpid()}


def crash(event, context):
    os._exit(3)


def big(event, context):
    return "x" * event["bytes"]


def batch(event, context):
    """An SQS-triggered function reporting its failed records."""
    failures = []
    for record in event["Records"]:
        if "poison" in record["body"]:
            failures.append({"itemIdentifier": record["messageId"]})
    return {"batchItemFailures": failures}


def direct(event, context):
    """A function invoked directly: the event is a queue message itself.
    Writes a file named by the event's id into OUT_DIR."""
    if event.get("poison"):
        raise ValueError("poison message %d" % int(event["id"]))
    path = os.path.join(os.environ["OUT_DIR"], "%d" % int(event["id"]))
    with open(path, "w") as out:
        out.write(context.aws_request_id)
    return {"done": event["id"]}
