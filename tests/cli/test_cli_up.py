"""titan up's process supervision, with stand-in children that print readiness lines."""

from __future__ import annotations

import os
import re
import select
import signal
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from titan.cli.up import MASTER_ADDRESS, ChildSpec, ClusterStartError, LocalCluster, cluster_specs, perm_files_warning
from titan.workspace import WorkspaceLock

# prints its readiness line (argv[1]) and then lives until signalled
READY_THEN_SLEEP = "import sys, time; print('booting'); print(sys.argv[1]); time.sleep(120)"
FAIL = "import sys; print('booting'); print(sys.argv[1]); sys.exit(3)"
SILENT = "import time; time.sleep(120)"


def child(tmp_path: Path, name: str, script: str, line: str, marker: str | None = None) -> ChildSpec:
    return ChildSpec(name, (sys.executable, "-c", script, line), marker or line, tmp_path / "logs" / f"{name}.log")


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_cluster_specs_use_the_documented_flags(tmp_path: Path) -> None:
    master, first, second = cluster_specs(workers=2, port=9191, capacity=3, workspace=tmp_path, python="py")
    assert master.argv == (
        "py",
        "-m",
        "titan.master",
        "--host",
        "127.0.0.1",
        "--port",
        "9191",
        "--workspace",
        str(tmp_path),
    )
    assert master.ready_marker == "titan master listening on"
    assert first.argv == (
        *("py", "-m", "titan.worker", "--master", MASTER_ADDRESS, "--port", "8081", "--capacity", "3"),
        *("--workspace", str(tmp_path / "worker-8081")),  # its own folder: never the master's
    )
    assert first.ready_marker == "titan worker [8081] registered with"
    assert second.log_path == tmp_path / "logs" / "worker-8082.log"
    assert master.log_path == tmp_path / "logs" / "master.log"


async def test_a_master_on_port_0_gets_its_workers_dialling_the_port_it_took(tmp_path: Path) -> None:
    cluster = LocalCluster(
        cluster_specs(workers=1, port=0, capacity=1, workspace=tmp_path / "ws", first_worker_port=18391),
        ready_timeout_s=60,
        grace_s=10,
    )
    async with cluster:  # the worker's ready line is its registration with the master
        assert cluster.master_address is not None and cluster.master_address[1] != 0
    log = (tmp_path / "ws" / "logs" / "worker-18391.log").read_text()
    assert f"registered with 127.0.0.1:{cluster.master_address[1]}" in log


async def test_start_waits_for_readiness_logs_to_files_and_stops_everything(tmp_path: Path) -> None:
    specs = [
        child(tmp_path, "master", READY_THEN_SLEEP, "titan master listening on 127.0.0.1:9393", "listening on"),
        child(tmp_path, "worker-8081", READY_THEN_SLEEP, "titan worker [8081] registered with 127.0.0.1:9393"),
        child(tmp_path, "worker-8082", READY_THEN_SLEEP, "titan worker [8082] registered with 127.0.0.1:9393"),
    ]
    announced: list[str] = []
    cluster = LocalCluster(
        specs, ready_timeout_s=20, grace_s=5, on_ready=lambda spec, line: announced.append(spec.name)
    )
    async with cluster:
        pids = [c.process.pid for c in cluster.children]
        assert all(alive(pid) for pid in pids)
        assert announced[0] == "master" and sorted(announced[1:]) == ["worker-8081", "worker-8082"]
    assert not any(alive(pid) for pid in pids)
    assert cluster.children == []
    log = (tmp_path / "logs" / "worker-8082.log").read_text()
    assert log == "booting\ntitan worker [8082] registered with 127.0.0.1:9393\n"


async def test_master_address_comes_from_the_readiness_line(tmp_path: Path) -> None:
    spec = child(tmp_path, "master", READY_THEN_SLEEP, "12:00:00 INFO titan master listening on 10.0.0.5:9494")
    spec = ChildSpec(spec.name, spec.argv, "titan master listening on", spec.log_path)
    async with LocalCluster([spec], grace_s=5) as cluster:
        assert cluster.master_address == ("10.0.0.5", 9494)


async def test_child_exiting_early_reports_its_last_line(tmp_path: Path) -> None:
    spec = child(tmp_path, "master", FAIL, "error: port 9090 is already in use", "titan master listening on")
    with pytest.raises(ClusterStartError) as info:
        await LocalCluster([spec]).start()
    assert str(info.value) == "master exited with code 3 before it was ready: error: port 9090 is already in use"


async def test_a_workspace_held_by_another_master_is_one_line(tmp_path: Path) -> None:
    """A second ``titan up`` on the same (default) workspace: the real master refuses it at once."""
    workspace = tmp_path / "ws"
    held = WorkspaceLock.acquire(workspace, "master", port=9090)  # a first cluster's master, for this test
    try:
        cluster = LocalCluster(cluster_specs(workers=1, port=0, capacity=1, workspace=workspace), grace_s=5)
        with pytest.raises(ClusterStartError) as info:
            await cluster.start()
    finally:
        held.release()
    assert str(info.value) == (
        "master exited with code 1 before it was ready: "
        f"titan master: workspace {workspace} is in use by another master (pid {os.getpid()}, port 9090)"
    )
    assert cluster.children == []


async def test_a_failing_worker_stops_the_master_too(tmp_path: Path) -> None:
    specs = [
        child(tmp_path, "master", READY_THEN_SLEEP, "titan master listening on 127.0.0.1:1"),
        child(tmp_path, "worker-8081", FAIL, "cannot connect", "registered with"),
    ]
    cluster = LocalCluster(specs, grace_s=5)
    with pytest.raises(ClusterStartError, match="worker-8081 exited with code 3"):
        await cluster.start()
    assert cluster.children == []
    assert "titan master listening" in (tmp_path / "logs" / "master.log").read_text()


async def test_silent_child_times_out(tmp_path: Path) -> None:
    spec = child(tmp_path, "master", SILENT, "", "titan master listening on")
    with pytest.raises(ClusterStartError, match=r"master did not report ready within 0.3s \(see .*master.log\)"):
        await LocalCluster([spec], ready_timeout_s=0.3, grace_s=5).start()


async def test_sigterm_ignored_means_sigkill_after_grace(tmp_path: Path) -> None:
    stubborn = (
        "import signal, sys, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print(sys.argv[1]); time.sleep(120)"
    )
    cluster = LocalCluster([child(tmp_path, "master", stubborn, "ready")], grace_s=0.2)
    async with cluster:
        process = cluster.children[0].process
    assert process.returncode == -signal.SIGKILL


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux only")
def test_children_die_with_a_killed_parent(tmp_path: Path) -> None:
    helper = textwrap.dedent(
        f"""
        import asyncio, sys
        from pathlib import Path
        from titan.cli.up import ChildSpec, LocalCluster

        async def main():
            spec = ChildSpec("master", (sys.executable, "-c", {READY_THEN_SLEEP!r}, "ready"), "ready", Path(sys.argv[1]))
            cluster = LocalCluster([spec])
            await cluster.start()
            print(cluster.children[0].process.pid, flush=True)
            await asyncio.Event().wait()

        asyncio.run(main())
        """
    )
    parent = subprocess.Popen(
        [sys.executable, "-c", helper, str(tmp_path / "m.log")], stdout=subprocess.PIPE, text=True
    )
    assert parent.stdout is not None
    grandchild = int(parent.stdout.readline())
    pidfd = os.pidfd_open(grandchild)
    try:
        parent.kill()  # SIGKILL: no cleanup code of the parent runs
        parent.wait(timeout=10)
        parent.stdout.close()
        readable, _, _ = select.select([pidfd], [], [], 10)  # the pidfd turns readable when the process exits
        assert readable == [pidfd], "the child outlived its killed parent"
    finally:
        if alive(grandchild):
            os.kill(grandchild, signal.SIGKILL)
        os.close(pidfd)


def test_the_demo_on_its_own_local_cluster_keeps_master_and_workers_apart(tmp_path: Path) -> None:
    """Master and workers of ``titan up`` / ``titan demo`` as real processes, sharing one workspace root.

    The workers recycle and delete their attempt folders: in the master's own folder that once took
    the parents' outputs away from a DAG's stitch job.
    """
    out = tmp_path / "m.png"
    repo = Path(__file__).resolve().parents[2]
    done = subprocess.run(
        [sys.executable, "-m", "titan.cli", "demo", "mandelbrot", "--local", "--size", "64", "--tiles", "8",
         "--workspace", str(tmp_path / "ws"), "--out", str(out)],
        cwd=repo, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert out.read_bytes().startswith(b"\x89PNG")
    workspace = tmp_path / "ws"
    assert {"wal", "jobs", "worker-8081", "worker-8082"} <= {p.name for p in workspace.iterdir()}
    tiles = sorted(workspace.glob("jobs/*-tile-*/attempt-1/outputs/*"))
    assert len(tiles) == 8  # the master kept every tile's output; the workers kept none of their scratch
    assert not list(workspace.glob("worker-*/jobs/*"))


@pytest.mark.slow
def test_titan_up_reading_a_pipe_that_never_ends_still_stops_on_sigterm(tmp_path: Path) -> None:
    reader, writer = os.pipe()  # stdin: open, and never a line
    worker_port = _free_port()
    up = subprocess.Popen(
        [sys.executable, "-m", "titan.cli", "up", "--port", "0", "--workers", "1",
         "--first-worker-port", str(worker_port), "--workspace", str(tmp_path / "ws")],
        stdin=reader, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    os.close(reader)
    try:
        assert up.stdout is not None
        seen = []
        for line in up.stdout:  # until the cluster is up and the script reader waits on the pipe
            seen.append(line)
            if line.startswith("ready") and "worker" in line:
                break
        assert seen[0].startswith("starting a master on 127.0.0.1 (a free port) and 1 worker(s)")
        assert re.match(r"ready master on 127\.0\.0\.1:[1-9]\d* ", seen[1]), seen  # the port it took
        up.send_signal(signal.SIGTERM)
        assert up.wait(timeout=30) == 128 + signal.SIGTERM
    finally:
        os.close(writer)
        if up.poll() is None:
            up.kill()
            up.wait()
        if up.stdout is not None:
            up.stdout.close()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_titan_up_says_when_its_folder_has_no_perm_files(tmp_path: Path) -> None:
    assert perm_files_warning(tmp_path).startswith(f"no perm_files/ folder in {tmp_path}: RUN jobs")
    (tmp_path / "perm_files").mkdir()
    assert perm_files_warning(tmp_path) == ""
