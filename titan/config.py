"""Settings: frozen dataclasses loaded once by each entry point.

No other module reads ``os.environ``; entry points call ``from_env``/``from_args``
and pass the settings down. Durations are seconds (``_s``) unless the wire
speaks milliseconds (``_ms``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from protocol import DEFAULT_MAX_BODY
from titan.net.tls import TlsClient

__all__ = [
    "DEFAULT_PORT",
    "AutoscaleSettings",
    "ClientSettings",
    "MasterSettings",
    "WorkerSettings",
    "parse_address",
    "tls_from_env",
    "tls_into_env",
]

DEFAULT_PORT: Final = 9090
DEFAULT_MASTER: Final = f"127.0.0.1:{DEFAULT_PORT}"


def tls_from_env(environ: Mapping[str, str], *, tls: bool = False, ca: str | None = None) -> TlsClient | None:
    """How to dial the master: TLS if asked (``tls``, a ``ca`` file) or set in the environment
    (``TITAN_TLS_CA=FILE``, or ``TITAN_TLS=1`` for the system's CAs); None: plain TCP."""
    ca = ca or environ.get("TITAN_TLS_CA") or None
    if ca:
        return TlsClient(Path(ca).absolute())  # absolute: child workers run in folders of their own
    if tls or environ.get("TITAN_TLS", "").lower() in ("1", "on", "true", "yes"):
        return TlsClient()
    return None


def tls_into_env(env: dict[str, str], tls: TlsClient | None) -> None:
    """Set ``env`` so that a process started with it dials the master as ``tls`` says
    (the inverse of :func:`tls_from_env`; whatever ``env`` said before is dropped)."""
    env.pop("TITAN_TLS_CA", None)
    env.pop("TITAN_TLS", None)
    if tls is not None:
        if tls.ca is not None:
            env["TITAN_TLS_CA"] = str(tls.ca)
        else:
            env["TITAN_TLS"] = "1"


def parse_address(text: str, default_port: int = DEFAULT_PORT) -> tuple[str, int]:
    """``HOST:PORT`` (or ``HOST``, or ``:PORT``) -> ``(host, port)``.

    Raises:
        ValueError: with a one-line message naming the expected form.
    """
    host, sep, port_text = text.strip().rpartition(":")
    if not sep:
        host, port_text = port_text, str(default_port)
    host = host.strip("[]") or "127.0.0.1"
    try:
        port = int(port_text)
    except ValueError:
        raise ValueError(f"bad address '{text}': expected HOST:PORT") from None
    if not 0 <= port <= 65535:
        raise ValueError(f"bad address '{text}': port {port} is out of range")
    return host, port


@dataclass(frozen=True)
class AutoscaleSettings:
    """Limits and delays of the master's autoscaler (``--autoscale``; see titan/master/autoscaler.py).

    Raises:
        ValueError: a limit below 1 or a negative delay, with a one-line message.
    """

    max_workers: int = 8
    max_children: int = 4
    max_depth: int = 2
    scale_up_after_s: float = 2.0
    cooldown_s: float = 2.0
    idle_retire_s: float = 30.0
    max_step: int = 2
    spawn_timeout_s: float = 30.0
    interval_s: float = 0.5

    def __post_init__(self) -> None:
        for name in ("max_workers", "max_children", "max_step"):
            if getattr(self, name) < 1:
                raise ValueError(f"autoscale {name} must be at least 1, got {getattr(self, name)}")
        if self.max_depth < 1:
            raise ValueError(f"autoscale max_depth must be at least 1, got {self.max_depth}")
        for name in ("scale_up_after_s", "cooldown_s", "idle_retire_s"):
            if getattr(self, name) < 0:
                raise ValueError(f"autoscale {name} must not be negative, got {getattr(self, name)}")
        for name in ("spawn_timeout_s", "interval_s"):
            if not getattr(self, name) > 0:
                raise ValueError(f"autoscale {name} must be positive, got {getattr(self, name)}")


@dataclass(frozen=True)
class MasterSettings:
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT  # 0 picks a free port (tests)
    workspace: Path = Path("titan_workspace")
    perm_files: Path = Path("perm_files")
    heartbeat_interval_s: float = 10.0
    heartbeat_timeout_s: float = 30.0
    max_body: int = DEFAULT_MAX_BODY
    token: str | None = None
    # TLS on every TCP connection (DESIGN §2): the certificate chain, and its key unless the key is in it
    tls_cert: Path | None = None
    tls_key: Path | None = None
    # a connection must finish its handshake (HELLO, and AUTH with a token) this soon after it is
    # accepted, and at most this many may be in their handshake at once (more are closed at once;
    # never more than half the open-file limit): strangers cannot hold the master's descriptors
    handshake_timeout_s: float = 10.0
    max_handshaking: int = 1024
    # how many finished transitions each job keeps in its story
    story_limit: int = 50
    # check the job table's invariants after each stimulus (tests turn this on)
    validate: bool = False
    # fsync WAL writes; "off" trades crash safety for speed
    fsync: bool = True
    # write a snapshot (and drop the log it covers) after this many WAL records, or this many bytes
    snapshot_every_records: int = 200_000
    snapshot_every_bytes: int = 256 * 1024 * 1024
    # records no answer waits on (a worker's report, a dispatch) may wait this long to share an fsync;
    # anything a client is told is fsynced at once
    wal_commit_delay_s: float = 0.01
    # retry backoff defaults for jobs that do not set their own (JobSpec.backoff_*)
    retry_backoff_base_s: float = 1.0
    retry_backoff_factor: float = 2.0
    retry_backoff_cap_s: float = 60.0
    max_payload_bytes: int = 8 * 1024 * 1024
    # output files one attempt may hand back (TITAN_OUTPUT_DIR); more fails the attempt, nothing is kept
    max_output_bytes: int = 8 * 1024 * 1024
    # live logs: what the master keeps in memory per running attempt for LOGS and new followers,
    # the write buffer over which a follower is cut off, and how long a finished job's followers
    # wait for the exact log of an attempt still being reported
    live_log_bytes: int = 1024 * 1024
    follower_buffer_bytes: int = 4 * 1024 * 1024
    log_linger_s: float = 5.0
    name: str = "titan-master"
    # the autoscaler (DESIGN §7): None keeps it off (the default; `--autoscale` turns it on)
    autoscale: AutoscaleSettings | None = None
    # bounds on every SPAWN, a person's or the autoscaler's (DESIGN §7): workers in all (spawns not yet
    # registered included), and how deep a child may be (a top-level worker is depth 0)
    max_workers: int = 64
    max_depth: int = 4

    def __post_init__(self) -> None:
        if not self.handshake_timeout_s > 0:
            raise ValueError(f"handshake_timeout_s must be positive, got {self.handshake_timeout_s}")
        if self.max_handshaking < 1:
            raise ValueError(f"max_handshaking must be at least 1, got {self.max_handshaking}")
        if self.max_workers < 1 or self.max_depth < 1:
            raise ValueError(f"max_workers and max_depth must be at least 1, got {self.max_workers}, {self.max_depth}")


@dataclass(frozen=True)
class WorkerSettings:
    master_host: str = "127.0.0.1"
    master_port: int = DEFAULT_PORT
    port: int = 8080  # the worker's display port / id; 0 picks one at random
    capacity: int = 4
    # memory (MiB) its jobs may reserve in all (JobSpec.memory_mb); None: this machine's physical memory
    memory_mb: int | None = None
    skills: tuple[str, ...] = ("GENERAL",)
    # "{port}" becomes the worker's port: workers on one host never share a folder, nor use the master's
    workspace: Path = Path("titan_workspace/worker-{port}")
    heartbeat_interval_s: float = 10.0
    reconnect_initial_s: float = 0.2
    reconnect_max_s: float = 10.0
    connect_timeout_s: float = 5.0
    token: str | None = None
    tls: TlsClient | None = None  # dial the master over TLS (see titan/net/tls.py)
    # with TLS, live log datagrams (not encrypted) go only to a master on this host, unless this is set
    live_logs_in_clear: bool = False
    parent: str | None = None
    worker_id: str | None = None  # stable id; derived from host and port when unset
    max_body: int = DEFAULT_MAX_BODY
    # seconds between SIGTERM and SIGKILL when a task's process group is stopped
    kill_grace_s: float = 2.0
    extra_env: Mapping[str, str] = field(default_factory=dict)
    # output files one attempt may send back in its final TASK_STATUS; more fails the attempt
    max_output_bytes: int = 8 * 1024 * 1024
    # the most of each of stdout/stderr sent in a final TASK_STATUS: the tail is kept, ``truncated`` says so
    max_log_bytes: int = 4 * 1024 * 1024
    # job folders left in the workspace's jobs/ (attempts kept for a look: their logs or outputs were over
    # the limits; attempts a killed run never reported) go this long after their last change; None: never
    keep_attempts_s: float | None = 7 * 86400.0
    # an attempt's RUNNING report waits this long: one that ends sooner is reported once, COMPLETED or
    # FAILED (the master passes it through RUNNING), which spares both sides a frame per short job
    running_report_delay_s: float = 0.005
    # live logs over UDP: how often running attempts' output is read and shipped (and how often
    # while each look finds at least ``log_busy_bytes``: a chatty job), the datagram size to a
    # master on another host (1 200 never fragments) and to one on this host (over the loopback
    # interface, whose MTU is 64 KiB), and how far the shipper may fall behind a chatty job before
    # it skips ahead (the skipped part is missing from the live view only)
    log_interval_s: float = 0.005
    log_busy_interval_s: float = 0.02
    log_busy_bytes: int = 64 * 1024
    log_datagram_bytes: int = 1200
    log_local_datagram_bytes: int = 65_000
    log_backlog_bytes: int = 1024 * 1024
    # services (DEPLOY) and child workers: a service is up once alive for ``service_settle_s`` (or its
    # port answers); a crash restarts it after a backoff doubling from ``service_restart_backoff_s``
    # up to the cap, at most ``service_max_restarts`` times; a stopped child worker gets
    # ``child_drain_timeout_s`` to drain and leave before it is terminated
    service_settle_s: float = 1.0
    service_max_restarts: int = 5
    service_restart_backoff_s: float = 0.5
    service_restart_backoff_cap_s: float = 30.0
    child_drain_timeout_s: float = 10.0
    # a child worker: the DEPLOY job or spawn request it was started for (sent in REGISTER)
    spawn_id: str = ""

    def __post_init__(self) -> None:
        if "{port}" in str(self.workspace):
            object.__setattr__(self, "workspace", Path(str(self.workspace).replace("{port}", str(self.port))))


@dataclass(frozen=True)
class ClientSettings:
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    token: str | None = None
    connect_timeout_s: float = 5.0
    request_timeout_s: float = 30.0
    max_body: int = DEFAULT_MAX_BODY
    tls: TlsClient | None = None  # dial the master over TLS (see titan/net/tls.py)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, *, master: str | None = None) -> ClientSettings:
        """``master`` (HOST:PORT) wins over ``TITAN_MASTER``; ``TITAN_TOKEN`` sets the token,
        ``TITAN_TLS_CA`` / ``TITAN_TLS`` turn on TLS (:func:`tls_from_env`)."""
        env = os.environ if environ is None else environ
        host, port = parse_address(master or env.get("TITAN_MASTER") or DEFAULT_MASTER)
        return cls(host=host, port=port, token=env.get("TITAN_TOKEN") or None, tls=tls_from_env(env))
