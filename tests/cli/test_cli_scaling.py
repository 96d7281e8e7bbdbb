"""STOP, SPAWN, RETIRE on the command line, the autoscaler in STATS, and the Inception line."""

from __future__ import annotations

import asyncio
import json
import re

import pytest
from rich.console import Console

from protocol import StatsReply
from titan.cli.main import main
from titan.cli.parse import SubmitDagCommand, parse_line
from titan.cli.render import stats_view
from titan.cli.scaling import RetireCommand, SpawnCommand, StopCommand, autoscaler_rows
from titan.client.testing import FakeMaster, worker_info
from titan.errors import UsageError

INCEPTION = (
    "SUBMIT_DAG START_DASH|DEPLOY|server_dashboard.py|1|0|[] ; WORKER_A|DEPLOY|Worker.jar|8081|1|2|[START_DASH] ; "
    "WORKER_B|DEPLOY|Worker.jar|8082|1|2|[START_DASH] ; RUN_CALC|RUN|calc.py|2|0|[WORKER_A, WORKER_B] ; "
    "WORKER_C|DEPLOY|Worker.jar|8083|1|5|[RUN_CALC]"
)


@pytest.mark.parametrize(
    ("line", "command"),
    [
        ("STOP START_DASH", StopCommand("START_DASH")),
        ("stop x", StopCommand("x")),
        ("SPAWN", SpawnCommand()),
        ("SPAWN 8090", SpawnCommand(None, 8090)),
        ("SPAWN on 8081", SpawnCommand("8081", 0)),
        ("spawn ON [8081] 8090", SpawnCommand("[8081]", 8090)),
        ("RETIRE 8090", RetireCommand("8090")),
    ],
)
def test_scaling_commands_parse(line: str, command: object) -> None:
    assert parse_line(line) == command


@pytest.mark.parametrize(
    ("line", "words"),
    [
        ("STOP", "STOP expects one job id"),
        ("STOP a b", "STOP expects one job id"),
        ("SPAWN on", "'on' needs a worker"),
        ("SPAWN eighty", "PORT must be an integer"),
        ("SPAWN 70000", "PORT must be 0..65535"),
        ("SPAWN on 8081 1 2", "SPAWN expects SPAWN [on <worker>] [PORT]"),
        ("RETIRE", "RETIRE expects one worker"),
    ],
)
def test_bad_scaling_lines_get_one_line_errors(line: str, words: str) -> None:
    with pytest.raises(UsageError, match=re.escape(words)) as info:
        parse_line(line)
    assert "\n" not in str(info.value)


def test_the_inception_line_parses_verbatim() -> None:
    command = parse_line(INCEPTION)
    assert isinstance(command, SubmitDagCommand)
    specs = {spec.id: spec for spec in command.specs}
    assert list(specs) == ["START_DASH", "WORKER_A", "WORKER_B", "RUN_CALC", "WORKER_C"]
    assert (specs["START_DASH"].type, specs["START_DASH"].data, specs["START_DASH"].port) == (
        "DEPLOY",
        "server_dashboard.py",
        None,
    )
    assert [(specs[w].port, specs[w].deps) for w in ("WORKER_A", "WORKER_B", "WORKER_C")] == [
        (8081, ["START_DASH"]),
        (8082, ["START_DASH"]),
        (8083, ["RUN_CALC"]),
    ]
    assert specs["RUN_CALC"].deps == ["WORKER_A", "WORKER_B"]


def render(stats: StatsReply) -> str:
    console = Console(record=True, width=140)
    console.print(stats_view(stats))
    return console.export_text()


def stats_with(extra: dict[str, object]) -> StatsReply:
    root = worker_info(8080, load=4, services=["START_DASH", "WORKER_A", "WORKER_B", "WORKER_C"])
    child = worker_info(8082, parent="w-8080")
    return StatsReply(0, 0, 0, 0, 0, 0, 0, 0, 0, [root, child], extra=extra)


def test_stats_shows_the_autoscaler_when_it_is_on() -> None:
    extra = {
        "autoscaler": {
            "enabled": True,
            "limits": {"max_workers": 8, "max_children": 4, "max_depth": 2},
            "pending_spawns": 1,
            "decisions": [{"t": 100.0, "action": "spawn", "worker": "w-8080", "reason": "9 job(s) ready"}],
        }
    }
    rows = autoscaler_rows(extra, now=103.0)
    assert rows[0][0] == "Autoscaler"
    assert "at most 8 workers, 4 children each, depth 2" in rows[0][1].plain
    assert "1 spawn(s) in flight" in rows[0][1].plain
    assert rows[1][1].plain == "3s ago: spawn w-8080: 9 job(s) ready"
    text = render(stats_with(extra))
    assert "Autoscaler:" in text and "spawn w-8080" in text


def test_stats_without_the_autoscaler_says_nothing_of_it() -> None:
    assert autoscaler_rows({"autoscaler": {"enabled": False}}) == []
    assert "Autoscaler" not in render(stats_with({}))


def test_stats_tree_shows_services_under_the_parent_and_the_child_below() -> None:
    text = render(stats_with({}))
    assert "• [8080] Load: 4/4 (100%) | Skills: [GENERAL]" in text
    assert "Service ID: WORKER_B" in text
    lines = text.splitlines()
    parent = next(i for i, line in enumerate(lines) if "[8080]" in line)
    child = next(i for i, line in enumerate(lines) if "[8082]" in line)
    assert child > parent and lines[child].index("•") > lines[parent].index("•")


async def titan(*argv: str) -> int:
    return await asyncio.to_thread(main, list(argv))


async def test_oneshot_stop_spawn_retire_json(fake_master: FakeMaster, capsys: pytest.CaptureFixture[str]) -> None:
    fake_master.workers = [worker_info(8080), worker_info(8090, parent="w-8080")]
    fake_master.add_job("SVC", "DEPLOY", "sleep.py", state="RUNNING")
    address = fake_master.address
    assert await titan("--master", address, "stop", "SVC", "--json") == 0
    assert json.loads(capsys.readouterr().out)["state"] == "STOPPED"
    assert await titan("--master", address, "spawn", "--on", "8080", "--port", "8091", "--json") == 0
    assert json.loads(capsys.readouterr().out) == {"parent": "w-8080", "spawn_id": "SPAWN-1", "port": 8091}
    assert await titan("--master", address, "retire", "8080", "--json") == 0
    assert json.loads(capsys.readouterr().out) == {"workers": ["w-8080", "w-8090"]}


async def test_oneshot_scaling_errors_are_one_line(fake_master: FakeMaster, capsys: pytest.CaptureFixture[str]) -> None:
    fake_master.workers = [worker_info(8080)]
    assert await titan("--master", fake_master.address, "retire", "nope") == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no worker 'nope'" in err
    assert await titan("--master", fake_master.address, "spawn", "--port", "70000") == 2
    assert "--port must be 0..65535" in capsys.readouterr().err
