"""Well-framed but hostile requests to a live master: each gets a one-line ERROR, nothing breaks.

Every case here is something a protocol fuzzer once got past the master's validation.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import msgpack
import pytest

from protocol import Frame, Opcode, encode_frame
from tests.conftest import ClusterFactory
from tests.net._net_harness import RawClient

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
