"""``docs/PROTOCOL.md`` and the code keep each other honest.

The doc's opcode tables, field tables, error table and hex example are parsed
and compared with ``Opcode``, the message dataclasses, the error classes and
the real encoder. A change on either side fails here until the other follows.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import protocol.errors as protocol_errors
from protocol import REPLIES, REQUESTS, JobStatus, Message, Opcode, ProtocolError, encode_message
from tests.protocol._wire_schema import MESSAGE_CLASSES, fields_of, render_default, render_type

REPO = Path(__file__).resolve().parents[2]
DOC_PATH = REPO / "docs" / "PROTOCOL.md"
DOC = DOC_PATH.read_text(encoding="utf-8")

OPCODE_ROW = re.compile(r"^\| `([A-Z_]+)` \| `(0x[0-9A-Fa-f]{2})` \|(.*)$", re.MULTILINE)
HEADING = re.compile(r"^#{2,4} ", re.MULTILINE)
FIELD_ROW = re.compile(r"^\| `(\w+)` \| (.+?) \| (.+?) \| (.*?) \|$")
ERROR_ROW = re.compile(r"^\| `([A-Z_]+)` \| (yes|no) \| (.+) \|$", re.MULTILINE)

# codes Titan's application layer puts on the wire (titan/errors.py and the peer adapter)
APPLICATION_CODES = ["USAGE", "INVALID_JOB", "UNKNOWN_JOB", "INVALID_TRANSITION", "DAG_CYCLE", "INTERNAL", "UNEXPECTED"]


def cells(rest: str) -> list[str]:
    return [c.strip() for c in rest.strip().strip("|").split("|")]


def opcode_rows() -> dict[str, tuple[str, list[str]]]:
    rows: dict[str, tuple[str, list[str]]] = {}
    for name, hex_value, rest in OPCODE_ROW.findall(DOC):
        assert name not in rows, f"{name} appears in two opcode tables"
        rows[name] = (hex_value, cells(rest))
    return rows


def section(title: str) -> str:
    """The text under ``#### `title``` up to the next heading."""
    match = re.search(rf"^#### `{re.escape(title)}`\n", DOC, re.MULTILINE)
    assert match, f"docs/PROTOCOL.md has no section for {title}"
    following = HEADING.search(DOC, match.end())
    return DOC[match.end() : following.start() if following else len(DOC)]


# --------------------------------------------------------------------------- opcodes


@pytest.mark.parametrize("op", list(Opcode), ids=lambda op: op.name)
def test_every_opcode_is_documented_with_its_value(op: Opcode) -> None:
    rows = opcode_rows()
    assert op.name in rows, f"{op.name} has no row in docs/PROTOCOL.md"
    assert int(rows[op.name][0], 16) == op.value
    assert rows[op.name][0] == f"0x{op.value:02X}", "write hex values as 0xNN"


def test_every_documented_opcode_exists() -> None:
    for name, (hex_value, _) in opcode_rows().items():
        assert name in Opcode.__members__, f"docs/PROTOCOL.md documents {name}, which Opcode lacks"
        assert Opcode[name] == int(hex_value, 16)


def test_opcode_rows_name_their_body_and_answer() -> None:
    for name, (_, row) in opcode_rows().items():
        op = Opcode[name]
        direction, body, answer = row
        assert direction, name
        assert f"`{REQUESTS[op].__name__}`" in body, f"{name}: body should name {REQUESTS[op].__name__}"
        if op in REPLIES:
            assert "request" in direction, f"{name} is answered, so the doc should call it a request"
            assert f"`{REPLIES[op].__name__}`" in answer, f"{name}: answer should name {REPLIES[op].__name__}"
        else:
            assert "request" not in direction, f"{name} has no reply class but the doc calls it a request"


def test_opcode_tables_follow_the_grouping_of_the_enum() -> None:
    order = [name for name in opcode_rows()]
    assert order == [op.name for op in sorted(Opcode)]


# --------------------------------------------------------------------------- field tables


@pytest.mark.parametrize("cls", MESSAGE_CLASSES, ids=lambda cls: cls.__name__)
def test_field_table_matches_the_dataclass(cls: type[Message]) -> None:
    text = section(cls.__name__)
    documented = []
    for line in text.splitlines():
        match = FIELD_ROW.match(line)
        if match:
            name, type_text, default, meaning = match.groups()
            assert meaning, f"{cls.__name__}.{name} has no meaning in the doc"
            documented.append((name, type_text, default))
    expected = [(f.name, render_type(hint), render_default(f)) for f, hint in fields_of(cls)]
    assert documented == expected
    if not expected:
        assert "No fields" in text


def slug(heading: str) -> str:
    """The anchor a Markdown renderer gives a heading (GitHub's rule)."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_every_link_points_at_a_heading() -> None:
    anchors = {slug(h) for h in re.findall(r"^#+ (.+)$", DOC, re.MULTILINE)}
    links = re.findall(r"\]\(#([\w-]+)\)", DOC)
    assert links
    for name in links:
        assert name in anchors, f"broken link #{name}"


# --------------------------------------------------------------------------- errors


def error_rows() -> dict[str, bool]:
    return {code: fatal == "yes" for code, fatal, _ in ERROR_ROW.findall(DOC)}


def protocol_error_classes() -> list[type[ProtocolError]]:
    return [
        obj
        for obj in vars(protocol_errors).values()
        if isinstance(obj, type) and issubclass(obj, ProtocolError) and obj is not ProtocolError
    ]


@pytest.mark.parametrize("cls", protocol_error_classes(), ids=lambda cls: cls.__name__)
def test_protocol_error_codes_are_documented_with_their_fatality(cls: type[ProtocolError]) -> None:
    rows = error_rows()
    assert cls.error_code in rows
    assert rows[cls.error_code] == cls.fatal


@pytest.mark.parametrize("code", APPLICATION_CODES)
def test_application_error_codes_are_documented_as_non_fatal(code: str) -> None:
    assert error_rows().get(code) is False


def test_every_documented_code_is_one_the_code_can_send() -> None:
    sources = "\n".join(path.read_text(encoding="utf-8") for path in REPO.glob("titan/**/*.py"))
    protocol_codes = {cls.error_code for cls in protocol_error_classes()}
    for code in error_rows():
        if code not in protocol_codes:
            assert f'"{code}"' in sources, f"{code} is documented but nothing in titan/ sends it"


# --------------------------------------------------------------------------- header and example


def test_header_table_has_every_byte() -> None:
    for byte, name in [("0", "Version"), ("1", "OpCode"), ("2", "Flags"), ("3", "Spare"), ("4–7", "Payload Length")]:
        assert re.search(rf"^\| {byte} \| {name} \|", DOC, re.MULTILINE), f"header byte {byte} ({name})"


def test_default_max_body_is_the_documented_one() -> None:
    from protocol import DEFAULT_MAX_BODY

    assert DEFAULT_MAX_BODY == 16 * 1024 * 1024
    assert "16 MiB (16 777 216 bytes)" in DOC


def test_hex_example_is_what_the_encoder_produces() -> None:
    match = re.search(r"```\n(00000000 .*?)```", DOC, re.DOTALL)
    assert match, "no hex dump in docs/PROTOCOL.md"
    dumped = bytearray()
    for line in match.group(1).splitlines():
        offset, _, rest = line.partition("  ")
        assert int(offset, 16) == len(dumped)
        dumped += bytes.fromhex(rest.split("|")[0])
    assert bytes(dumped) == encode_message(JobStatus(job_id="TSK-1a2b3c4d"), rid=7)
    assert f"is {len(dumped)} bytes on the wire" in DOC


def test_job_states_are_the_ones_the_state_table_knows() -> None:
    from titan.jobs.states import JobState

    row = next(line for line in section("JobInfo").splitlines() if line.startswith("| `state` |"))
    assert set(re.findall(r"`([A-Z]+)`", row)) == {state.value for state in JobState}
