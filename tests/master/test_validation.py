"""Submissions refused with one line and nothing stored; the files check on a real folder."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

from protocol import JobSpec
from titan.config import MasterSettings
from titan.errors import ValidationError
from titan.master import MasterState, PermFiles


@pytest.fixture
def perm(tmp_path: Path) -> Path:
    root = tmp_path / "perm_files"
    (root / "handlers").mkdir(parents=True)
    (root / "calc.py").write_text("print(2 + 2)\n")
    (root / "tools").mkdir()
    (root / "tools" / "run.sh").write_text("echo hi\n")
    (root / "handlers" / "pdf_convert.py").write_text("import sys; print(sys.argv)\n")
    (root / "big.bin").write_bytes(b"x" * 2000)
    (root / "inside-link.py").symlink_to(root / "calc.py")
    (tmp_path / "secret.txt").write_text("no")
    (root / "escape.txt").symlink_to(tmp_path / "secret.txt")
    (root / "dangling.py").symlink_to(root / "missing.py")
    return root


@pytest.fixture
def state(perm: Path) -> MasterState:
    settings = MasterSettings(perm_files=perm, max_payload_bytes=1000, validate=True)
    return MasterState(settings, PermFiles(perm, max_bytes=1000), rng=random.Random(1))


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (JobSpec(type="BOGUS", data="x"), "unknown job type 'BOGUS': expected one of RUN, SHELL, DEPLOY, PDF_CONVERT"),
        (JobSpec(type="RUN", data="/etc/passwd"), "'/etc/passwd' is an absolute path"),
        (JobSpec(type="RUN", data="../etc/passwd"), "'../etc/passwd' escapes perm_files/"),
        (JobSpec(type="RUN", data="tools/../../x"), "escapes perm_files/"),
        (JobSpec(type="RUN", data="escape.txt"), "'escape.txt' is a symlink that points outside perm_files/"),
        (JobSpec(type="RUN", data="nope.py"), "no file 'nope.py' in perm_files/"),
        (JobSpec(type="RUN", data="dangling.py"), "no file 'dangling.py'"),
        (JobSpec(type="RUN", data="tools"), "'tools' in perm_files/ is not a regular file"),
        (JobSpec(type="RUN", data="big.bin"), "'big.bin' is 2000 bytes, over the 1000-byte payload limit"),
        (JobSpec(type="RUN", data=""), "RUN needs a file name"),
        (JobSpec(type="RUN", data="a\x00b"), "NUL"),
        (JobSpec(type="SHELL", data="   "), "SHELL needs a command"),
        (JobSpec(type="DEPLOY", data="Worker.jar"), "DEPLOY of Worker.jar needs a PORT: 1 to 65535, or 0"),
        (JobSpec(type="DEPLOY", data="nope.py"), "no file 'nope.py'"),
        (JobSpec(type="SHELL", data="true", id="../x"), "job id '../x' is not allowed"),
        (JobSpec(type="SHELL", data="true", id="two\nlines"), "job id 'two\\nlines' is not allowed"),
        (JobSpec(type="SHELL", data="true", id="x" * 5000), "'... (5000 characters) is not allowed"),
        (JobSpec(type="SHELL", data="true", deps=["NOPE"]), "unknown dependencies: NOPE"),
        (JobSpec(type="RUN", data="x.py", payload=b"x" * 1001), "over the 1000-byte limit"),
    ],
)
def test_refused_with_one_line_and_nothing_stored(state: MasterState, spec: JobSpec, message: str) -> None:
    with pytest.raises(ValidationError) as info:
        state.submit(spec, now=1.0)
    text = str(info.value)
    assert message in text
    assert "\n" not in text and len(text) < 400
    assert state.jobs == {}
    assert sum(state.counts.values()) == 0


def test_duplicate_id_is_refused(state: MasterState) -> None:
    state.submit(JobSpec(type="SHELL", data="true", id="A"), now=1.0)
    with pytest.raises(ValidationError, match="a job with id 'A' already exists"):
        state.submit(JobSpec(type="SHELL", data="false", id="A"), now=2.0)
    assert len(state.jobs) == 1


@pytest.mark.parametrize("name", ["calc.py", "tools/run.sh", "inside-link.py", "./calc.py"])
def test_files_inside_the_folder_are_accepted(state: MasterState, name: str) -> None:
    job, _ = state.submit(JobSpec(type="run", data=name), now=1.0)
    assert (job.type, job.run_kind) == ("RUN", "RUN")
    assert not job.run_data.startswith("./")


def test_handler_type_runs_its_script_with_data_first(state: MasterState) -> None:
    job, _ = state.submit(JobSpec(type="PDF_CONVERT", data="future_report.pdf", args=["--fast"], priority=1), now=1.0)
    assert (job.type, job.run_kind, job.run_data, job.run_args) == (
        "PDF_CONVERT",
        "RUN",
        "handlers/pdf_convert.py",
        ("future_report.pdf", "--fast"),
    )


def test_deploy_of_a_script_ships_it_as_a_service_and_of_the_worker_names_the_port(state: MasterState) -> None:
    script, _ = state.submit(JobSpec(type="DEPLOY", data="calc.py"), now=1.0)
    worker, _ = state.submit(JobSpec(type="DEPLOY", data="Worker.jar", port=8083), now=1.0)
    assert (script.run_kind, script.run_data) == ("DEPLOY", "calc.py")
    assert script.is_service and worker.is_service
    assert (worker.run_kind, worker.run_data, worker.run_args) == ("DEPLOY", "worker", ("8083",))


def test_inline_script_uses_its_base_name(state: MasterState) -> None:
    job, _ = state.submit(JobSpec(type="RUN", data="local/dir/job.py", payload=b"print(1)"), now=1.0)
    assert (job.run_data, job.payload) == ("job.py", b"print(1)")


def test_payload_is_cached_by_mtime_and_size(perm: Path) -> None:
    files = PermFiles(perm, max_bytes=1000)
    first = files.load("calc.py")
    assert files.load("calc.py") is first
    assert first.name == "calc.py" and len(first.sha256) == 64
    (perm / "calc.py").write_text("print('changed, and longer')\n")
    second = files.load("calc.py")
    assert second is not first and second.data == b"print('changed, and longer')\n"


def test_payload_mode_follows_the_file(perm: Path) -> None:
    os.chmod(perm / "tools" / "run.sh", 0o750)
    assert PermFiles(perm, max_bytes=1000).load("tools/run.sh").mode == 0o750


def test_handler_types_are_listed(perm: Path) -> None:
    assert PermFiles(perm, max_bytes=1000).handler_types() == ["PDF_CONVERT"]
    assert PermFiles(perm / "nowhere", max_bytes=1000).handler_types() == []
