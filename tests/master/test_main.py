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
from titan.master.__main__ import _loopback_only, parse_args
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
    proc = await start_master(tmp_path, "--port", "0", "--log-level", "INFO")
    assert proc.stdout is not None
    line = await asyncio.wait_for(proc.stdout.readline(), 20)
    match = re.fullmatch(rb"titan master listening on 127\.0\.0\.1:(\d+)\n", line)
    assert match, line
    proc.send_signal(signum)
    out, err = await asyncio.wait_for(proc.communicate(), 20)
    assert proc.returncode == 0, err
    assert out == b"" and b"Traceback" not in err
    assert f"shutting down ({signal.Signals(signum).name})".encode() in err and b"stopped; the WAL is closed" in err
    assert b"workers heartbeat every 10s and are lost after 30s of silence" in err
    assert b"without a token" not in err  # on 127.0.0.1 only this machine can reach it


@pytest.mark.parametrize(
    ("host", "local"), [("127.0.0.1", True), ("::1", True), ("localhost", True), ("0.0.0.0", False), ("", False)]
)
def test_a_master_reachable_from_other_machines_is_told_apart(host: str, local: bool) -> None:
    assert _loopback_only(host) is local


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


async def test_a_second_master_on_a_held_workspace_exits_at_once_and_the_first_keeps_serving(tmp_path: Path) -> None:
    first = await start_master(tmp_path, "--port", "0", "--log-level", "WARNING")
    try:
        port = await ready_port(first)
        async with await TitanClient.connect(f"127.0.0.1:{port}") as client:
            before = await client.submit_job("SHELL", "echo one")
            segments = sorted(path.name for path in (tmp_path / "wal").iterdir())
            second = await start_master(tmp_path, "--port", "0")
            out, err = await asyncio.wait_for(second.communicate(), 20)
            assert second.returncode == 1 and out == b""
            assert err.decode() == (
                f"titan master: workspace {tmp_path} is in use by another master (pid {first.pid}, port {port})\n"
            )
            assert sorted(path.name for path in (tmp_path / "wal").iterdir()) == segments  # no segment of its own
            after = await client.submit_job("SHELL", "echo two")  # the first one never noticed
            assert {job.id for job in await client.list_jobs()} == {before, after}
    finally:
        await stop(first)


async def test_a_master_killed_with_sigkill_restarts_on_its_workspace(tmp_path: Path) -> None:
    first = await start_master(tmp_path, "--port", "0", "--log-level", "WARNING")
    port = await ready_port(first)
    async with await TitanClient.connect(f"127.0.0.1:{port}") as client:
        ids = {await client.submit_job("SHELL", f"echo {i}") for i in range(3)}
    first.kill()  # the lock goes with the process: nothing to clean up by hand
    await first.communicate()
    again = await start_master(tmp_path, "--port", "0", "--log-level", "WARNING")
    try:
        async with await TitanClient.connect(f"127.0.0.1:{await ready_port(again)}") as client:
            assert {job.id for job in await client.list_jobs()} == ids
    finally:
        await stop(again)


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


def test_spawn_bounds_have_defaults_and_flags() -> None:
    assert (parse_args([], environ={})[0].max_workers, parse_args([], environ={})[0].max_depth) == (64, 4)
    settings, _ = parse_args(["--max-workers", "10", "--max-depth", "1"], environ={})
    assert (settings.max_workers, settings.max_depth) == (10, 1)


def test_the_autoscalers_bounds_and_the_clusters_are_separate_flags() -> None:
    settings, _ = parse_args(["--autoscale"], environ={})
    assert settings.autoscale is not None
    assert (settings.autoscale.max_workers, settings.autoscale.max_depth) == (8, 2)
    assert (settings.max_workers, settings.max_depth) == (64, 4)
    argv = ["--autoscale", "--autoscale-max-workers", "3", "--autoscale-max-depth", "1", "--max-workers", "20"]
    settings, _ = parse_args(argv, environ={})
    assert settings.autoscale is not None
    assert (settings.autoscale.max_workers, settings.autoscale.max_depth) == (3, 1)
    assert (settings.max_workers, settings.max_depth) == (20, 4)
    settings, _ = parse_args(["--autoscale-max-workers", "2"], environ={})  # the autoscaler is off
    assert (settings.autoscale, settings.max_workers) == (None, 64)


@pytest.mark.parametrize(
    "argv",
    [
        ["--port", "99999"],
        ["--heartbeat-timeout", "-1"],
        ["--heartbeat-timeout", "1", "--heartbeat-interval", "5"],  # every worker would be lost between beats
        ["--heartbeat-timeout", "10"],  # no longer than the default interval
        ["--heartbeat-interval", "inf"],  # no worker could ever be told when to beat
        ["--heartbeat-timeout", "nan"],
        ["--port", "x"],
        ["--wal-commit-delay", "-1"],
        ["--wal-commit-delay", "soon"],
        ["--tls-key", "master.key"],  # a key without its certificate
        ["--max-workers", "0"],
        ["--max-depth", "-1"],
    ],
)
def test_bad_flags_exit_with_one_line(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        parse_args(argv, environ={})
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("python -m titan.master: error: ") and err.endswith(" (see --help)\n")
    assert err.count("\n") == 1


def test_a_longer_heartbeat_interval_alone_stretches_the_default_timeout() -> None:
    assert parse_args(["--heartbeat-interval", "40"], environ={})[0].heartbeat_timeout_s == 120
    assert parse_args(["--heartbeat-interval", "2"], environ={})[0].heartbeat_timeout_s == 30  # never below 30 s
    assert parse_args([], environ={})[0].heartbeat_timeout_s == 30


def test_a_timeout_under_the_default_interval_says_the_interval_is_the_default(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit):
        parse_args(["--heartbeat-timeout", "5"], environ={})
    assert "longer than the heartbeat interval, 10 (the default)" in capsys.readouterr().err
