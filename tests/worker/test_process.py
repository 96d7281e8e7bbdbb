"""The spawn primitive itself, through both methods: what a child starts with and how a failed start reads."""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import sys
from pathlib import Path

import pytest

from titan.worker import process
from titan.worker.process import Environment, spawn_in

pytestmark = pytest.mark.usefixtures("spawn_method")

PROBE = """\
import os, signal, sys
print(os.getcwd())
print(os.getpid() == os.getpgid(0) == os.getsid(0))
print(os.environ.get("PROBE_VALUE"))
print(sys.stdin.read() == "")
print(sorted(int(fd) for fd in os.listdir("/proc/self/fd") if int(fd) > 2))
"""


def _run(directory: Path, argv: list[str], env: dict[str, str] | None = None, *, append: bool = False) -> int:
    home = os.open(".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        pid = spawn_in(argv, env if env is not None else dict(os.environ), str(directory), home_fd=home, append=append)
    finally:
        os.close(home)
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])


def test_the_child_starts_in_its_directory_as_a_session_leader_with_stdin_and_env(
    tmp_path: Path, spawn_method: str
) -> None:
    cwd = os.getcwd()
    code = _run(tmp_path, [sys.executable, "-c", PROBE], {**os.environ, "PROBE_VALUE": "é ok"})
    assert code == 0
    lines = (tmp_path / "stdout").read_text().splitlines()
    assert lines[:4] == [str(tmp_path), "True", "é ok", "True"]
    if spawn_method == "fork_exec":  # posix_spawn passes on whatever this process left inheritable
        assert len(eval(lines[4])) <= 1  # only the fd that listdir itself opens
    assert os.getcwd() == cwd  # the caller's directory is untouched


def test_the_child_gets_the_default_sigpipe_and_sigxfsz_and_blocks_nothing(tmp_path: Path) -> None:
    # this process ignores SIGPIPE and SIGXFSZ (Python does); a job must start with the defaults.
    # grep reads its own status: a Python child would ignore SIGPIPE again by itself
    grep = shutil.which("grep")
    assert grep is not None
    assert signal.getsignal(signal.SIGPIPE) == signal.SIG_IGN
    assert _run(tmp_path, [grep, "-E", "^Sig(Ign|Blk)", "/proc/self/status"]) == 0
    masks = dict(line.split(":\t") for line in (tmp_path / "stdout").read_text().splitlines())
    ignored = int(masks["SigIgn"], 16)
    assert not ignored & (1 << (signal.SIGPIPE - 1) | 1 << (signal.SIGXFSZ - 1))
    assert int(masks["SigBlk"], 16) == 0


def test_stdout_and_stderr_are_truncated_or_appended(tmp_path: Path) -> None:
    (tmp_path / "stdout").write_text("old\n")
    assert _run(tmp_path, ["/bin/sh", "-c", "echo new; echo bad >&2; exit 4"]) == 4
    assert (tmp_path / "stdout").read_text() == "new\n"
    assert (tmp_path / "stderr").read_text() == "bad\n"
    assert _run(tmp_path, ["/bin/sh", "-c", "echo more"], append=True) == 0
    assert (tmp_path / "stdout").read_text() == "new\nmore\n"


@pytest.mark.parametrize(("name", "number"), [("missing", errno.ENOENT), ("not-executable", errno.EACCES)])
def test_a_program_that_cannot_start_raises_its_errno_and_leaves_nothing_behind(
    tmp_path: Path, name: str, number: int
) -> None:
    (tmp_path / "not-executable").write_text("#!/bin/sh\n")
    argv = [str(tmp_path / name)]
    fds = sorted(os.listdir("/proc/self/fd"))
    with pytest.raises(OSError) as caught:
        _run(tmp_path, argv)
    assert caught.value.errno == number
    assert sorted(os.listdir("/proc/self/fd")) == fds
    with pytest.raises(ChildProcessError):
        os.waitpid(-1, os.WNOHANG)  # the failed child was reaped


def test_a_file_that_is_no_program_raises_enoexec(tmp_path: Path) -> None:
    text = tmp_path / "notes.txt"
    text.write_text("just words\n")
    text.chmod(0o755)
    with pytest.raises(OSError) as caught:
        _run(tmp_path, [str(text)])
    assert caught.value.errno == errno.ENOEXEC


@pytest.mark.parametrize(
    ("argv", "env"),
    [(["/bin/echo", "a\0b"], None), (["/bin/true"], {"BAD=NAME": "1"}), (["/bin/true"], {"NAME": "a\0b"})],
)
def test_what_no_program_can_take_is_an_einval_oserror(
    tmp_path: Path, argv: list[str], env: dict[str, str] | None
) -> None:
    with pytest.raises(OSError) as caught:
        _run(tmp_path, argv, env)
    assert caught.value.errno == errno.EINVAL


@pytest.mark.parametrize("base", [Environment, dict])
def test_extra_variables_are_added_to_the_base_and_replace_its_own(
    tmp_path: Path, base: type[Environment] | type[dict[str, str]]
) -> None:
    dump = "import json, os; print(json.dumps(dict(os.environ)))"
    environment = base({"PATH": os.environ["PATH"], "KEPT": "base", "REPLACED": "base"})
    home = os.open(".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        extra = {"REPLACED": "extra", "ADDED": "é"}
        pid = spawn_in([sys.executable, "-c", dump], environment, str(tmp_path), home_fd=home, extra_env=extra)
    finally:
        os.close(home)
    assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0
    seen = json.loads((tmp_path / "stdout").read_text())
    assert {name: seen.get(name) for name in ("KEPT", "REPLACED", "ADDED")} == {
        "KEPT": "base",
        "REPLACED": "extra",
        "ADDED": "é",
    }
    assert environment["REPLACED"] == "base"  # a spawn's variables never stick to the base


@pytest.mark.parametrize("extra", [{"BAD=NAME": "1"}, {"": "1"}, {"NAME": "a\0b"}])
def test_an_extra_variable_no_program_can_take_is_an_einval_oserror(tmp_path: Path, extra: dict[str, str]) -> None:
    home = os.open(".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        with pytest.raises(OSError) as caught:
            spawn_in(["/bin/true"], Environment({}), str(tmp_path), home_fd=home, extra_env=extra)
    finally:
        os.close(home)
    assert caught.value.errno == errno.EINVAL


def test_an_environment_is_a_read_only_mapping_of_its_variables() -> None:
    environment = Environment({"A": "1", "B": "2"})
    assert dict(environment) == {"A": "1", "B": "2"} and len(environment) == 2
    assert environment.encoded() == [b"A=1", b"B=2"]
    assert environment.encoded({"B": "3", "C": "4"}) == [b"A=1", b"B=3", b"C=4"]
    with pytest.raises(ValueError, match="illegal environment variable name"):
        Environment({"A=B": "1"})


def test_the_child_error_report_is_decoded_as_subprocess_does() -> None:
    assert process._child_error(b"OSError:2:", "/bin/x", "/d").filename == "/bin/x"
    from_chdir = process._child_error(b"OSError:%x:noexec" % errno.ENOTDIR, "/bin/x", "/d")
    assert (from_chdir.errno, from_chdir.filename) == (errno.ENOTDIR, "/d")
    garbled = process._child_error(b"SubprocessError:0:Exception occurred in preexec_fn.", "/bin/x", "/d")
    assert garbled.errno == errno.EIO and "preexec_fn" in str(garbled)


def test_this_python_uses_the_fast_spawn() -> None:
    # the shapes the worker knows are 3.11-3.14 on Linux; a new one falls back, and this says so
    if sys.platform == "linux" and sys.version_info < (3, 15):
        assert process.SPAWN_METHOD == "fork_exec"
    assert signal.getsignal(signal.SIGPIPE) == signal.SIG_IGN  # the parent keeps Python's own


def test_a_fork_exec_of_another_shape_is_not_used(monkeypatch: pytest.MonkeyPatch) -> None:
    import _posixsubprocess

    def other_arity(*args: object) -> int:
        raise TypeError(f"fork_exec() takes exactly 30 arguments ({len(args)} given)")

    monkeypatch.setattr(_posixsubprocess, "fork_exec", other_arity)
    assert process._find_fork_exec() is None

    def other_check(*args: object) -> int:
        raise ValueError("bad value(s) in fds_to_keep")

    monkeypatch.setattr(_posixsubprocess, "fork_exec", other_check)
    assert process._find_fork_exec() is None


def test_a_fork_exec_that_forks_on_the_probe_is_reaped_and_not_used(monkeypatch: pytest.MonkeyPatch) -> None:
    import _posixsubprocess

    started: list[int] = []

    def forks_anyway(*args: object) -> int:
        started.append(os.posix_spawn("/bin/true", ["/bin/true"], {}))
        return started[-1]

    monkeypatch.setattr(_posixsubprocess, "fork_exec", forks_anyway)
    assert process._find_fork_exec() is None
    with pytest.raises(ChildProcessError):
        os.waitpid(started[0], os.WNOHANG)  # already reaped
