"""Worker against a fake master on real sockets: register, run, report, reconnect, heartbeat."""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import signal
import socket
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from protocol import Drain, TaskRef, TaskStop
from tests.support import pid_alive, wait_until
from titan.config import WorkerSettings
from titan.errors import WorkspaceInUse
from titan.worker import Worker

from .fake_master import FakeMaster
from .helpers import FAST_WORKER, group_members, shell, shipped, task

MakeWorker = Callable[..., Awaitable[Worker]]


async def registered(worker: Worker) -> Worker:
    await wait_until(worker.registered.is_set, timeout_s=5, what=f"{worker.name} registered")
    return worker


async def test_registers_with_its_identity(master: FakeMaster, make_worker: MakeWorker) -> None:
    worker = await registered(await make_worker(port=18090, capacity=3, skills=("GENERAL", "GPU"), parent="parent-1"))
    (register,) = master.registers
    assert worker.name == register.name == "[18090]"
    assert worker.worker_id == register.worker_id == f"{socket.gethostname()}:18090"
    java = ["JAVA"] if shutil.which("java") else []  # offered on its own where java is on the PATH
    assert (register.port, register.capacity, register.skills) == (18090, 3, ["GENERAL", "GPU", *java])
    assert (register.parent, register.pid) == ("parent-1", os.getpid())
    assert (register.running, register.finished) == ([], [])


async def test_a_task_the_worker_fails_to_start_is_reported_failed_not_left_scheduled(
    master: FakeMaster, make_worker: MakeWorker, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    worker = await registered(await make_worker())
    assert worker._runner is not None

    def broken(task: object) -> None:
        raise RuntimeError("a bug in the runner")

    monkeypatch.setattr(worker._runner, "start", broken)
    master.send(shell("true", job_id="J1"))
    await wait_until(lambda: bool(master.statuses_of("J1")), what="J1 reported")
    assert master.statuses_of("J1") == [
        ("FAILED", None, "the worker could not start it: RuntimeError: a bug in the runner")
    ]
    assert "J1#1 could not be started" in caplog.text and worker.load == 0


async def test_configured_worker_id_wins(master: FakeMaster, make_worker: MakeWorker) -> None:
    worker = await registered(await make_worker(worker_id="w-fixed"))
    assert master.registers[0].worker_id == worker.worker_id == "w-fixed"


async def test_task_reports_running_then_completed(master: FakeMaster, make_worker: MakeWorker) -> None:
    worker = await registered(await make_worker(running_report_delay_s=0.0))
    master.send(shell("echo hello", job_id="J1"))
    master.send(shell("exit 5", job_id="J2"))
    await wait_until(lambda: len(master.statuses) == 4, what="four statuses")
    assert master.statuses_of("J1") == [("RUNNING", None, ""), ("COMPLETED", 0, "")]
    assert master.statuses_of("J2") == [("RUNNING", None, ""), ("FAILED", 5, "exit code 5")]
    running, done = (s for s in master.statuses if s.job_id == "J1")
    assert running.started_at is not None and done.started_at is not None and done.finished_at is not None
    assert running.started_at == done.started_at <= done.finished_at
    assert done.stdout == b"hello\n"
    # reported whole, so the worker's copy went back to the pool for the next job
    assert not (worker.settings.workspace / "jobs" / "J1").exists()
    assert not worker.running and worker.load == 0


async def test_an_attempt_reported_only_in_part_keeps_its_directory(
    master: FakeMaster, make_worker: MakeWorker
) -> None:
    worker = await registered(await make_worker(max_log_bytes=100, max_output_bytes=10))
    master.send(shell("head -c 1000 /dev/zero", job_id="LONG"))
    master.send(shell('head -c 50 /dev/zero > "$TITAN_OUTPUT_DIR/big"', job_id="OUT"))
    master.send(shell("echo short", job_id="SHORT"))
    await wait_until(lambda: len(master.statuses) >= 3 and not worker.running, what="three reports")
    (long,) = (s for s in master.statuses if s.job_id == "LONG" and s.state == "COMPLETED")
    assert long.truncated and long.stdout is not None and len(long.stdout) == 100
    jobs = worker.settings.workspace / "jobs"
    # the whole log and the outputs nobody received are only here: left for a person to look at
    assert (jobs / "LONG" / "attempt-1" / "stdout").stat().st_size == 1000
    assert (jobs / "OUT" / "attempt-1" / "outputs" / "big").stat().st_size == 50
    assert not (jobs / "SHORT").exists()


async def test_an_attempt_that_ends_within_the_running_delay_is_reported_once(
    master: FakeMaster, make_worker: MakeWorker
) -> None:
    await registered(await make_worker(running_report_delay_s=30.0))
    master.send(shell("exit 5", job_id="J1"))
    await wait_until(lambda: bool(master.statuses_of("J1")), what="its report")
    assert master.statuses_of("J1") == [("FAILED", 5, "exit code 5")]


async def test_a_longer_attempt_reports_running_once_the_delay_is_over(
    master: FakeMaster, make_worker: MakeWorker
) -> None:
    worker = await registered(await make_worker(running_report_delay_s=0.05))
    master.send(shell("sleep 30", job_id="J1"))
    await wait_until(lambda: bool(master.statuses_of("J1")), what="RUNNING")
    assert master.statuses_of("J1") == [("RUNNING", None, "")]
    await worker.aclose()


@pytest.mark.parametrize("delay_s", [0.0, 0.005])
async def test_a_task_that_arrives_with_the_register_answer_still_reports_running(
    master: FakeMaster, make_worker: MakeWorker, delay_s: float
) -> None:
    # the master dispatches the moment a worker registers: the TASK_START can share a read with the answer
    master.after_register = [shell("sleep 30", job_id="J1")]
    worker = await registered(await make_worker(running_report_delay_s=delay_s))
    await wait_until(lambda: bool(master.statuses_of("J1")), what="RUNNING")
    assert master.statuses_of("J1") == [("RUNNING", None, "")]
    await worker.aclose()


async def test_task_that_cannot_start_is_reported_failed_without_running(
    master: FakeMaster, make_worker: MakeWorker
) -> None:
    await registered(await make_worker())
    master.send(task(job_id="J1", kind="RUN", data="calc.py"))
    await wait_until(lambda: bool(master.statuses_of("J1")), what="a status")
    ((state, code, error),) = master.statuses_of("J1")
    assert (state, code) == ("FAILED", None) and "no file was shipped" in error


async def test_large_payload_is_stored_off_the_loop_and_runs(master: FakeMaster, make_worker: MakeWorker) -> None:
    script = b"print(len(open(__file__, 'rb').read()))\n#" + b"x" * 300_000 + b"\n"
    await registered(await make_worker())
    master.send(shipped("big.py", script, job_id="BIG"))
    await wait_until(lambda: ("COMPLETED", 0, "") in master.statuses_of("BIG"), what="big job done")
    (done,) = (s for s in master.statuses if s.job_id == "BIG" and s.state == "COMPLETED")
    assert done.stdout is not None and done.stdout.strip() == str(len(script)).encode()


async def test_heartbeats_arrive_at_the_interval_with_load(master: FakeMaster, make_worker: MakeWorker) -> None:
    worker = await registered(await make_worker(heartbeat_interval_s=0.02))
    master.send(shell("sleep 30", job_id="J1", slots=2))
    await wait_until(lambda: len(master.heartbeats) >= 5 and master.heartbeats[-1][1].load == 2, what="heartbeats")
    times = [t for t, _ in master.heartbeats]
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    assert max(gaps) < 0.5, gaps
    last = master.heartbeats[-1][1]
    assert last.running == [TaskRef("J1", 1)]
    worker.running[TaskRef("J1", 1)].stop("test over")


async def test_shorter_master_interval_wins(make_worker: MakeWorker, master: FakeMaster) -> None:
    master.heartbeat_interval_s = 0.02  # the worker's own setting is 10 s
    await registered(await make_worker())
    await wait_until(lambda: len(master.heartbeats) >= 3, what="heartbeats at the master's pace")


async def test_stop_kills_the_group_and_reports_the_reason(master: FakeMaster, make_worker: MakeWorker) -> None:
    worker = await registered(await make_worker())
    master.send(shell("sleep 30 & sleep 30; wait", job_id="J1"))
    await wait_until(lambda: TaskRef("J1", 1) in worker.running, what="running")
    await wait_until(lambda: len(group_members(worker.running_pids()[TaskRef("J1", 1)])) == 3, what="sh and 2 sleeps")
    pgid = worker.running_pids()[TaskRef("J1", 1)]
    master.send(TaskStop("J1", 1, reason="cancelled"))
    await wait_until(lambda: len(master.statuses_of("J1")) == 2, what="final status")
    assert master.statuses_of("J1")[-1] == ("FAILED", -15, "stopped: cancelled")
    await wait_until(lambda: not group_members(pgid), what="whole group gone")


async def test_result_finished_while_disconnected_is_reported_in_register(
    master: FakeMaster, make_worker: MakeWorker, tmp_path: Path
) -> None:
    go = tmp_path / "go"
    worker = await registered(await make_worker())
    master.send(shell(f"while [ ! -e {go} ]; do sleep 0.01; done; echo done", job_id="J1"))
    master.send(shell("sleep 30", job_id="J2"))
    await wait_until(lambda: len(master.statuses) == 2, what="both running")

    await master.stop_listening()
    await master.drop()
    await wait_until(lambda: not worker.registered.is_set(), what="worker noticed the drop")
    go.touch()
    await wait_until(lambda: len(worker.outbox) == 1, what="result kept in the outbox")
    assert TaskRef("J2", 1) in worker.running  # tasks keep running without a master

    await master.start()  # same port again
    await registered(worker)
    second = master.registers[-1]
    assert [(s.job_id, s.state, s.exit_code) for s in second.finished] == [("J1", "COMPLETED", 0)]
    assert second.running == [TaskRef("J2", 1)]
    assert worker.outbox == []
    assert worker.registrations == 2


async def test_results_it_could_not_deliver_before_stopping_go_with_the_next_runs_register(
    master: FakeMaster, make_worker: MakeWorker, tmp_path: Path
) -> None:
    workspace = tmp_path / "kept"
    worker = await registered(await make_worker(port=18095, workspace=workspace))
    master.send(shell("sleep 30", job_id="J1"))
    await wait_until(lambda: TaskRef("J1", 1) in worker.running, what="running")
    await master.stop_listening()
    await master.drop()  # the master is away while the worker is stopped in order
    await wait_until(lambda: not worker.registered.is_set(), what="worker noticed the drop")
    await worker.aclose()
    assert (workspace / "undelivered.msgpack").exists()

    await master.start()
    again = await registered(await make_worker(port=18095, workspace=workspace))
    (kept,) = master.registers[-1].finished
    assert (kept.job_id, kept.state, kept.handed_back) == ("J1", "FAILED", True)
    assert again.outbox == [] and not (workspace / "undelivered.msgpack").exists()


async def test_an_unreadable_file_of_kept_results_is_set_aside_in_one_line(
    master: FakeMaster, make_worker: MakeWorker, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    workspace = tmp_path / "kept"
    workspace.mkdir()
    (workspace / "undelivered.msgpack").write_bytes(b"\xc1 not msgpack")
    await registered(await make_worker(workspace=workspace))
    assert master.registers[-1].finished == []
    assert (workspace / "undelivered.unreadable").exists()
    assert "is not a list of results" in caplog.text


async def test_stale_attempts_are_killed_on_register(
    master: FakeMaster, make_worker: MakeWorker, tmp_path: Path
) -> None:
    worker = await registered(await make_worker())
    master.send(shell("sleep 30", job_id="OLD"))
    await wait_until(lambda: TaskRef("OLD", 1) in worker.running, what="running")
    pid = worker.running_pids()[TaskRef("OLD", 1)]
    master.stale = [TaskRef("OLD", 1)]
    await master.drop()
    await wait_until(lambda: len(master.registers) == 2, what="re-registered")
    assert master.registers[1].running == [TaskRef("OLD", 1)]
    await wait_until(lambda: not pid_alive(pid), what="stale attempt killed")
    await wait_until(lambda: ("FAILED", -15, "stopped: stale attempt") in master.statuses_of("OLD"), what="report")


async def test_drain_refuses_new_tasks_and_signals_when_idle(master: FakeMaster, make_worker: MakeWorker) -> None:
    worker = await registered(await make_worker())
    master.send(shell("sleep 0.2", job_id="J1"))
    await wait_until(lambda: TaskRef("J1", 1) in worker.running, what="running")
    master.send(Drain(reason="scale down"))
    master.send(shell("true", job_id="J2"))
    await wait_until(lambda: bool(master.statuses_of("J2")), what="refusal")
    assert master.statuses_of("J2") == [("FAILED", None, "draining")]
    assert not worker.drained.is_set()
    await wait_until(worker.drained.is_set, what="drained once idle")
    assert not worker.running and worker.outbox == []  # the result went out before it said so
    await wait_until(lambda: master.statuses_of("J1")[-1] == ("COMPLETED", 0, ""), what="result arrived")


async def test_simulated_crash_kills_everything_and_reports_nothing(
    master: FakeMaster, make_worker: MakeWorker
) -> None:
    worker = await registered(await make_worker())
    master.send(shell("sleep 30", job_id="J1"))
    await wait_until(lambda: bool(master.statuses_of("J1")), what="running reported")
    pid = worker.running_pids()[TaskRef("J1", 1)]
    worker.simulate_crash()
    await wait_until(lambda: not pid_alive(pid), what="group killed")
    await wait_until(lambda: not worker.running, what="reaped")
    await wait_until(lambda: all(not peer.is_open for peer in master.peers), what="connection gone")
    assert master.statuses_of("J1") == [("RUNNING", None, "")]
    assert len(master.registers) == 1  # it does not come back


async def test_one_worker_per_workspace_until_it_crashes(
    master: FakeMaster, make_worker: MakeWorker, tmp_path: Path
) -> None:
    workspace = tmp_path / "shared"
    first = await registered(await make_worker(port=18091, workspace=workspace))
    with pytest.raises(WorkspaceInUse, match=r"is in use by another worker \(pid \d+, port 18091\)$"):
        await make_worker(port=18092, workspace=workspace)
    assert first.registered.is_set() and len(master.registers) == 1  # the refused one never dialled
    first.simulate_crash()  # as kill -9 would, the crash gives the workspace back
    await registered(await make_worker(port=18093, workspace=workspace))


async def test_aclose_kills_running_tasks(master: FakeMaster, make_worker: MakeWorker) -> None:
    worker = await registered(await make_worker())
    master.send(shell("sleep 30", job_id="J1"))
    await wait_until(lambda: TaskRef("J1", 1) in worker.running, what="running")
    pid = worker.running_pids()[TaskRef("J1", 1)]
    await worker.aclose()
    assert not worker.running and not pid_alive(pid)


async def test_reconnects_never_wait_longer_than_the_masters_heartbeat_interval(make_worker: MakeWorker) -> None:
    # the master times a silent worker out after about three intervals: one that waited its own
    # longest backoff (10 s) could come back too late, and what it finished meanwhile would be rerun
    master = await FakeMaster(heartbeat_interval_s=0.5).start()
    try:
        worker = await make_worker(master_port=master.port, reconnect_max_s=10.0)
        assert max(worker._backoff_s(30) for _ in range(50)) > 0.5  # before it has heard the interval
        await registered(worker)
        assert max(worker._backoff_s(30) for _ in range(50)) <= 0.5
    finally:
        await master.aclose()


async def test_aclose_hands_running_attempts_back_over_the_open_connection(
    master: FakeMaster, make_worker: MakeWorker
) -> None:
    worker = await registered(await make_worker())
    master.send(shell("sleep 30", job_id="J1"))
    await wait_until(lambda: TaskRef("J1", 1) in worker.running, what="running")
    await worker.aclose()
    (final,) = [status for status in master.statuses if status.job_id == "J1" and status.state != "RUNNING"]
    assert (final.state, final.error, final.handed_back) == ("FAILED", "stopped: worker shutting down", True)
    # and before it stopped anything, it said it was leaving
    assert master.heartbeats[-1][1].leaving


async def test_a_task_that_arrives_while_the_worker_shuts_down_is_handed_back(
    master: FakeMaster, make_worker: MakeWorker
) -> None:
    worker = await registered(await make_worker(kill_grace_s=60.0))
    # a job that ignores SIGTERM keeps the worker shutting down (connected) for its grace period
    master.send(shell("trap '' TERM; sleep 30", job_id="SLOW"))
    await wait_until(lambda: TaskRef("SLOW", 1) in worker.running, what="running")
    slow = worker.running_pids()[TaskRef("SLOW", 1)]
    closing = asyncio.ensure_future(worker.aclose())
    await wait_until(lambda: worker._closed, what="shutting down")
    master.send(shell("true", job_id="LATE"))
    await wait_until(lambda: bool(master.statuses_of("LATE")), what="LATE handed back")
    (late,) = [status for status in master.statuses if status.job_id == "LATE"]
    assert (late.state, late.handed_back, late.started_at) == ("FAILED", True, None)
    os.killpg(slow, signal.SIGKILL)  # rather than wait out the grace period
    await closing


async def test_retries_with_backoff_until_a_master_appears(
    make_worker: MakeWorker, caplog: pytest.LogCaptureFixture
) -> None:
    with socket.socket() as probe:  # a port with nobody listening
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    caplog.set_level(logging.DEBUG, logger="titan.worker")
    worker = await make_worker(master_port=port)
    await wait_until(lambda: "retry 5 " in caplog.text, what="five retries")
    lines = [r.getMessage() for r in caplog.records if "cannot reach the master" in r.getMessage()]
    assert all("\n" not in line for line in lines) and not any(r.exc_info for r in caplog.records)
    warned = [r.getMessage().split("; ")[-1].split()[1] for r in caplog.records if r.levelno == logging.WARNING]
    assert warned[:3] == ["1", "2", "4"]  # retries 3 and 5 are DEBUG: a long outage stays a few lines
    late = await FakeMaster(port=port).start()
    try:
        await registered(worker)
    finally:
        await worker.aclose()
        await late.aclose()


async def test_garbage_from_the_master_is_answered_not_fatal(master: FakeMaster, make_worker: MakeWorker) -> None:
    from protocol import Opcode, encode_frame

    worker = await registered(await make_worker())
    master.connection.write(encode_frame(Opcode.TASK_START, {"job_id": 3}))  # missing and mistyped fields
    master.send(shell("true", job_id="J1"))
    await wait_until(lambda: ("COMPLETED", 0, "") in master.statuses_of("J1"), what="still works")
    assert worker.registered.is_set()


def test_worker_runs_on_uvloop(tmp_path: Path) -> None:
    uvloop = pytest.importorskip("uvloop")

    async def scenario() -> list[tuple[str, int | None, str]]:
        master = await FakeMaster().start()
        settings = WorkerSettings(
            **{**FAST_WORKER, "master_port": master.port, "workspace": tmp_path / "ws", "running_report_delay_s": 30.0}
        )
        worker = Worker(settings)
        try:
            await worker.start()
            await registered(worker)
            master.send(shell("echo a && exit 2", job_id="U1"))
            await wait_until(lambda: bool(master.statuses_of("U1")), what="U1 done")
            return master.statuses_of("U1")
        finally:
            await worker.aclose()
            await master.aclose()

    assert uvloop.run(scenario()) == [("FAILED", 2, "exit code 2")]  # too short for a RUNNING report


async def test_a_worker_refuses_a_masters_workspace(tmp_path: Path) -> None:
    (tmp_path / "wal").mkdir()  # the master's write-ahead log lives here: its job folders too
    worker = Worker(WorkerSettings(**{**FAST_WORKER, "workspace": tmp_path}))
    with pytest.raises(ValueError, match="is a master's"):
        await worker.start()
    await worker.aclose()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["wal"]  # nothing of the worker's was made
