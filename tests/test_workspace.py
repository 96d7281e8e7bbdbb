"""The workspace lock on its own: who the refusal names, release, a folder that cannot be used."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from titan.errors import WorkspaceError, WorkspaceInUse
from titan.workspace import LOCK_NAME, WorkspaceLock


def test_the_refusal_names_the_holder_and_a_release_lets_the_next_one_in(tmp_path: Path) -> None:
    held = WorkspaceLock.acquire(tmp_path / "ws", "worker", port=8081)
    with pytest.raises(WorkspaceInUse) as info:
        WorkspaceLock.acquire(tmp_path / "ws", "worker")
    assert str(info.value) == f"workspace {tmp_path / 'ws'} is in use by another worker (pid {os.getpid()}, port 8081)"
    assert info.value.pid == os.getpid()
    assert held._fd is not None and not os.get_inheritable(held._fd)  # an attempt that outlives us must not keep it
    held.release()
    held.release()  # twice is fine
    again = WorkspaceLock.acquire(tmp_path / "ws", "master")
    again.record(9090)
    assert json.loads((tmp_path / "ws" / LOCK_NAME).read_text())["port"] == 9090
    again.release()


def test_a_holder_on_another_host_or_not_yet_recorded(tmp_path: Path) -> None:
    held = WorkspaceLock.acquire(tmp_path, "master")
    path = tmp_path / LOCK_NAME
    path.write_text(json.dumps({"role": "master", "pid": 7, "host": "elsewhere.invalid", "port": None}))
    with pytest.raises(WorkspaceInUse, match=r"in use by another master \(pid 7 on elsewhere\.invalid\)$"):
        WorkspaceLock.acquire(tmp_path, "master")
    path.write_text("")  # the holder has the lock but has not written its line yet
    with pytest.raises(WorkspaceInUse, match=r"in use by another process$"):
        WorkspaceLock.acquire(tmp_path, "master")
    held.release()


def test_a_folder_that_cannot_be_made_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    with pytest.raises(WorkspaceError, match=r"^cannot use workspace .*/file/ws: Not a directory$"):
        WorkspaceLock.acquire(tmp_path / "file" / "ws", "master")
