#!/usr/bin/env python3
"""Runs a command and prints its wall-clock time and peak memory.

    timed.py COMMAND [ARGS...]

Prints `seconds S peak_kib K` on standard output, where K is the largest
resident set size any process of the command reached (the command itself
or a child it waited for, such as each process `xargs` starts). The
command's output is not shown unless it fails: then the end of its
standard error is, and this exits non-zero.
"""

import resource
import subprocess
import sys
import time


def main() -> int:
    if len(sys.argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    started = time.perf_counter()
    done = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        tail = done.stderr.decode(errors="replace")[-2000:]
        print(f"{sys.argv[1]} failed with status {done.returncode}:\n{tail}", file=sys.stderr)
        return 1
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    print(f"seconds {seconds:.4f} peak_kib {peak}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
