"""``python -m titan.master``: readiness line, clean signal shutdown, one-line errors."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import sys
from pathlib import Path

import pytest

from protocol import JobSpec, Submit, SubmitReply
from titan.client import TitanClient
from titan.master.__main__ import parse_args
from titan.net import dial

from .helpers import write_wal_of_two_masters

REPO = Path(__file__).resolve().parents[2]


async def start_master(workspace: Path, *args: str) -> asyncio.subprocess.Process:
    """The master as its own process, on a test's own workspace (never the repo's)."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "titan.master", "--perm-files", str(REPO / "perm_files"), "--workspace", str(workspace),
        *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env,
    )  # fmt: skip


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
async def test_prints_one_readiness_line_and_stops_cleanly_on_a_signal(signum: int, tmp_path: Path) -> None:
    proc = await start_master(tmp_path, "--port", "0", "--log-level", "WARNING")
    assert proc.stdout is not None
    line = await asyncio.wait_for(proc.stdout.readline(), 20)
    match = re.fullmatch(rb"titan master listening on 127\.0\.0\.1:(\d+)\n", line)
    assert match, line
    proc.send_signal(signum)
    out, err = await asyncio.wait_for(proc.communicate(), 20)
    assert proc.returncode == 0, err
    assert out == b"" and b"Traceback" not in err


async def test_serves_a_client_under_its_real_event_loop(tmp_path: Path) -> None:
    proc = await start_master(tmp_path, "--port", "0", "--log-level", "WARNING")
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), 20)
        port = int(line.rsplit(b":", 1)[1])
        peer, _ = await dial("127.0.0.1", port, role="client")
        reply = await peer.request(Submit(job=JobSpec(type="SHELL", data="true")), timeout_s=5)
        assert isinstance(reply, SubmitReply) and reply.job_id.startswith("TSK-")
        await peer.aclose()
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = await asyncio.wait_for(proc.communicate(), 20)
    assert proc.returncode == 0 and b"Traceback" not in err, err


async def test_port_in_use_is_a_one_line_error(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = await start_master(tmp_path, "--port", str(port))
        out, err = await asyncio.wait_for(proc.communicate(), 20)
    assert proc.returncode == 1
    lines = err.decode().strip().splitlines()
    assert len(lines) == 1 and f"cannot listen on 127.0.0.1:{port}" in lines[0], err
    assert out == b""


async def ready_port(proc: asyncio.subprocess.Process) -> int:
    """Wait for the readiness line; the port it names."""
    assert proc.stdout is not None
    line = await asyncio.wait_for(proc.stdout.readline(), 20)
    match = re.fullmatch(rb"titan master listening on 127\.0\.0\.1:(\d+)\n", line)
    assert match, line
    return int(match.group(1))


async def stop(proc: asyncio.subprocess.Process) -> bytes:
    """SIGTERM, wait; its stderr (it must have exited 0)."""
    proc.send_signal(signal.SIGTERM)
    _, err = await asyncio.wait_for(proc.communicate(), 20)
    assert proc.returncode == 0 and b"Traceback" not in err, err
    return err


async def test_a_wal_with_duplicate_seqs_is_recovered_not_a_traceback(tmp_path: Path) -> None:
    """Two masters that ran at once on one workspace left jobs numbered 1, 2, 3 twice over."""
    await write_wal_of_two_masters(tmp_path / "wal", jobs_each=3)
    proc = await start_master(tmp_path, "--port", "0", "--log-level", "WARNING")
    try:
        async with await TitanClient.connect(f"127.0.0.1:{await ready_port(proc)}") as client:
            jobs = await client.list_jobs()
        assert len(jobs) == 6 and {job.state for job in jobs} == {"PENDING"}
    finally:
        await stop(proc)


def test_flags_and_token_from_the_environment() -> None:
    settings, level = parse_args(
        ["--port", "9191", "--heartbeat-timeout", "0.5", "--heartbeat-interval", "0.1", "--log-level", "debug"],
        environ={"TITAN_TOKEN": "s3cret"},
    )
    assert (settings.port, settings.heartbeat_timeout_s, settings.heartbeat_interval_s) == (9191, 0.5, 0.1)
    assert (settings.token, level) == ("s3cret", "DEBUG")
    settings, _ = parse_args(["--token", "flag"], environ={"TITAN_TOKEN": "env"})
    assert settings.token == "flag"
    settings, _ = parse_args(["--wal-commit-delay", "2.5"], environ={})
    assert settings.wal_commit_delay_s == 0.0025
    assert parse_args([], environ={})[0].wal_commit_delay_s == 0.01


@pytest.mark.parametrize(
    "argv",
    [
        ["--port", "99999"],
        ["--heartbeat-timeout", "-1"],
        ["--port", "x"],
        ["--wal-commit-delay", "-1"],
        ["--wal-commit-delay", "soon"],
    ],
)
def test_bad_flags_exit_with_usage(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        parse_args(argv, environ={})
    assert info.value.code == 2
    assert "Traceback" not in capsys.readouterr().err
