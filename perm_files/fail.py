"""Fail on purpose: print a reason to stderr and exit with the given code (default 3).

Usage: fail.py [EXIT_CODE]

For retry and dead-letter demos: a job running this uses up its attempts.
"""

from __future__ import annotations

import sys

DEFAULT_EXIT_CODE = 3


def main(argv: list[str]) -> int:
    try:
        code = int(argv[1]) if len(argv) > 1 else DEFAULT_EXIT_CODE
    except ValueError:
        print(f"usage: fail.py [EXIT_CODE]: got {argv[1]!r}", file=sys.stderr)
        return 2
    print(f"fail.py: failing on purpose with exit code {code}", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv))
