"""Titan's error hierarchy, grouped by kind.

``code`` is the stable code carried by an ERROR frame; ``str(exc)`` is the
one-line message people read.
"""

from __future__ import annotations

from typing import ClassVar

from protocol.errors import ProtocolError, SchemaError

__all__ = [
    "AuthRefused",
    "UnsendableRequest",
    "ConnectError",
    "CycleError",
    "InvalidTransition",
    "JobError",
    "PeerClosed",
    "ProtocolError",
    "RemoteError",
    "RequestTimeout",
    "TitanError",
    "TransportError",
    "UnknownJob",
    "UsageError",
    "ValidationError",
    "WorkspaceError",
    "WorkspaceInUse",
]


class TitanError(Exception):
    """Base of every error Titan reports to a person in one line."""

    code: ClassVar[str] = "ERROR"


class UsageError(TitanError):
    """A command line or REPL line that does not parse; says what was expected."""

    code = "USAGE"


class JobError(TitanError):
    code = "JOB_ERROR"


class ValidationError(JobError):
    """A submission refused before anything was stored."""

    code = "INVALID_JOB"


class UnknownJob(JobError):
    code = "UNKNOWN_JOB"

    def __init__(self, job_id: str, *, message: str = "") -> None:
        super().__init__(message or f"no job with id '{job_id}'")
        self.job_id = job_id


class InvalidTransition(JobError):
    code = "INVALID_TRANSITION"

    def __init__(self, job_id: str, start: object, finish: object, *, message: str = "") -> None:
        super().__init__(message or f"job '{job_id}' cannot go from {start} to {finish}")
        self.job_id = job_id
        self.start = start
        self.finish = finish


class CycleError(ValidationError):
    code = "DAG_CYCLE"

    def __init__(self, ids: list[str]) -> None:
        super().__init__("the DAG has a cycle: " + " -> ".join([*ids, ids[0]] if ids else ids))
        self.ids = ids


class UnsendableRequest(SchemaError, TitanError):
    """A request holding a value the wire cannot carry (an integer over 64 bits, a frame over the
    limit): nothing was sent. Both the protocol's :class:`~protocol.SchemaError` and a TitanError."""

    code = "BAD_MESSAGE"


class TransportError(TitanError):
    code = "TRANSPORT"


class ConnectError(TransportError):
    code = "CONNECT"


class AuthRefused(ConnectError):
    """The master refused our credentials (no token, or a wrong one): retrying cannot help."""

    code = "AUTH"


class TlsRefused(AuthRefused):
    """TLS on one end only, or a master certificate we do not trust: retrying cannot help either."""

    code = "TLS"


class PeerClosed(TransportError):
    code = "PEER_CLOSED"


class RequestTimeout(TransportError):
    code = "TIMEOUT"


class RemoteError(TitanError):
    """The other end answered with an ERROR frame."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.remote_code = code

    @property
    def code(self) -> str:  # type: ignore[override]
        return self.remote_code


class WorkspaceError(TitanError):
    """A master's or worker's workspace cannot be used: the file system refused, or it is taken."""

    code = "WORKSPACE"


class WorkspaceInUse(WorkspaceError):
    """Another live master or worker holds the workspace's lock (see ``titan/workspace.py``)."""

    code = "WORKSPACE_IN_USE"

    def __init__(self, message: str, *, pid: int | None = None) -> None:
        super().__init__(message)
        self.pid = pid
