"""A module whose import takes longer than any init timeout of the tests."""

import time

time.sleep(60)


def handler(event, context):
    return "never"
