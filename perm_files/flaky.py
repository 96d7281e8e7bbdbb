"""Fail the first attempts, then succeed: for retry and backoff demos.

Usage: flaky.py [FAILURES]

Reads the attempt number from ``TITAN_ATTEMPT`` (set by the worker) and exits
with code 1 while it is at most FAILURES (default 2), then exits 0. So with the
default a job running this completes on attempt 3.
"""

from __future__ import annotations

import os
import sys


def main(argv: list[str]) -> int:
    try:
        failures = int(argv[1]) if len(argv) > 1 else 2
        attempt = int(os.environ.get("TITAN_ATTEMPT", "1"))
    except ValueError:
        print("usage: flaky.py [FAILURES] (with TITAN_ATTEMPT an integer)", file=sys.stderr)
        return 2
    if attempt <= failures:
        print(f"flaky.py: attempt {attempt} fails on purpose ({failures} failures planned)", file=sys.stderr)
        return 1
    print(f"flaky.py: attempt {attempt} succeeds")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
