#!/usr/bin/env python3
"""Process start to its first connection, for contenders taking turns.

    first_connect.py STARTS NAME=COMMAND [NAME=COMMAND ...]

Each COMMAND is run by the shell with `{port}` replaced by the port of a
listener of ours on 127.0.0.1; the time from the spawn to the accepted
connection is one sample. The process is then killed (nothing is served:
this is what a worker does before its broker answers). Contenders take
turns, the order alternating per round. Prints `connect ROUND NAME
MICROSECONDS` lines for bench/lib/paired.py.
"""

import os
import signal
import socket
import subprocess
import sys
import time


def one(command: str) -> float:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        listener.settimeout(20)
        port = listener.getsockname()[1]
        started = time.perf_counter()
        child = subprocess.Popen(
            command.replace("{port}", str(port)),
            shell=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            connection, _ = listener.accept()
            elapsed = time.perf_counter() - started
            connection.close()
        finally:
            os.killpg(child.pid, signal.SIGKILL)
            child.wait()
    return elapsed * 1e6


def main() -> int:
    if len(sys.argv) < 3 or any("=" not in a for a in sys.argv[2:]):
        print(__doc__, file=sys.stderr)
        return 2
    starts = int(sys.argv[1])
    contenders = [a.split("=", 1) for a in sys.argv[2:]]
    for round_ in range(starts + 1):
        order = contenders if round_ % 2 == 0 else contenders[::-1]
        for name, command in order:
            us = one(command)
            if round_ > 0:  # round 0 warms the page cache up
                print(f"connect {round_} {name} {us:.1f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
