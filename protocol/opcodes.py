"""TITAN_PROTO opcodes, grouped by who sends them.

``docs/PROTOCOL.md`` documents each one; ``tests/protocol/test_docs.py`` keeps
the two in step.
"""

from __future__ import annotations

from enum import IntEnum

__all__ = ["Opcode"]


class Opcode(IntEnum):
    # handshake: every connection starts with HELLO, ends it with WELCOME or ERROR
    HELLO = 0x01
    CHALLENGE = 0x02
    AUTH = 0x03
    WELCOME = 0x04
    ERROR = 0x05

    # worker -> master
    REGISTER = 0x10
    HEARTBEAT = 0x11
    TASK_STATUS = 0x12

    # master -> worker
    TASK_START = 0x18
    TASK_STOP = 0x19
    SPAWN_WORKER = 0x1A
    DRAIN = 0x1B

    # client -> master (requests; the answer carries the same opcode and the reply flag)
    SUBMIT = 0x30
    SUBMIT_DAG = 0x31
    JOB_STATUS = 0x32
    LIST_JOBS = 0x33
    STATS = 0x34
    CANCEL = 0x35
    RETRY = 0x36
    WAIT = 0x37
    LOGS_SUBSCRIBE = 0x38
    JOB_OUTPUTS = 0x39
    GC = 0x3A
    STOP = 0x3B
    SPAWN = 0x3C
    RETIRE = 0x3D

    # master -> client (pushed on a subscription)
    LOG_DATA = 0x40

    # UDP datagram, worker -> master
    LOG_RECORD = 0x60
