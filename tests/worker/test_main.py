"""``python -m titan.worker``: flags, and the real process against a fake master."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from bench.cluster import LocalCluster
from protocol import TaskRef
from tests.support import wait_until
from titan.net.tls import TlsClient
from titan.worker.__main__ import parse_args

from .fake_master import FakeMaster
from .helpers import group_members, shell

REPO = Path(__file__).resolve().parents[2]


def test_defaults() -> None:
    settings, level = parse_args([], environ={})
    assert (settings.master_host, settings.master_port, settings.port, settings.capacity) == (
        "127.0.0.1",
        9090,
        8080,
        4,
    )
    assert (settings.skills, settings.workspace, settings.heartbeat_interval_s) == (
        ("GENERAL",),
        Path("titan_workspace/worker-8080"),  # never the master's own workspace
        10.0,
    )
    assert (settings.token, settings.parent, level) == (None, None, "INFO")


def test_environment_and_flags() -> None:
    env = {"TITAN_MASTER": "10.0.0.5:7000", "TITAN_TOKEN": "secret"}
    settings, _ = parse_args([], environ=env)
    assert (settings.master_host, settings.master_port, settings.token) == ("10.0.0.5", 7000, "secret")
    argv = "--master h:1 --port 8081 --capacity 2 --skills GENERAL,GPU --heartbeat-interval 0.5 --parent P --log-level debug"
    settings, level = parse_args(argv.split(), environ=env)
    assert (settings.master_host, settings.master_port, settings.port) == ("h", 1, 8081)
    assert (settings.capacity, settings.skills, settings.heartbeat_interval_s) == (2, ("GENERAL", "GPU"), 0.5)
    assert (settings.parent, level) == ("P", "DEBUG")
    assert settings.workspace == Path("titan_workspace/worker-8081")
    settings, _ = parse_args(["--port", "8082", "--workspace", "/data/w-{port}"], environ={})
    assert settings.workspace == Path("/data/w-8082")


def test_memory_flag() -> None:
    assert parse_args([], environ={})[0].memory_mb is None  # the worker offers its machine's
    assert parse_args(["--memory", "2048"], environ={})[0].memory_mb == 2048


@pytest.mark.parametrize("value", ["0", "-5", "lots"])
def test_a_bad_memory_flag_is_refused(value: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        parse_args(["--memory", value], environ={})
    assert info.value.code == 2 and capsys.readouterr().err.count("\n") == 1


def test_tls_flags_and_environment() -> None:
    assert parse_args([], environ={})[0].tls is None
    settings, _ = parse_args(["--tls-ca", "ca.pem", "--live-logs-in-clear"], environ={})
    assert (settings.tls, settings.live_logs_in_clear) == (TlsClient(Path("ca.pem").absolute()), True)
    assert parse_args(["--tls"], environ={})[0].tls == TlsClient()
    assert parse_args([], environ={"TITAN_TLS_CA": "/etc/titan/ca.pem"})[0].tls == TlsClient(Path("/etc/titan/ca.pem"))


def test_a_masters_workspace_is_refused_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "wal").mkdir()
    with pytest.raises(SystemExit) as info:
        parse_args(["--workspace", str(tmp_path)], environ={})
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "is a master's (it holds wal/)" in err, err


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["--capacity", "0"], "--capacity must be at least 1"),
        (["--port", "70000"], "out of range"),
        (["--master", "host:notaport"], "expected HOST:PORT"),
        (["--heartbeat-interval", "0"], "must be a positive, finite number"),
        (["--heartbeat-interval", "inf"], "must be a positive, finite number"),
        (["--skills", ","], "at least one skill"),
        (["--bogus"], "unrecognized arguments"),
        (["--capacity", "many"], "invalid int value"),
    ],
)
def test_bad_flags_are_one_line(argv: list[str], fragment: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        parse_args(argv, environ={})
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and fragment in err, err


@pytest.mark.slow
async def test_worker_process_registers_runs_and_shuts_down_cleanly(tmp_path: Path) -> None:
    master = await FakeMaster().start()
    proc = await start_worker(master.port, 18099, tmp_path / "ws")
    try:
        assert proc.stdout is not None
        async with asyncio.timeout(20):
            line = await proc.stdout.readline()
        assert line.decode() == f"titan worker [18099] registered with 127.0.0.1:{master.port}\n"
        master.send(shell("sleep 30", job_id="J1"))
        await wait_until(lambda: bool(master.statuses_of("J1")), what="task running")
        (register,) = master.registers
        await wait_until(lambda: len(master.heartbeats) >= 2, what="heartbeats")
        pgids = [pid for pid in _children_groups(proc.pid)]
        assert pgids
        proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(20):
            out, err = await proc.communicate()
        assert proc.returncode == 0, err.decode()
        assert b"Traceback" not in err
        assert register.running == [] and master.heartbeats[-1][1].running == [TaskRef("J1", 1)]
        await wait_until(lambda: not any(group_members(g) for g in pgids), what="task group gone")
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.communicate()
        await master.aclose()


async def start_worker(master_port: int, port: int, workspace: Path, *extra: str) -> asyncio.subprocess.Process:
    """``python -m titan.worker`` as a real process, its output piped."""
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "titan.worker", "--master", f"127.0.0.1:{master_port}", "--port", str(port),
        "--workspace", str(workspace), "--heartbeat-interval", "0.05", "--log-level", "WARNING", *extra,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )  # fmt: skip


async def wait_registered(proc: asyncio.subprocess.Process, port: int) -> None:
    assert proc.stdout is not None
    async with asyncio.timeout(20):
        line = await proc.stdout.readline()
    assert line.startswith(f"titan worker [{port}] registered with".encode()), line


@pytest.mark.slow
async def test_one_worker_process_per_workspace_and_a_kill_9_frees_it(tmp_path: Path) -> None:
    master = await FakeMaster().start()
    workspace = tmp_path / "ws"
    first = await start_worker(master.port, 18095, workspace)
    procs = [first]
    try:
        await wait_registered(first, 18095)
        second = await start_worker(master.port, 18096, workspace)
        procs.append(second)
        async with asyncio.timeout(20):
            out, err = await second.communicate()
        assert second.returncode == 1 and out == b""
        assert err.decode() == (
            f"titan worker: workspace {workspace} is in use by another worker (pid {first.pid}, port 18095)\n"
        )
        assert [register.port for register in master.registers] == [18095]
        beats = len(master.heartbeats)
        await wait_until(lambda: len(master.heartbeats) > beats, what="the first one still heartbeating")
        first.kill()
        await first.communicate()
        third = await start_worker(master.port, 18097, workspace)
        procs.append(third)
        await wait_registered(third, 18097)
        third.send_signal(signal.SIGTERM)
        async with asyncio.timeout(20):
            _, err = await third.communicate()
        assert third.returncode == 0 and b"Traceback" not in err, err
    finally:
        for proc in procs:
            if proc.returncode is None:
                proc.kill()
                await proc.communicate()
        await master.aclose()


def _children_groups(parent: int) -> list[int]:
    """Process group ids of ``parent``'s direct children (each attempt leads its own)."""
    with open(f"/proc/{parent}/task/{parent}/children") as children:
        return [int(pid) for pid in children.read().split()]


def test_a_folder_named_titan_in_the_current_directory_does_not_break_the_worker(tmp_path: Path) -> None:
    # it makes `titan` a namespace package (no __file__) for code that runs from there
    (tmp_path / "titan").mkdir()
    check = "import titan, titan.worker.children as c; print(titan.__file__); print(c._PACKAGE_ROOT)"
    done = subprocess.run(
        [sys.executable, "-c", check], cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == str(Path(__file__).resolve().parents[2])
    shown = subprocess.run(
        [sys.executable, "-m", "titan.worker", "--help"], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert shown.returncode == 0 and "usage" in shown.stdout, shown.stderr


@pytest.mark.slow
async def test_a_worker_whose_token_the_master_refuses_exits_1_with_one_line(tmp_path: Path) -> None:
    async with LocalCluster(workers=0, master_args=["--token", "the-token"]) as cluster:
        proc = await start_worker(cluster.port, 18098, tmp_path / "ws", "--token", "not-the-token")
        async with asyncio.timeout(30):
            out, err = await proc.communicate()
    assert proc.returncode == 1 and out == b""
    (line,) = err.decode().splitlines()
    assert line.startswith("titan worker: the master refused the connection: authentication failed: wrong token")


def test_keep_attempts_takes_an_age_or_forever(capsys: pytest.CaptureFixture[str]) -> None:
    assert parse_args([], environ={})[0].keep_attempts_s == 7 * 86400
    assert parse_args(["--keep-attempts", "12h"], environ={})[0].keep_attempts_s == 12 * 3600
    assert parse_args(["--keep-attempts", "forever"], environ={})[0].keep_attempts_s is None
    with pytest.raises(SystemExit) as exited:
        parse_args(["--keep-attempts", "soon"], environ={})
    assert exited.value.code == 2
    assert "--keep-attempts: bad duration 'soon'" in capsys.readouterr().err
