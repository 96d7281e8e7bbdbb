"""ProcessRunner against real processes: exit codes, captured output, interpreters, kills."""

from __future__ import annotations

import json
import os
import shutil
import stat
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.support import pid_alive, wait_until
from titan.worker.command import SHELL, CommandBuilder, LaunchError
from titan.worker.engine import AttemptResult, ProcessRunner

from .helpers import outputs, run, shell, shipped, task

PY_DUMP = b"""\
import json, os, sys
json.dump({"argv": sys.argv[1:], "exe": sys.executable, "cwd": os.getcwd(),
           "env": {k: v for k, v in os.environ.items() if k.startswith(("TITAN_", "EXTRA"))}}, sys.stdout)
"""


# ---------------------------------------------------------------- exit codes and output


async def test_exit_zero_completes(runner: ProcessRunner) -> None:
    before = time.time()
    result = await run(runner, shell("true"))
    assert (result.state, result.exit_code, result.error) == ("COMPLETED", 0, "")
    assert before <= result.started_at <= result.finished_at <= time.time()
    assert result.to_status().state == "COMPLETED"


async def test_non_zero_exit_fails_with_its_code(runner: ProcessRunner) -> None:
    result = await run(runner, shell("echo a && exit 3"))
    assert (result.state, result.exit_code, result.error) == ("FAILED", 3, "exit code 3")
    assert outputs(runner) == (b"a\n", b"")


async def test_stdout_and_stderr_are_captured_exactly(runner: ProcessRunner) -> None:
    script = (
        b"import sys\nsys.stdout.buffer.write(b'out\\x00\\xff\\nno newline')\nsys.stderr.buffer.write(b'err\\r\\n')\n"
    )
    result = await run(runner, shipped("write.py", script))
    assert result.exit_code == 0
    assert outputs(runner) == (b"out\x00\xff\nno newline", b"err\r\n")


async def test_py_runs_with_this_interpreter_in_the_attempt_directory(runner: ProcessRunner) -> None:
    result = await run(runner, shipped("dump.py", PY_DUMP, args=["a b", "--flag"], env={"EXTRA": "x"}))
    assert result.exit_code == 0, outputs(runner)
    seen = json.loads(outputs(runner)[0])
    directory = runner.workspace / "jobs" / "J1" / "attempt-1"
    assert seen["exe"] == sys.executable
    assert seen["argv"] == ["a b", "--flag"]
    assert Path(seen["cwd"]) == directory
    expected = {
        "TITAN_JOB_ID": "J1",
        "TITAN_ATTEMPT": "1",
        "TITAN_WORKER": "w-test",
        "TITAN_OUTPUT_DIR": str(directory / "outputs"),
        "EXTRA": "x",
    }
    assert seen["env"].items() >= expected.items()
    assert (directory / "outputs").is_dir()
    assert Path.cwd() != directory  # the runner changed back


async def test_a_job_env_replaces_the_workers_own_but_not_the_titan_variables(
    tmp_path: Path, spawn_method: str
) -> None:
    base = {"PATH": os.environ["PATH"], "SHARED": "worker", "": "nameless", "A=B": "unnamable"}
    runner = ProcessRunner(tmp_path / "ws", worker_id="w-env", base_env=base)
    try:
        dump_all = b"import json, os; print(json.dumps(dict(os.environ)))"
        job_env = {"SHARED": "job", "TITAN_OUTPUT_DIR": "/elsewhere"}
        result = await run(runner, shipped("dump.py", dump_all, env=job_env))
        assert result.exit_code == 0, outputs(runner)
        seen = json.loads(outputs(runner)[0])
        directory = runner.workspace / "jobs" / "J1" / "attempt-1"
        assert (seen["SHARED"], seen["TITAN_OUTPUT_DIR"]) == ("job", str(directory / "outputs"))
        assert "" not in seen and "A" not in seen  # names exec cannot carry are left out, not fatal
        second = await run(runner, shipped("dump.py", dump_all, job_id="J2"))
        assert second.exit_code == 0
        assert json.loads(outputs(runner, "J2")[0])["SHARED"] == "worker"  # nothing stuck to the base
    finally:
        await runner.aclose()


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
async def test_sh_runs_with_bash_even_without_exec_bit(runner: ProcessRunner) -> None:
    script = b'echo "bash $BASH_VERSION args:$*"\n'
    result = await run(runner, shipped("hello.sh", script, mode=0o644, args=["1", "2"]))
    assert result.exit_code == 0
    out = outputs(runner)[0].decode()
    assert out.startswith("bash ") and out.strip().endswith("args:1 2") and len(out.split()[1]) > 1


async def test_executable_binary_payload_keeps_its_mode_and_is_cached_once(runner: ProcessRunner) -> None:
    binary = Path(shutil.which("echo") or "/bin/echo").read_bytes()
    first = shipped("myecho", binary, mode=0o755, args=["hi", "there"])
    result = await run(runner, first)
    assert result.exit_code == 0, result
    assert outputs(runner)[0] == b"hi there\n"
    cached = runner.workspace / "cache" / first.payload_hash / "myecho"
    assert stat.S_IMODE(cached.stat().st_mode) == 0o755
    first_write = cached.stat().st_mtime_ns
    again = await run(runner, shipped("myecho", binary, mode=0o755, job_id="J2", args=["again"]))
    assert again.exit_code == 0
    assert cached.stat().st_mtime_ns == first_write
    assert outputs(runner, "J2")[0] == b"again\n"


async def test_cached_payload_runs_without_being_shipped_again(runner: ProcessRunner) -> None:
    shipped_task = shipped("ok.py", b"print('cached')\n")
    assert (await run(runner, shipped_task)).exit_code == 0
    bare = task(job_id="J2", kind="RUN", data="ok.py", payload_hash=shipped_task.payload_hash, payload_name="ok.py")
    result = await run(runner, bare)
    assert result.exit_code == 0, result
    assert outputs(runner, "J2")[0] == b"cached\n"


async def test_each_attempt_gets_its_own_directory(runner: ProcessRunner) -> None:
    await run(runner, shell("echo first", attempt=1))
    await run(runner, shell("echo second", attempt=2))
    assert outputs(runner, "J1", 1)[0] == b"first\n"
    assert outputs(runner, "J1", 2)[0] == b"second\n"


# ---------------------------------------------------------------- the shell fast path


def test_plain_commands_are_exec_directly_and_shell_syntax_goes_to_sh() -> None:
    builder = CommandBuilder(os.environ.get("PATH"))
    echo = shutil.which("echo")
    assert builder.for_shell("echo hi", []) == [echo, "hi"]
    assert builder.for_shell("  sleep   1 ", ["2"]) == [shutil.which("sleep"), "1", "2"]
    assert builder.for_shell("echo 'a b'", []) == [echo, "a b"]
    assert builder.for_shell("/bin/true", []) == ["/bin/true"]
    for line in ("echo a && exit 3", "echo $HOME", "ls *", "exit 3", "FOO=1 env", "cd /", "./run.sh", "x | y"):
        assert builder.for_shell(line, [])[:2] == [SHELL, "-c"], line
    assert builder.for_shell("no-such-program-here x", []) == [SHELL, "-c", "no-such-program-here x"]
    assert builder.for_shell("echo $1", ["a b"]) == [SHELL, "-c", "echo $1 'a b'"]
    with pytest.raises(LaunchError):
        builder.for_shell("   ", [])


async def test_unknown_program_in_shell_exits_127_through_sh(runner: ProcessRunner) -> None:
    result = await run(runner, shell("no-such-program-here"))
    assert result.exit_code == 127
    assert b"not found" in outputs(runner)[1]


async def test_an_unclosed_quote_fails_in_the_shell_with_its_message(runner: ProcessRunner) -> None:
    result = await run(runner, shell("echo it's here"))
    assert (result.state, result.exit_code) == ("FAILED", 2)
    assert b"unexpected EOF" in outputs(runner)[1] or b"quote" in outputs(runner)[1]


async def test_shell_pipeline_gets_default_sigpipe(runner: ProcessRunner) -> None:
    # with SIGPIPE left ignored (Python's setting) `yes` would loop on EPIPE forever
    result = await run(runner, shell("yes | head -n 2", timeout_s=10))
    assert result.exit_code == 0
    assert outputs(runner)[0] == b"y\ny\n"


# ---------------------------------------------------------------- timeouts and stops


async def test_timeout_kills_the_whole_group_including_a_grandchild(runner: ProcessRunner, tmp_path: Path) -> None:
    pid_file = tmp_path / "grandchild.pid"
    # the grandchild ignores SIGTERM: only the group SIGKILL can end it
    command = f"(trap '' TERM; exec sleep 60) & echo $! > {pid_file}; wait"
    attempt = runner.start(shell(command, timeout_s=0.3))
    await wait_until(lambda: pid_file.exists() and pid_file.read_text().strip() != "", what="grandchild started")
    grandchild = int(pid_file.read_text())
    assert os.getpgid(grandchild) == attempt.pid
    result = await attempt.wait()
    assert result.state == "FAILED"
    assert result.error == "timed out after 0.3s"
    assert result.exit_code == -15
    await wait_until(lambda: not pid_alive(grandchild), timeout_s=5, what="grandchild gone")


async def test_term_ignoring_leader_is_killed_after_the_grace_period(runner: ProcessRunner) -> None:
    attempt = runner.start(shell("trap '' TERM; sleep 60 & wait; sleep 60", timeout_s=0.1))
    result = await attempt.wait()
    assert result.exit_code == -9
    assert result.error == "timed out after 0.1s"
    assert result.finished_at - result.started_at >= 0.1 + runner.kill_grace_s - 0.05


async def test_stop_kills_with_the_reason(runner: ProcessRunner) -> None:
    attempt = runner.start(shell("sleep 30"))
    assert attempt.running and attempt.ref in runner.running
    assert runner.stop("J1", 1, "cancelled by user")
    result = await attempt.wait()
    assert (result.state, result.exit_code, result.error) == ("FAILED", -15, "stopped: cancelled by user")
    assert not runner.stop("J1", 1, "again")
    assert attempt.ref not in runner.running


async def test_leftovers_of_a_finished_job_are_killed(runner: ProcessRunner, tmp_path: Path) -> None:
    pid_file = tmp_path / "bg.pid"
    result = await run(runner, shell(f"sleep 60 & echo $! > {pid_file}"))
    assert result.exit_code == 0
    await wait_until(lambda: not pid_alive(int(pid_file.read_text())), timeout_s=5, what="background sleep gone")


async def test_kill_all_sigkills_every_group(runner: ProcessRunner) -> None:
    attempts = [runner.start(shell("sleep 30", job_id=f"K{i}")) for i in range(3)]
    runner.kill_all()
    results = [await a.wait() for a in attempts]
    assert [r.exit_code for r in results] == [-9, -9, -9]


async def test_aclose_stops_what_is_running(tmp_path: Path) -> None:
    runner = ProcessRunner(tmp_path / "ws", kill_grace_s=0.5)
    attempt = runner.start(shell("sleep 30"))
    await runner.aclose()
    assert attempt.result.done()
    assert attempt.result.result().error == "stopped: worker shutting down"


async def test_starting_a_running_attempt_again_returns_it(runner: ProcessRunner) -> None:
    first = runner.start(shell("sleep 30"))
    assert runner.start(shell("sleep 30")) is first
    first.stop("done")
    await first.wait()


# ---------------------------------------------------------------- jobs that cannot start


def _assert_one_line_failure(result: AttemptResult, *fragments: str) -> None:
    assert result.state == "FAILED"
    assert result.exit_code is None
    assert "\n" not in result.error
    for fragment in fragments:
        assert fragment in result.error, result.error


async def test_non_executable_file_fails_with_one_line(runner: ProcessRunner) -> None:
    result = await run(runner, shipped("tool", b"#!/bin/sh\necho hi\n", mode=0o644))
    _assert_one_line_failure(result, "tool", "permission denied")
    assert not runner.running


async def test_file_that_is_no_program_fails_with_one_line(runner: ProcessRunner) -> None:
    result = await run(runner, shipped("data.bin", b"just some words\n", mode=0o755))
    _assert_one_line_failure(result, "data.bin", "no #! line")


async def test_missing_interpreter_fails_with_one_line(tmp_path: Path) -> None:
    empty_path = tmp_path / "empty-bin"
    empty_path.mkdir()
    runner = ProcessRunner(tmp_path / "ws", base_env={"PATH": str(empty_path)})
    try:
        jar = await run(runner, shipped("app.jar", b"PK\x03\x04"))
        _assert_one_line_failure(jar, "app.jar", "java is not installed")
        sh = await run(runner, shipped("go.sh", b"echo hi\n", job_id="J2"))
        _assert_one_line_failure(sh, "go.sh", "bash is not installed")
    finally:
        await runner.aclose()


async def test_missing_shebang_interpreter_fails_with_one_line(runner: ProcessRunner) -> None:
    result = await run(runner, shipped("tool", b"#!/no/such/interpreter\n", mode=0o755))
    _assert_one_line_failure(result, "tool", "no such file")


async def test_missing_absolute_program_in_shell_exits_127_through_sh(runner: ProcessRunner) -> None:
    result = await run(runner, shell("/no/such/program"))
    assert result.exit_code == 127
    assert b"not found" in outputs(runner)[1]


def test_runner_works_on_uvloop(tmp_path: Path) -> None:
    uvloop = pytest.importorskip("uvloop")

    async def scenario() -> list[tuple[int | None, str]]:
        runner = ProcessRunner(tmp_path / "ws", kill_grace_s=0.5)
        try:
            attempts = [
                runner.start(shell("true", job_id="U1")),
                runner.start(shell("exit 4", job_id="U2")),
                runner.start(shell("sleep 30", job_id="U3", timeout_s=0.1)),
            ]
            return [((r := await a.wait()).exit_code, r.error) for a in attempts]
        finally:
            await runner.aclose()

    assert uvloop.run(scenario()) == [(0, ""), (4, "exit code 4"), (-15, "timed out after 0.1s")]


@pytest.mark.parametrize(
    ("fields", "fragment"),
    [
        ({"kind": "PDF_CONVERT", "data": "x.pdf"}, "job type PDF_CONVERT cannot run"),
        ({"kind": "RUN", "data": "calc.py"}, "no file was shipped"),
        ({"kind": "RUN", "data": "calc.py", "payload": b"x", "payload_hash": "0" * 64}, "corrupt"),
        ({"kind": "RUN", "data": "calc.py", "payload": b"x", "payload_name": "../evil.py"}, "bad payload name"),
        ({"kind": "RUN", "data": "c.py", "payload_hash": "a" * 64, "payload_name": "c.py"}, "neither shipped"),
        ({"kind": "SHELL", "data": "true", "job_id": "../escape"}, "cannot name a directory"),
    ],
)
async def test_bad_tasks_fail_with_one_line(runner: ProcessRunner, fields: dict[str, Any], fragment: str) -> None:
    result = await run(runner, task(**fields))
    _assert_one_line_failure(result, fragment)


async def test_an_attempt_knows_whether_it_left_outputs_and_only_an_empty_one_is_recycled(
    runner: ProcessRunner,
) -> None:
    quiet = runner.start(shell("true", job_id="QUIET"))
    await quiet.wait()
    wrote = runner.start(shell('echo x > "$TITAN_OUTPUT_DIR/part"', job_id="WROTE"))
    result = await wrote.wait()
    assert quiet.outputs_empty and not wrote.outputs_empty and result.outputs == {"part": b"x\n"}
    runner.release(quiet)
    runner.release(wrote)
    jobs = runner.workspace / "jobs"
    assert not (jobs / "QUIET").exists() and not (jobs / "WROTE").exists()
    assert runner._dirs.spares_ready == 1  # QUIET's tree; WROTE's went to the trash
    reused = runner.start(shell("ls -A . outputs", job_id="NEXT"))
    await reused.wait()
    assert outputs(runner, "NEXT")[0] == b".:\noutputs\nstderr\nstdout\n\noutputs:\n"


# ---------------------------------------------------------------- folders left behind


async def test_the_sweep_removes_old_job_folders_but_not_one_in_use(tmp_path: Path) -> None:
    runner = ProcessRunner(tmp_path / "ws", worker_id="w-test", kill_grace_s=0.5)
    try:
        jobs = runner.workspace / "jobs"
        for name in ("LEFT", "BUSY"):
            (jobs / name / "attempt-1").mkdir(parents=True)
            then = time.time() - 3600
            os.utime(jobs / name / "attempt-1", (then, then))
            os.utime(jobs / name, (then, then))
        busy = runner.start(shell("sleep 30", job_id="BUSY", attempt=2))  # a retry in an old job's folder
        os.utime(jobs / "BUSY", (time.time() - 3600,) * 2)
        os.utime(jobs / "BUSY" / "attempt-2", (time.time() - 3600,) * 2)
        assert await runner.sweep(600) == 1
        assert sorted(os.listdir(jobs)) == ["BUSY"]
        assert await runner.sweep(600) == 0
        busy.stop("test over")
        await busy.wait()
    finally:
        await runner.aclose()


async def test_a_runner_sweeps_at_start_what_a_killed_run_left(tmp_path: Path) -> None:
    left = tmp_path / "ws" / "jobs" / "J9" / "attempt-1"
    left.mkdir(parents=True)
    (left / "stdout").write_bytes(b"never reported\n")
    for path in (left / "stdout", left, left.parent):
        os.utime(path, (time.time() - 7200,) * 2)
    runner = ProcessRunner(tmp_path / "ws", worker_id="w-test", keep_attempts_s=3600)
    try:
        await wait_until(lambda: not left.parent.exists(), timeout_s=10, what="the old folder swept")
    finally:
        await runner.aclose()
    forever = ProcessRunner(tmp_path / "ws2", worker_id="w-test", keep_attempts_s=None)
    await forever.aclose()  # no sweeper to stop: nothing hangs
