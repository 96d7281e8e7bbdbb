"""bench.report's bookkeeping: targets name real figures, and verdicts count sets (no benchmark is run)."""

from __future__ import annotations

import json

import pytest

from bench import report
from bench.cluster import REPO


def test_every_target_is_a_figure_its_benchmark_prints() -> None:
    for target in report.TARGETS:
        source = (REPO / "bench" / f"{target.module}.py").read_text()
        assert f'"{target.key}"' in source, f"bench.{target.module} prints no {target.key}"


def test_verdicts_take_the_median_and_count_the_sets_that_met() -> None:
    sets = {
        "throughput": [
            {"completed_ratio": 0.62, "latency_p50_ms": 2.4, "latency_p99_ms": 4.0},
            {"completed_ratio": 0.58, "latency_p50_ms": 2.6, "latency_p99_ms": 4.5},
            {"completed_ratio": 0.65, "latency_p50_ms": 1.9, "latency_p99_ms": 3.0},
        ]
    }
    rows = {row["figure"]: row for row in report.verdicts(sets)}
    assert set(rows) == {"completed_ratio", "latency_p50_ms", "latency_p99_ms"}  # only what was run
    assert rows["completed_ratio"]["median"] == 0.62 and rows["completed_ratio"]["verdict"] == "met in 2 of 3"
    assert rows["latency_p50_ms"]["verdict"] == "met in 1 of 3"
    assert rows["latency_p99_ms"]["verdict"] == "met" and rows["latency_p99_ms"]["target"] == "at most 5"
    assert rows["latency_p50_ms"]["sets"] == [2.4, 2.6, 1.9]
    only_slow = report.verdicts({"burst": [{"ratio": 0.7}]})
    assert only_slow[0]["verdict"] == "missed"


def test_a_failing_benchmark_is_reported_and_the_rest_goes_on(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def fake(module: str) -> dict[str, float]:
        if module == "dag":
            raise RuntimeError("bench.dag failed (exit 1): boom")
        return {"ratio": 0.5}

    monkeypatch.setattr(report, "run_module", fake)
    report.main(["--only", "dag,burst"])
    lines = capsys.readouterr().out.strip().splitlines()
    assert "set 1: bench.dag failed (exit 1): boom" in lines
    summary = json.loads(lines[-1])
    assert [row["figure"] for row in summary["figures"]] == ["ratio"] and summary["figures"][0]["verdict"] == "met"


def test_unknown_benchmarks_are_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        report.main(["--only", "nope"])
    assert "unknown benchmark(s) nope" in capsys.readouterr().err
