"""Sleep for N seconds (default 30), for timeout and cancel demos.

Usage: sleep.py [SECONDS]

Prints when it starts and when it is done, flushing each line so a followed
log shows them as they happen.
"""

from __future__ import annotations

import sys
import time

DEFAULT_SECONDS = 30.0


def main(argv: list[str]) -> int:
    try:
        seconds = float(argv[1]) if len(argv) > 1 else DEFAULT_SECONDS
    except ValueError:
        print(f"usage: sleep.py [SECONDS]: got {argv[1]!r}", file=sys.stderr)
        return 2
    if seconds < 0:
        print(f"sleep.py: seconds must not be negative, got {seconds:g}", file=sys.stderr)
        return 2
    print(f"sleeping {seconds:g}s", flush=True)
    time.sleep(seconds)
    print("done", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
