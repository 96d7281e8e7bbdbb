"""Count the primes below N with a sieve of Eratosthenes: a CPU-bound demo job.

Usage: calc.py [N]      (default 6 000 000: about half a second to a second)

Prints the count and the time it took. If TITAN_OUTPUT_DIR is set, also writes
calc_result.json there, so a DAG's next job can read the result.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from pathlib import Path

DEFAULT_LIMIT = 6_000_000


def count_primes_below(limit: int) -> int:
    """How many primes are smaller than ``limit``."""
    if limit < 3:
        return 0
    sieve = bytearray([1]) * limit
    sieve[0] = sieve[1] = 0
    for n in range(2, math.isqrt(limit - 1) + 1):
        if sieve[n]:
            # a plain loop on purpose: the job is meant to keep one core busy in Python
            for multiple in range(n * n, limit, n):
                sieve[multiple] = 0
    return sieve.count(1)


def main(argv: list[str]) -> int:
    try:
        limit = int(argv[1]) if len(argv) > 1 else DEFAULT_LIMIT
    except ValueError:
        print(f"usage: calc.py [N]: N must be an integer, got {argv[1]!r}", file=sys.stderr)
        return 2
    started = time.perf_counter()
    count = count_primes_below(limit)
    elapsed_s = time.perf_counter() - started
    print(f"primes below {limit}: {count}")
    print(f"took {elapsed_s:.3f}s")
    output_dir = os.environ.get("TITAN_OUTPUT_DIR")
    if output_dir:
        Path(output_dir).mkdir(parents=True, exist_ok=True)
        result = Path(output_dir) / "calc_result.json"
        result.write_text(json.dumps({"limit": limit, "primes": count, "seconds": round(elapsed_s, 4)}) + "\n")
        print(f"wrote {result}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
