#!/usr/bin/env python3
"""Ratio of two contenders over paired rounds, with a bootstrap interval.

Reads lines `SCENARIO ROUND CONTENDER VALUE` on standard input (one value
per contender per round; the same ROUND pairs them) and prints, per
scenario, the median of each contender's values, the ratio of the medians
(FIRST / SECOND, the contender order given on the command line), and a 95%
interval of that ratio from 10,000 bootstrap resamples of whole rounds
(a round's two values stay together, so what the machine did in that round
affects both sides alike).

    paired.py shoal baseline < samples.txt
"""

import random
import statistics
import sys
from collections import defaultdict


def main() -> int:
    if len(sys.argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    first, second = sys.argv[1], sys.argv[2]
    rounds = defaultdict(dict)  # (scenario, round) -> contender -> value
    order = []
    for line in sys.stdin:
        parts = line.split()
        if len(parts) != 4:
            continue
        scenario, rnd, who, value = parts
        try:
            rounds[(scenario, rnd)][who] = float(value)
        except ValueError:
            continue
        if scenario not in order:
            order.append(scenario)
    rng = random.Random(1)
    for scenario in order:
        pairs = [
            (v[first], v[second])
            for (s, _), v in sorted(rounds.items())
            if s == scenario and first in v and second in v
        ]
        if not pairs:
            continue
        a = statistics.median(p[0] for p in pairs)
        b = statistics.median(p[1] for p in pairs)
        ratios = []
        for _ in range(10_000):
            sample = [rng.choice(pairs) for _ in pairs]
            sb = statistics.median(p[1] for p in sample)
            if sb:
                ratios.append(statistics.median(p[0] for p in sample) / sb)
        ratios.sort()
        low = ratios[int(0.025 * len(ratios))]
        high = ratios[int(0.975 * len(ratios)) - 1]
        print(
            f"{scenario:<10} {first} {a:12.1f}  {second} {b:12.1f}  "
            f"ratio {a / b:.3f}x  95% interval {low:.3f}-{high:.3f}  ({len(pairs)} rounds)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
