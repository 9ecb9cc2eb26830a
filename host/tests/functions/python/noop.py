"""The smallest Python Lambda function: the benchmark's (bench/host.sh)."""


def handler(event, context):
    return {}
