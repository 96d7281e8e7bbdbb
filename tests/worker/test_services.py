"""The service supervisor and the child-worker command, with real short-lived processes."""

from __future__ import annotations

import os
import signal
import socket
import sys
from pathlib import Path

import pytest

from tests.support import pid_alive, wait_until
from titan.net.tls import TlsClient
from titan.worker.children import ChildDefaults, ChildWorkers, PortTaken
from titan.worker.services import Service, ServiceEvent, ServicePolicy

POLICY = ServicePolicy(
    settle_s=0.05, probe_interval_s=0.01, max_restarts=2, restart_backoff_s=0.01, restart_backoff_cap_s=0.05
)
SH = "/bin/sh"


def make(tmp_path: Path, script: str, events: list[ServiceEvent], **kw: object) -> Service:
    return Service(
        "svc",
        [SH, "-c", script],
        dict(os.environ),
        str(tmp_path),
        policy=kw.pop("policy", POLICY),  # type: ignore[arg-type]
        on_event=lambda service, event: events.append(event),
        **kw,  # type: ignore[arg-type]
    )


async def test_up_after_the_settle_time_and_stop_ends_the_group(tmp_path: Path) -> None:
    events: list[ServiceEvent] = []
    service = make(tmp_path, "sleep 60 & echo started; wait", events)
    service.start()
    await wait_until(lambda: service.up, what="up")
    assert events == [ServiceEvent.STARTED, ServiceEvent.UP]
    pid = service.pid
    assert pid is not None
    end = await service.aclose("enough")
    assert (end.stopped, end.error) == (True, "stopped: enough")
    assert events[-1] is ServiceEvent.ENDED and not pid_alive(pid)
    assert (tmp_path / "stdout").read_text() == "started\n"


async def test_a_crash_restarts_with_backoff_then_gives_up(tmp_path: Path) -> None:
    events: list[ServiceEvent] = []
    service = make(tmp_path, "echo run; exit 3", events)
    service.start()
    end = await service.ended
    assert (end.exit_code, end.error) == (3, "exited with code 3; gave up after 2 restart(s)")
    assert service.restarts == 2
    assert events.count(ServiceEvent.RESTARTING) == 2 and events[-1] is ServiceEvent.ENDED
    assert (tmp_path / "stdout").read_text() == "run\n" * 3  # one log across restarts


async def test_killed_from_outside_it_comes_back(tmp_path: Path) -> None:
    events: list[ServiceEvent] = []
    service = make(tmp_path, "exec sleep 60", events)
    service.start()
    await wait_until(lambda: service.up, what="up")
    first = service.pid
    assert first is not None
    os.kill(first, signal.SIGKILL)
    await wait_until(lambda: service.up and service.pid != first, what="up again")
    assert service.restarts == 1 and service.last_error == "killed by SIGKILL"
    await service.aclose("done")


async def test_exit_zero_on_its_own_is_an_end_not_a_crash(tmp_path: Path) -> None:
    events: list[ServiceEvent] = []
    service = make(tmp_path, "exit 0", events)
    service.start()
    end = await service.ended
    assert end.ok and service.restarts == 0


async def test_with_a_port_it_is_up_only_once_the_port_answers(tmp_path: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    events: list[ServiceEvent] = []
    server = (
        "import socket, time; print('waiting', flush=True); time.sleep(0.3); s = socket.socket(); "
        f"s.bind(('127.0.0.1', {port})); s.listen(); time.sleep(60)"
    )
    service = Service(
        "web",
        [sys.executable, "-c", server],
        dict(os.environ),
        str(tmp_path),
        policy=ServicePolicy(settle_s=0, probe_interval_s=0.01),  # without the port it would be up at once
        on_event=lambda s, e: events.append(e),
        port=port,
    )
    service.start()
    await wait_until(lambda: "waiting" in (tmp_path / "stdout").read_text(), what="the process to run")
    assert not service.up
    await wait_until(lambda: service.up, what="the port to answer")
    await service.aclose("done")


async def test_stop_during_a_restart_backoff_ends_at_once(tmp_path: Path) -> None:
    slow = ServicePolicy(settle_s=0.05, max_restarts=5, restart_backoff_s=30)
    events: list[ServiceEvent] = []
    service = make(tmp_path, "exit 1", events, policy=slow)
    service.start()
    await wait_until(lambda: ServiceEvent.RESTARTING in events, what="the crash")
    end = await service.aclose("no more")
    assert end.stopped and end.exit_code is None


async def test_patience_lets_it_leave_on_its_own_first(tmp_path: Path) -> None:
    events: list[ServiceEvent] = []
    marker = tmp_path / "leave"
    service = make(tmp_path, f"while [ ! -e {marker} ]; do sleep 0.01; done; exit 0", events)
    service.start()
    service.stop("drain", patience_s=30)
    marker.touch()
    end = await service.ended
    assert (end.exit_code, end.stopped) == (0, True)  # it left by itself; no signal was needed


async def test_a_command_that_cannot_start_ends_the_service(tmp_path: Path) -> None:
    events: list[ServiceEvent] = []
    service = Service(
        "nope", ["/no/such/binary"], {}, str(tmp_path), policy=POLICY, on_event=lambda s, e: events.append(e)
    )
    service.start()
    end = await service.ended
    assert end.error.startswith("cannot start binary") and events == [ServiceEvent.ENDED]


def test_child_commands_reserve_ports_and_name_the_parent(tmp_path: Path) -> None:
    defaults = ChildDefaults(master="127.0.0.1:9090", capacity=3, skills=("GENERAL", "GPU"), heartbeat_interval_s=0.5,
                             token="secret")  # fmt: skip
    children = ChildWorkers("host:8080", tmp_path, defaults, base_env={"PATH": "/bin"}, policy=POLICY)
    cmd = children.command(8081, spawn_id="WORKER_A")
    assert cmd.worker_id == "host:8080/8081"
    argv = " ".join(cmd.argv)
    for part in ("-m titan.worker", "--parent host:8080", "--port 8081", "--spawn-id WORKER_A", "--capacity 3",
                 "--skills GENERAL,GPU", "--id host:8080/8081"):  # fmt: skip
        assert part in argv
    assert "secret" not in argv and cmd.env["TITAN_TOKEN"] == "secret"
    assert Path(cmd.directory).is_dir()
    with pytest.raises(PortTaken):
        children.command(8081, spawn_id="again")
    free = children.command(0, spawn_id="any")
    assert free.port != 0 and free.port != 8081
    children.release(8081)
    assert children.command(8081, spawn_id="back").port == 8081


def test_a_child_inherits_live_logs_in_clear_and_the_memory_its_parent_was_given(tmp_path: Path) -> None:
    defaults = ChildDefaults(
        master="10.0.0.5:9090",
        capacity=1,
        skills=("GENERAL",),
        heartbeat_interval_s=1.0,
        token=None,
        tls=TlsClient(Path("/etc/titan/ca.pem")),
        live_logs_in_clear=True,
        memory_mb=2048,
    )
    children = ChildWorkers("w1", tmp_path, defaults, base_env={}, policy=ServicePolicy())
    argv = children.command(0, spawn_id="spawn-1").argv
    assert "--live-logs-in-clear" in argv and argv[argv.index("--memory") + 1] == "2048"


def test_a_child_keeps_left_folders_as_long_as_its_parent(tmp_path: Path) -> None:
    def keep_flag(keep: float | None) -> str:
        defaults = ChildDefaults(master="127.0.0.1:9090", capacity=1, skills=("GENERAL",), heartbeat_interval_s=1.0,
                                 token=None, keep_attempts_s=keep)  # fmt: skip
        argv = ChildWorkers("w1", tmp_path, defaults, base_env={}, policy=ServicePolicy()).command(0, spawn_id="s").argv
        return argv[argv.index("--keep-attempts") + 1]

    assert keep_flag(3600.0) == "3600.0"
    assert keep_flag(None) == "forever"


async def test_a_crash_after_a_long_healthy_run_starts_the_restart_count_afresh(tmp_path: Path) -> None:
    # each run lasts longer than stable_s before it fails: never a crash loop, so never given up on
    steady = ServicePolicy(settle_s=0.01, max_restarts=2, restart_backoff_s=0.01, stable_s=0.05)
    events: list[ServiceEvent] = []
    service = make(tmp_path, "sleep 0.1; exit 3", events, policy=steady)
    service.start()
    await wait_until(lambda: service.restarts >= 4, timeout_s=20, what="four restarts")
    assert not service.ended.done()  # max_restarts is 2: only restarts in a row count against it
    await service.aclose("done")
