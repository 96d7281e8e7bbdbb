"""``python -m titan.dashboard``: see :mod:`titan.dashboard.app`."""

from __future__ import annotations

import sys

from .app import main

if __name__ == "__main__":
    sys.exit(main(prog="python -m titan.dashboard"))
