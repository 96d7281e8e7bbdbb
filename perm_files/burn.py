"""Keep one core busy for N seconds of CPU time (default 0.25): a CPU-bound benchmark job.

Usage: burn.py [SECONDS]

Counts the CPU time this process uses (not the wall clock), so a job on a busy
machine takes longer but does the same work. Prints the loop count at the end.
"""

from __future__ import annotations

import sys
import time

DEFAULT_SECONDS = 0.25


def burn(seconds: float) -> int:
    """Spin until this process has used ``seconds`` of CPU time; returns the rounds."""
    end = time.process_time() + seconds
    rounds = 0
    while time.process_time() < end:
        for _ in range(1000):
            rounds += 1
    return rounds


def main(argv: list[str]) -> int:
    try:
        seconds = float(argv[1]) if len(argv) > 1 else DEFAULT_SECONDS
    except ValueError:
        print(f"burn.py: SECONDS must be a number, got {argv[1]!r}", file=sys.stderr)
        return 2
    if seconds < 0:
        print(f"burn.py: SECONDS must not be negative, got {seconds:g}", file=sys.stderr)
        return 2
    print(f"burned {seconds:g}s of CPU in {burn(seconds)} rounds", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
