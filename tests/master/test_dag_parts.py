"""``DagParts``: a DAG sent in parts is handed over whole with its last part, or refused whole."""

from __future__ import annotations

import pytest

from protocol import JobSpec, SubmitDag
from titan.errors import ValidationError
from titan.master.dag_parts import DagParts


def part(index: int, count: int, *ids: str) -> SubmitDag:
    return SubmitDag(jobs=[JobSpec(type="SHELL", data="true", id=i) for i in ids], part=index, parts=count)


def ids(specs: list[JobSpec] | None) -> list[str | None]:
    assert specs is not None
    return [spec.id for spec in specs]


def test_parts_in_order_come_back_whole_with_the_last() -> None:
    parts = DagParts()
    assert parts.add(part(0, 3, "A", "B")) is None and parts.under_way
    assert parts.add(part(1, 3, "C")) is None
    assert ids(parts.add(part(2, 3, "D"))) == ["A", "B", "C", "D"]
    assert not parts.under_way


def test_a_dag_sent_whole_passes_through_and_leaves_one_under_way_alone() -> None:
    parts = DagParts()
    parts.add(part(0, 2, "A"))
    assert ids(parts.add(part(0, 1, "X"))) == ["X"]
    assert ids(parts.add(part(1, 2, "B"))) == ["A", "B"]


def test_once_a_part_is_refused_every_later_part_is_and_the_last_one_clears() -> None:
    parts = DagParts()
    parts.add(part(0, 4, "A"))
    parts.refused("SubmitDag.jobs: bad")  # part 1 could not be read
    with pytest.raises(ValidationError, match="refused: SubmitDag.jobs: bad"):
        parts.add(part(2, 4, "C"))
    with pytest.raises(ValidationError, match="refused: SubmitDag.jobs: bad"):
        parts.add(part(3, 4, "D"))
    assert not parts.under_way


def test_a_part_out_of_order_refuses_the_dag() -> None:
    parts = DagParts()
    parts.add(part(0, 3, "A"))
    with pytest.raises(ValidationError, match="part 3 of 3 came after part 1 of 3"):
        parts.add(part(2, 3, "C"))
    assert not parts.under_way  # that was the last part: nothing is kept
    with pytest.raises(ValidationError, match="came without its first part"):
        parts.add(part(1, 3, "B"))


def test_a_new_first_part_drops_a_dag_left_unfinished() -> None:
    parts = DagParts()
    parts.add(part(0, 3, "OLD"))
    parts.add(part(0, 2, "A"))
    assert ids(parts.add(part(1, 2, "B"))) == ["A", "B"]


def test_a_dag_over_the_limit_is_refused() -> None:
    parts = DagParts(max_jobs=3)
    parts.add(part(0, 3, "A", "B"))
    with pytest.raises(ValidationError, match="at most 3 jobs"):
        parts.add(part(1, 3, "C", "D"))
    with pytest.raises(ValidationError, match="at most 3 jobs"):
        parts.add(part(2, 3, "E"))
    assert not parts.under_way
