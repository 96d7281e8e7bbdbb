"""REPL line parsing: every DESIGN §8 line as written, and every way to get one wrong."""

from __future__ import annotations

import pytest

from protocol import JobSpec
from titan.cli.parse import (
    COMMAND_NAMES,
    CancelCommand,
    DlqCommand,
    ExitCommand,
    HelpCommand,
    ListCommand,
    LogsCommand,
    RetryCommand,
    StatsCommand,
    StatusCommand,
    SubmitCommand,
    SubmitDagCommand,
    WorkersCommand,
    is_worker_artifact,
    parse_dag,
    parse_line,
    parse_submit,
)
from titan.errors import UsageError

DESIGN_DAG = (
    "SUBMIT_DAG START_DASH|DEPLOY|server_dashboard.py|1|0|[] ; "
    "WORKER_A|DEPLOY|Worker.jar|8081|1|2|[START_DASH] ; "
    "WORKER_B|DEPLOY|Worker.jar|8082|1|2|[START_DASH] ; "
    "RUN_CALC|RUN|calc.py|2|0|[WORKER_A, WORKER_B] ; "
    "WORKER_C|DEPLOY|Worker.jar|8083|1|5|[RUN_CALC]"
)


def test_submit_run_with_defaults() -> None:
    assert parse_line("SUBMIT RUN|calc.py") == SubmitCommand(JobSpec(type="RUN", data="calc.py"))


def test_submit_with_priority_and_delay() -> None:
    command = parse_line("SUBMIT PDF_CONVERT|future_report.pdf|1|8000")
    assert command == SubmitCommand(JobSpec(type="PDF_CONVERT", data="future_report.pdf", priority=1, delay_ms=8000))


def test_submit_email_alert() -> None:
    command = parse_line("SUBMIT EMAIL_ALERT|admin@titan.com|1|0")
    assert command == SubmitCommand(JobSpec(type="EMAIL_ALERT", data="admin@titan.com", priority=1, delay_ms=0))


def test_the_design_dag_line() -> None:
    command = parse_line(DESIGN_DAG)
    assert isinstance(command, SubmitDagCommand)
    specs = {spec.id: spec for spec in command.specs}
    assert [spec.id for spec in command.specs] == ["START_DASH", "WORKER_A", "WORKER_B", "RUN_CALC", "WORKER_C"]
    assert specs["START_DASH"] == JobSpec(type="DEPLOY", data="server_dashboard.py", id="START_DASH")
    assert specs["WORKER_A"] == JobSpec(
        type="DEPLOY", data="Worker.jar", id="WORKER_A", port=8081, priority=1, delay_ms=2, deps=["START_DASH"]
    )
    assert specs["WORKER_B"].port == 8082
    assert specs["RUN_CALC"] == JobSpec(
        type="RUN", data="calc.py", id="RUN_CALC", priority=2, delay_ms=0, deps=["WORKER_A", "WORKER_B"]
    )
    assert (specs["WORKER_C"].port, specs["WORKER_C"].delay_ms, specs["WORKER_C"].deps) == (8083, 5, ["RUN_CALC"])
    assert not any(spec.affinity for spec in command.specs)


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("STATS", StatsCommand()),
        ("stats", StatsCommand()),
        ("STATUS TSK-1a2b3c4d", StatusCommand("TSK-1a2b3c4d")),
        ("status  TSK-1a2b3c4d  ", StatusCommand("TSK-1a2b3c4d")),
        ("LIST", ListCommand()),
        ("list running", ListCommand("RUNNING")),
        ("LIST FAILED", ListCommand("FAILED")),
        ("LIST --dag DAG-1", ListCommand(None, "DAG-1")),
        ("list failed --dag A", ListCommand("FAILED", "A")),
        ("LOGS TSK-1", LogsCommand("TSK-1")),
        ("LOGS TSK-1 --attempt 2", LogsCommand("TSK-1", attempt=2)),
        ("logs TSK-1 -f", LogsCommand("TSK-1", follow=True)),
        ("LOGS -f TSK-1", LogsCommand("TSK-1", follow=True)),
        ("CANCEL TSK-1", CancelCommand("TSK-1")),
        ("Retry TSK-1", RetryCommand("TSK-1")),
        ("DLQ", DlqCommand()),
        ("workers", WorkersCommand()),
        ("HELP", HelpCommand()),
        ("help submit_dag", HelpCommand("SUBMIT_DAG")),
        ("EXIT", ExitCommand()),
        ("quit", ExitCommand()),
    ],
)
def test_simple_commands(line: str, expected: object) -> None:
    assert parse_line(line) == expected


def test_commands_are_case_insensitive_and_type_is_normalised() -> None:
    assert parse_line("submit run|calc.py") == parse_line("SUBMIT RUN|calc.py")
    assert parse_line("STATUS\tK1") == parse_line("STATUS K1")  # a tab after the command word too
    dag = parse_line("submit_dag a|run|calc.py|1|0|[]")
    assert isinstance(dag, SubmitDagCommand)
    assert dag.specs[0].type == "RUN"


def test_dag_deps_spacing_variants_and_affinity() -> None:
    specs = parse_dag("A|RUN|a.py|1|0|[] ; B|RUN|b.py|1|0|[A,C] ; C|RUN|c.py|3|10|[ A ]|AFFINITY ;")
    assert [spec.deps for spec in specs] == [[], ["A", "C"], ["A"]]
    assert [spec.affinity for spec in specs] == [False, False, True]
    assert specs[2].priority == 3 and specs[2].delay_ms == 10


def test_dag_worker_deploy_without_port_is_allowed() -> None:
    [spec] = parse_dag("W|DEPLOY|worker|1|0|[]")
    assert spec.port is None and is_worker_artifact(spec.data)


def test_shell_command_may_contain_pipes() -> None:
    assert parse_submit("SHELL|ls -l | wc -l") == JobSpec(type="SHELL", data="ls -l | wc -l")
    assert parse_submit("SHELL|ls | wc -l|5|100") == JobSpec(type="SHELL", data="ls | wc -l", priority=5, delay_ms=100)


def test_a_run_or_deploy_gives_its_file_arguments_after_the_name() -> None:
    assert parse_submit("RUN|calc.py 200000|2") == JobSpec(type="RUN", data="calc.py", args=["200000"], priority=2)
    assert parse_submit("RUN|'calc.py'") == JobSpec(type="RUN", data="calc.py")  # quoted as a shell would
    assert parse_submit("RUN|'my job.py' --name \"a b\"") == JobSpec(
        type="RUN", data="my job.py", args=["--name", "a b"]
    )
    assert parse_submit("DEPLOY|server_dashboard.py --port 8050").args == ["--port", "8050"]
    assert parse_submit("RUN|@./local.py x").data == "@./local.py"  # an inline script, with its argument
    # the other types keep DATA whole
    assert parse_submit("EMAIL_ALERT|admin@titan.com now").data == "admin@titan.com now"
    [spec] = parse_dag("A|RUN|sleep.py 5|1|0|[]")
    assert (spec.data, spec.args) == ("sleep.py", ["5"])


def test_a_semicolon_inside_a_dag_job_is_escaped_with_a_backslash() -> None:
    a, b = parse_dag(r"A|SHELL|sleep 1\; echo a|1|0|[] ; B|SHELL|echo b|1|0|[A]")
    assert (a.data, b.data, b.deps) == ("sleep 1; echo a", "echo b", ["A"])
    with pytest.raises(UsageError, match=r"a ';' inside a command is written '\\;'"):
        parse_dag("A|SHELL|sleep 1; echo a|1|0|[]")


def test_submit_of_the_worker_artifact_takes_its_port_as_submit_dag_does() -> None:
    assert parse_submit("DEPLOY|Worker.jar|8081") == JobSpec(type="DEPLOY", data="Worker.jar", port=8081)
    assert parse_submit("DEPLOY|worker|0|2|500") == JobSpec(
        type="DEPLOY", data="worker", port=0, priority=2, delay_ms=500
    )


def test_one_shot_submit_string_uses_the_same_parser() -> None:
    assert parse_submit("PDF_CONVERT|future_report.pdf|1|8000") == JobSpec(
        type="PDF_CONVERT", data="future_report.pdf", priority=1, delay_ms=8000
    )


def test_every_command_is_parseable_by_name() -> None:
    # the parser table and the HELP list share COMMAND_NAMES; make sure each word is a command
    for name in COMMAND_NAMES:
        with pytest.raises(UsageError) as info:
            parse_line(f"{name} too many words here")
        assert "unknown command" not in str(info.value)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("", "empty line"),
        ("   ", "empty line"),
        ("FROB x", "unknown command 'FROB'"),
        ("SUBMIT", "SUBMIT expects TYPE|DATA[|PRIORITY[|DELAY_MS]]"),
        ("SUBMIT RUN", "SUBMIT expects TYPE|DATA[|PRIORITY[|DELAY_MS]]"),
        ("SUBMIT RUN|", "DATA is empty"),
        ("SUBMIT |calc.py", "SUBMIT expects TYPE|DATA"),
        (
            "SUBMIT RUN|calc.py|x",
            "SUBMIT expects TYPE|DATA[|PRIORITY[|DELAY_MS]]; PRIORITY must be an integer, got 'x'",
        ),
        ("SUBMIT RUN|calc.py|1|soon", "DELAY_MS must be an integer, got 'soon'"),
        ("SUBMIT RUN|calc.py|1|-5", "DELAY_MS must be at least 0, got -5"),
        ("SUBMIT RUN|calc.py|99999999999999999999", "PRIORITY must fit in 64 bits, got 99999999999999999999"),
        ("SUBMIT RUN|calc.py|1|9223372036854775808", "DELAY_MS must fit in 64 bits"),
        ("SUBMIT RUN|calc.py|1|0|9", "got 5 fields"),
        ("SUBMIT R UN|calc.py", "TYPE must be a word"),
        ("SUBMIT RUN|calc.py 'unclosed", "cannot split 'calc.py 'unclosed' into a file and its arguments"),
        ("SUBMIT RUN|'unclosed", "cannot split ''unclosed' into a file and its arguments: No closing quotation"),
        ("SUBMIT DEPLOY|Worker.jar", "of the worker artifact expects DEPLOY|Worker.jar|PORT[|PRIORITY[|DELAY_MS]]"),
        ("SUBMIT DEPLOY|Worker.jar|x", "PORT must be an integer, got 'x'"),
        ("SUBMIT DEPLOY|worker 19612", "takes its port as a field: DEPLOY|Worker.jar|PORT[|PRIORITY[|DELAY_MS]]"),
        ("SUBMIT DEPLOY|Worker.jar|65536", "PORT must be at most 65535"),
        ("SUBMIT_DAG A|RUN|a.py|1|0|[]|AFFINITY", "AFFINITY runs a job on the worker of its first dependency"),
        ("SUBMIT_DAG", "SUBMIT_DAG expects jobs separated by ';'"),
        ("SUBMIT_DAG ;  ; ", "SUBMIT_DAG expects jobs separated by ';'"),
        ("SUBMIT_DAG A|RUN|calc.py|1|0", "SUBMIT_DAG job A: expected ID|TYPE|DATA[|PORT]|PRIORITY|DELAY_MS|[DEPS]"),
        ("SUBMIT_DAG A|RUN|calc.py|1|0|B", "expected [DEPS] as the last field"),
        ("SUBMIT_DAG A|RUN|calc.py|1|0|[B", "expected [DEPS] as the last field"),
        ("SUBMIT_DAG A|RUN|calc.py|1|0|B]", "expected [DEPS] as the last field"),
        ("SUBMIT_DAG A|RUN|calc.py|1|0|[B,,C]", "an empty name"),
        ("SUBMIT_DAG A|RUN|calc.py|1|0|[[B]]", "bad dependency name"),
        (
            "SUBMIT_DAG A|RUN|calc.py|x|0|[]",
            "SUBMIT_DAG job A: expects ID|TYPE|DATA[|PORT]|PRIORITY|DELAY_MS|[DEPS][|AFFINITY]; PRIORITY must be an integer, got 'x'",
        ),
        ("SUBMIT_DAG A|RUN|calc.py|1|later|[]", "DELAY_MS must be an integer, got 'later'"),
        ("SUBMIT_DAG A|RUN|calc.py|8081|1|0|[]", "PORT is only allowed for a DEPLOY of the worker artifact"),
        ("SUBMIT_DAG W|DEPLOY|Worker.jar|80x1|1|0|[]", "PORT must be an integer, got '80x1'"),
        ("SUBMIT_DAG W|DEPLOY|Worker.jar|70000|1|0|[]", "SUBMIT_DAG job W: PORT must be at most 65535"),
        ("SUBMIT_DAG W|DEPLOY|Worker.jar|8081|1|0|7|[]", "got 8 fields"),
        ("SUBMIT_DAG |RUN|calc.py|1|0|[]", "ID is empty"),
        ("SUBMIT_DAG A|RUN||1|0|[]", "DATA is empty"),
        ("SUBMIT_DAG A|RUN|a.py|1|0|[] ; A|RUN|b.py|1|0|[]", "job id A appears twice"),
        ("STATUS", "STATUS expects one job id: STATUS <id>"),
        ("STATUS a b", "STATUS expects one job id"),
        ("CANCEL", "CANCEL expects one job id"),
        ("RETRY", "RETRY expects one job id"),
        ("LIST SLEEPING", "LIST expects [STATE] [--dag ID] with STATE one of"),
        ("LIST RUNNING extra", "LIST expects [STATE]"),
        ("LIST --dag", "--dag needs a DAG id"),
        ("LIST WAITING", "FAILED, CANCELLED"),  # FAILED (waiting out its backoff) may be listed too
        ("LOGS", "LOGS expects LOGS <id> [-f] [--attempt N]"),
        ("LOGS A --attempt 0", "N must be at least 1, got 0"),
        ("LOGS A --attempt", "--attempt needs a number"),
        ("LOGS a b", "LOGS expects LOGS <id> [-f]"),
        ("LOGS a -x", "unknown option '-x'"),
        ("STATS now", "STATS takes no arguments"),
        ("EXIT please", "EXIT takes no arguments"),
        ("HELP FROB", "HELP: unknown command 'FROB'"),
        ("HELP a b", "HELP expects HELP [command]"),
    ],
)
def test_malformed_lines_name_what_was_expected(line: str, message: str) -> None:
    with pytest.raises(UsageError) as info:
        parse_line(line)
    text = str(info.value)
    assert message in text
    assert "\n" not in text


def test_a_shell_line_that_reads_like_a_mistyped_priority_is_run_as_written_with_a_warning() -> None:
    command = parse_line("SUBMIT SHELL|true|1|x")
    assert command == SubmitCommand(
        JobSpec(type="SHELL", data="true|1|x"),
        "'x' is not a number, so the whole 'true|1|x' is the command line "
        "(only trailing integers are taken as PRIORITY and DELAY_MS)",
    )
    empty_field = parse_line("SUBMIT SHELL|true|")
    assert isinstance(empty_field, SubmitCommand) and empty_field.spec.data == "true|"
    assert empty_field.warning.startswith("the command line 'true|' ends with '|': an empty field is not a PRIORITY")
    for quiet in (
        "SUBMIT SHELL|a || b",
        "SUBMIT SHELL|ls | wc -l|2",
        "SUBMIT SHELL|true|1|2",
        "SUBMIT SHELL|sort | uniq -c",
        "SUBMIT RUN|a.py|1",
    ):
        parsed = parse_line(quiet)
        assert isinstance(parsed, SubmitCommand) and parsed.warning == "", quiet
