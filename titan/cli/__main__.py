"""``python -m titan.cli``: the same as the ``titan`` console script."""

from __future__ import annotations

import sys

from .main import main

sys.exit(main())
