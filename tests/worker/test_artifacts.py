from __future__ import annotations

from pathlib import Path

from titan.worker.artifacts import collect_artifacts


def test_outputs_within_the_limit_are_collected_by_relative_path(tmp_path: Path) -> None:
    (tmp_path / "outputs" / "sub").mkdir(parents=True)
    (tmp_path / "outputs" / "a.txt").write_bytes(b"a")
    (tmp_path / "outputs" / "sub" / "b.txt").write_bytes(b"bb")
    artifacts = collect_artifacts(str(tmp_path), max_output_bytes=3)
    assert artifacts.error == "" and artifacts.outputs == {"a.txt": b"a", "sub/b.txt": b"bb"}


def test_outputs_over_the_limit_say_their_whole_size_and_keep_nothing(tmp_path: Path) -> None:
    (tmp_path / "outputs").mkdir()
    for name in ("one", "two", "three"):
        (tmp_path / "outputs" / name).write_bytes(b"x" * 60)
    artifacts = collect_artifacts(str(tmp_path), max_output_bytes=100)
    assert artifacts.outputs == {}
    assert artifacts.error == "outputs are 180 bytes, over the 100-byte limit per job"
