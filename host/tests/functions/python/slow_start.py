"""A module whose import takes longer than any init timeout of the tests,
and starts a helper process of its own first (it must end with the
function's environment)."""

import subprocess
import time

HELPER = subprocess.Popen(["sleep", "60"])
time.sleep(60)


def handler(event, context):
    return "never"
