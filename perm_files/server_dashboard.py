"""The Titan dashboard as a deployable service (``DEPLOY|server_dashboard.py``).

Serves the cluster's web page (workers tree, counts, autoscaler, recent jobs)
using the client library; the master is ``TITAN_MASTER``, which a worker sets
for the services it runs. The port is ``TITAN_SERVICE_PORT`` when the job names
one, else the first argument, else 8050; when that port is taken a free one is
used and printed.

Usage: server_dashboard.py [PORT]
"""

from __future__ import annotations

import os
import sys

from titan.dashboard import main

if __name__ == "__main__":
    port = os.environ.get("TITAN_SERVICE_PORT") or (sys.argv[1] if len(sys.argv) > 1 else "8050")
    sys.exit(main(["--port", port, "--any-port-if-busy"], prog="server_dashboard.py"))
