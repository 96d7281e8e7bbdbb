"""Well-framed but hostile requests to a live master: each gets a one-line ERROR, nothing breaks.

Every case here is something a protocol fuzzer once got past the master's validation.
"""

from __future__ import annotations

import asyncio
import typing
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import msgpack
import pytest

from protocol import (
    Cancel,
    Frame,
    Gc,
    Heartbeat,
    JobOutputs,
    JobSpec,
    JobStatus,
    ListJobs,
    LogsSubscribe,
    Message,
    Opcode,
    Register,
    Retire,
    Retry,
    Spawn,
    Stats,
    Stop,
    Submit,
    SubmitDag,
    TaskStatus,
    Wait,
    encode_frame,
    encode_message,
    pack_header,
)
from tests.conftest import ClusterFactory
from tests.net._net_harness import RawClient
from tests.protocol._wire_schema import fields_of, sample, wrong_values
from tests.support import wait_until

Raw = Callable[[int], Awaitable[RawClient]]


async def client_on(port: int, raw: Raw) -> RawClient:
    client = await raw(port)
    welcome = await client.hello("client")
    assert welcome.opcode == Opcode.WELCOME
    return client


async def answer_to(client: RawClient, opcode: Opcode, body: dict[str, Any]) -> Frame:
    client.send(encode_frame(opcode, body))
    return await client.frame()


def assert_error(frame: Frame, code: str, rid: int) -> None:
    assert frame.opcode == Opcode.ERROR, frame
    assert frame.body["code"] == code, frame.body
    assert frame.rid == rid
    assert "\n" not in frame.body["message"]


@pytest.mark.parametrize("jobs", [1.5, 7, None, True, msgpack.Timestamp(0, 0)])
async def test_submit_dag_whose_jobs_is_not_an_array_is_bad_message(
    make_cluster: ClusterFactory, raw: Raw, jobs: object
) -> None:
    cluster = await make_cluster(n_workers=0)
    client = await client_on(cluster.master.port, raw)

    assert_error(await answer_to(client, Opcode.SUBMIT_DAG, {"jobs": jobs, "rid": 1}), "BAD_MESSAGE", rid=1)

    # the connection and the master carry on
    stats = await answer_to(client, Opcode.STATS, {"rid": 2})
    assert stats.opcode == Opcode.STATS and stats.is_reply and stats.rid == 2


# ---------------------------------------------------------------------- a worker reporting what is not its own


async def fake_worker(port: int, raw: Raw, *, finished: list[TaskStatus] | None = None) -> RawClient:
    """A registered worker connection that offers no skill any job asks for (it is given nothing)."""
    worker = await raw(port)
    assert (await worker.hello("worker")).opcode == Opcode.WELCOME
    register = Register(
        worker_id="impostor",
        name="[9999]",
        host="127.0.0.1",
        port=9999,
        capacity=1,
        skills=["NOTHING-ASKS-FOR-THIS"],
        finished=finished or [],
    )
    worker.send(encode_message(register, rid=1))
    reply = await worker.frame()
    assert reply.opcode == Opcode.REGISTER and reply.is_reply, reply
    return worker


async def handled(worker: RawClient) -> None:
    """Return once the master has handled every frame sent before: it answers frames in order."""
    worker.send(encode_frame(Opcode.REGISTER, {"rid": 99}))  # refused: a REGISTER without its fields
    assert_error(await worker.frame(), "BAD_MESSAGE", rid=99)


FORGED = {"result.txt": b"forged"}


@pytest.mark.parametrize("absolute", [False, True], ids=["relative", "absolute"])
async def test_outputs_reported_for_an_unknown_job_are_not_written_anywhere(
    make_cluster: ClusterFactory, raw: Raw, tmp_path: Path, absolute: bool
) -> None:
    cluster = await make_cluster(n_workers=0)
    worker = await fake_worker(cluster.master.port, raw)
    escaped = tmp_path / "escaped"  # the workspace is tmp_path/master: its jobs/ is two levels down
    job_id = str(escaped) if absolute else "../../escaped"

    worker.send(encode_message(TaskStatus(job_id=job_id, attempt=1, state="COMPLETED", outputs=FORGED)))
    await handled(worker)

    assert not escaped.exists()
    assert not cluster.master.artifacts.jobs_dir.exists()


async def test_a_report_on_another_workers_attempt_changes_nothing_it_stored(
    make_cluster: ClusterFactory, raw: Raw
) -> None:
    cluster = await make_cluster(n_workers=1)
    client = cluster.client
    done = await client.submit_job(
        "SHELL", "echo real; mkdir -p $TITAN_OUTPUT_DIR; echo real > $TITAN_OUTPUT_DIR/result.txt"
    )
    [finished] = await client.wait([done], timeout_s=30)
    assert finished.state == "COMPLETED"
    running = await client.submit_job("SHELL", "sleep 30")
    await wait_until(lambda: cluster.master.state.jobs[running].state.value == "RUNNING", what="the job to run")

    forged = [
        TaskStatus(job_id=job_id, attempt=attempt, state=state, stdout=b"forged", outputs=FORGED)
        for job_id in (done, running)
        for attempt in (1, 2, -1)
        for state in ("COMPLETED", "FAILED")
    ]
    worker = await fake_worker(cluster.master.port, raw, finished=forged[:2])
    for status in forged:
        worker.send(encode_message(status))
    await handled(worker)
    await asyncio.to_thread(cluster.master.log_store.flush)

    attempts = cluster.master.artifacts.jobs_dir
    assert (attempts / done / "attempt-1" / "outputs" / "result.txt").read_bytes() == b"real\n"
    assert (attempts / done / "attempt-1" / "stdout").read_bytes() == b"real\n"
    assert sorted(path.name for path in (attempts / done).iterdir()) == ["attempt-1"]
    assert not (attempts / running).exists()
    assert (await client.status(running)).state == "RUNNING"
    assert (await client.status(done)).state == "COMPLETED"


# ---------------------------------------------------------------------- what an ERROR quotes


@pytest.mark.parametrize("job_id", ["a\nb", "a\r\nERROR fake line", "x" * 70_000, "\u202eevil", "nul\x00"])
async def test_an_error_quoting_a_hostile_job_id_is_one_bounded_line(
    make_cluster: ClusterFactory, raw: Raw, job_id: str
) -> None:
    cluster = await make_cluster(n_workers=0)
    client = await client_on(cluster.master.port, raw)

    answer = await answer_to(client, Opcode.JOB_STATUS, {"job_id": job_id, "rid": 1})

    assert_error(answer, "UNKNOWN_JOB", rid=1)
    message = answer.body["message"]
    assert message.isprintable() and len(message) < 2100
    assert message.startswith("no job with id '")


# ---------------------------------------------------------------------- valid, but extreme


async def test_a_job_whose_backoff_overflows_a_float_still_retries_and_ends(make_cluster: ClusterFactory) -> None:
    cluster = await make_cluster(n_workers=1)
    spec = JobSpec(
        type="SHELL", data="exit 3", max_attempts=4, backoff_base_s=0.001, backoff_factor=1e300, backoff_cap_s=0.01
    )
    job_id = await cluster.client.submit(spec)

    [job] = await cluster.client.wait([job_id], timeout_s=30)

    assert (job.state, job.attempts, job.exit_code) == ("DEAD", 4, 3)


async def test_a_value_nested_as_deep_as_msgpack_allows_is_bad_message(make_cluster: ClusterFactory, raw: Raw) -> None:
    cluster = await make_cluster(n_workers=0)
    worker = await fake_worker(cluster.master.port, raw)
    deep = b"\x91" * 1020 + b"\x01"  # [[[...1...]]]: msgpack decodes up to 1 023 levels, repr() did not
    body = b"\x83\xa6job_id\xa1x\xa7attempt\x01\xa5state" + deep

    worker.send(pack_header(Opcode.TASK_STATUS, 0, len(body)) + body)

    answer = await worker.frame()
    assert answer.opcode == Opcode.ERROR and answer.body["code"] == "BAD_MESSAGE", answer.body
    assert "TaskStatus.state" in answer.body["message"]
    await handled(worker)  # the connection reads on


# ---------------------------------------------------------------------- a sweep over every field


def nested_list(depth: int) -> list[Any]:
    value: list[Any] = []
    for _ in range(depth):
        value = [value]
    return value


# values of every kind a field may meet: wrong types come from wrong_values(), these are the odd ones
EXTREMES: list[Any] = [
    nested_list(1015),  # with the map around it, about as deep as msgpack decodes
    "x" * 100_000,
    "a\nb\x00\u202e\U0001f600",
    "../../etc/passwd",
    2**63 - 1,
    -(2**63),
    2**64 - 1,
    float("nan"),
    float("-inf"),
    -0.0,
    [None] * 1000,
    {"k": {"k": {"k": [b"\xff"]}}},
    msgpack.Timestamp(0, 0),
]

CLIENT_REQUESTS = [Submit, SubmitDag, JobStatus, ListJobs, Stats, Cancel, Retry, Wait, LogsSubscribe, JobOutputs, Gc]
CLIENT_REQUESTS += [Stop, Spawn, Retire]


def mutants(cls: type[Message]) -> Iterator[dict[str, Any]]:
    """The sample body of ``cls`` with one field missing, or of a wrong type, or extreme; then extra keys.

    A nested structure (``Submit.job``, ``SubmitDag.jobs``, ``TaskStatus`` has none) has each of its own
    fields mutated the same way.
    """
    body = sample(cls).to_wire()
    for f, hint in fields_of(cls):
        yield {k: v for k, v in body.items() if k != f.name}
        for wrong in [*wrong_values(hint), *EXTREMES]:
            yield {**body, f.name: wrong}
        nested = typing.get_args(hint)[0] if typing.get_origin(hint) is list else hint
        if isinstance(nested, type) and issubclass(nested, Message):
            for inner in mutants(nested):
                yield {**body, f.name: [inner] if nested is not hint else inner}
    yield {**body, "unknown": nested_list(1000), "": None}


def assert_fine(answer: Frame, sent: dict[str, Any]) -> None:
    if answer.opcode == Opcode.ERROR:
        message = answer.body["message"]
        assert answer.body["code"] != "INTERNAL", (message, sent)
        assert isinstance(message, str) and message.isprintable() and len(message) < 2100, sent


@pytest.mark.parametrize("cls", CLIENT_REQUESTS, ids=lambda cls: cls.__name__)
async def test_every_field_of_a_client_request_wrong_or_extreme_gets_a_reply_or_a_plain_error(
    make_cluster: ClusterFactory, raw: Raw, cls: type[Message]
) -> None:
    cluster = await make_cluster(n_workers=0)
    client = await client_on(cluster.master.port, raw)
    assert cls.OPCODE is not None
    for rid, body in enumerate(mutants(cls), start=1):
        client.send(encode_frame(cls.OPCODE, {**body, "rid": rid}))
        answer = await client.frame()  # one answer per request: a reply, or an ERROR (BAD_BODY has no rid)
        assert answer.rid in (rid, None), answer
        assert_fine(answer, body)
    stats = await answer_to(client, Opcode.STATS, {"rid": 0})
    assert stats.opcode == Opcode.STATS and stats.is_reply


@pytest.mark.parametrize("cls", [Heartbeat, TaskStatus], ids=lambda cls: cls.__name__)
async def test_every_field_of_a_worker_report_wrong_or_extreme_gets_at_most_a_plain_error(
    make_cluster: ClusterFactory, raw: Raw, cls: type[Message]
) -> None:
    cluster = await make_cluster(n_workers=0)
    worker = await fake_worker(cluster.master.port, raw)
    assert cls.OPCODE is not None
    for body in mutants(cls):
        worker.send(encode_frame(cls.OPCODE, body))
        worker.send(encode_frame(Opcode.REGISTER, {"rid": 99}))  # answered BAD_MESSAGE: the report was handled
        while (answer := await worker.frame()).rid != 99:
            assert_fine(answer, body)
