"""Typed message bodies: round trips, schema refusals and the request/reply envelope (no event loop)."""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from typing import Any, Literal, Union

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol import (
    FLAG_ERROR,
    FLAG_REPLY,
    REPLIES,
    REQUESTS,
    Drain,
    ErrorReply,
    Frame,
    Hello,
    JobSpec,
    Message,
    Opcode,
    Register,
    SchemaError,
    Spawn,
    SpawnWorker,
    Submit,
    SubmitDag,
    TaskStatus,
    UnknownOpcode,
    decode_datagram,
    encode_error,
    encode_frame,
    encode_message,
    parse_message,
    parse_reply,
    parse_request,
)
from protocol.text import MAX_MESSAGE_CHARS, one_line
from tests.protocol._wire_schema import MESSAGE_CLASSES, fields_of, sample, wrong_values

# --------------------------------------------------------------------------- strategies from annotations

any_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=8)
    | st.binary(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=6,
)

# fields whose check() narrows the type's range
CONSTRAINED: dict[tuple[str, str], st.SearchStrategy[Any]] = {
    ("Register", "capacity"): st.integers(1, 1 << 16),
    ("Register", "port"): st.integers(0, 65535),
    ("Register", "memory_mb"): st.none() | st.integers(1, 1 << 40),
    ("Register", "host_memory_mb"): st.none() | st.integers(1, 1 << 40),
    ("JobSpec", "type"): st.text(min_size=1, max_size=10),
    # a NUL can be no program's argument (refused, see test_out_of_range_values)
    ("JobSpec", "data"): st.text(st.characters(blacklist_characters="\x00", blacklist_categories=("Cs",)), max_size=20),
    ("JobSpec", "args"): st.lists(
        st.text(st.characters(blacklist_characters="\x00", blacklist_categories=("Cs",)), max_size=10), max_size=3
    ),
    ("JobSpec", "id"): st.none() | st.text(min_size=1, max_size=10),
    ("JobSpec", "delay_ms"): st.integers(0, 2**40),
    ("JobSpec", "max_attempts"): st.integers(1, 100),
    ("JobSpec", "slots"): st.integers(1, 64),
    ("JobSpec", "memory_mb"): st.none() | st.integers(1, 1 << 40),
    ("JobSpec", "timeout_s"): st.none() | st.floats(min_value=1e-3, max_value=1e6),
    ("LogRecord", "seq"): st.integers(0, 2**40),
    ("LogRecord", "offset"): st.integers(0, 2**40),
    ("LogData", "offset"): st.none() | st.integers(0, 2**40),
    ("LogsSubscribe", "attempt"): st.none() | st.integers(1, 2**40),
    ("Gc", "older_than_s"): st.floats(min_value=0, max_value=1e9),
    ("SpawnWorker", "port"): st.integers(0, 65535),
    ("SpawnWorker", "capacity"): st.integers(0, 1 << 16),
    ("Spawn", "port"): st.integers(0, 65535),
    ("Spawn", "capacity"): st.integers(0, 1 << 16),
    ("SubmitDag", "part"): st.just(0),
    ("SubmitDag", "parts"): st.integers(1, 1 << 16),
}


def strategy_for(tp: Any) -> st.SearchStrategy[Any]:
    simple: dict[Any, st.SearchStrategy[Any]] = {
        str: st.text(max_size=10),
        int: st.integers(-(2**63), 2**63 - 1),
        float: st.floats(allow_nan=False, allow_infinity=False),
        bool: st.booleans(),
        bytes: st.binary(max_size=12),
        Any: any_values,
    }
    if tp in simple:
        return simple[tp]
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (Union, types.UnionType):
        (inner,) = (a for a in args if a is not type(None))
        return st.none() | strategy_for(inner)
    if origin is Literal:
        return st.sampled_from(args)
    if origin is list:
        return st.lists(strategy_for(args[0]), max_size=3)
    if origin is dict:
        return st.dictionaries(st.text(max_size=6), strategy_for(args[1]), max_size=3)
    if isinstance(tp, type) and issubclass(tp, Message):
        return message_strategy(tp)
    raise AssertionError(f"no strategy for {tp!r}")


def message_strategy(cls: type[Message]) -> st.SearchStrategy[Message]:
    kwargs: dict[str, st.SearchStrategy[Any]] = {}
    for f, hint in fields_of(cls):
        constrained = CONSTRAINED.get((cls.__name__, f.name))
        kwargs[f.name] = strategy_for(hint) if constrained is None else constrained
    if cls is SubmitDag:
        kwargs["jobs"] = st.lists(message_strategy(JobSpec), min_size=1, max_size=3)
    return st.builds(cls, **kwargs)


def class_id(cls: type[Message]) -> str:
    return cls.__name__


# --------------------------------------------------------------------------- tables


def test_every_opcode_has_a_body_class_of_that_opcode() -> None:
    assert set(REQUESTS) == set(Opcode)
    for op, cls in REQUESTS.items():
        assert cls.OPCODE is op


def test_reply_classes_answer_requests() -> None:
    for op, cls in REPLIES.items():
        assert op in REQUESTS
        assert REQUESTS[op] is not cls
        assert cls.OPCODE in REPLIES  # a reply class names the request family it answers


# --------------------------------------------------------------------------- round trips


@pytest.mark.parametrize("cls", MESSAGE_CLASSES, ids=class_id)
@given(data=st.data())
@settings(max_examples=20, deadline=None)
def test_round_trip_through_msgpack(cls: type[Message], data: st.DataObject) -> None:
    message = data.draw(message_strategy(cls))
    assert cls.from_wire(message.to_wire()) == message
    frame = decode_datagram(encode_frame(0x30, message.to_wire()))
    assert cls.from_wire(frame.body) == message


@pytest.mark.parametrize("cls", MESSAGE_CLASSES, ids=class_id)
@given(data=st.data())
@settings(max_examples=30, deadline=None)
def test_the_fast_decoder_agrees_with_the_generic_one(cls: type[Message], data: st.DataObject) -> None:
    # from_wire tries code generated per class first; it must accept, build and refuse exactly as the generic path
    body = data.draw(message_strategy(cls)).to_wire()
    if body and data.draw(st.booleans()):
        name = data.draw(st.sampled_from(sorted(body)))
        if data.draw(st.booleans()):
            body[name] = data.draw(any_values)
        else:
            del body[name]

    def outcome(decode: Any) -> Any:
        try:
            return decode(body)
        except SchemaError as exc:
            return ("refused", str(exc))

    assert outcome(cls.from_wire) == outcome(cls._checked_from_wire)


@pytest.mark.parametrize(("op", "cls"), REQUESTS.items(), ids=[op.name for op in REQUESTS])
@given(data=st.data(), rid=st.none() | st.integers(0, 2**32))
@settings(max_examples=12, deadline=None)
def test_request_envelope_round_trip(op: Opcode, cls: type[Message], data: st.DataObject, rid: int | None) -> None:
    message = data.draw(message_strategy(cls))
    frame = decode_datagram(encode_message(message, rid=rid))
    assert frame.opcode == op
    assert frame.flags == 0
    assert frame.rid == rid
    assert parse_request(frame) == message
    assert parse_request(frame, {op: cls}) == message
    if op is not Opcode.ERROR:
        assert parse_message(frame) == message


@pytest.mark.parametrize(("op", "cls"), REPLIES.items(), ids=[op.name for op in REPLIES])
@given(data=st.data(), rid=st.integers(0, 2**32))
@settings(max_examples=12, deadline=None)
def test_reply_envelope_round_trip(op: Opcode, cls: type[Message], data: st.DataObject, rid: int) -> None:
    message = data.draw(message_strategy(cls))
    frame = decode_datagram(encode_message(message, rid=rid, reply_to=op))
    assert frame.opcode == op
    assert frame.flags == FLAG_REPLY
    assert frame.rid == rid
    assert parse_reply(frame) == message
    assert parse_message(frame) == message


def test_unknown_keys_are_ignored() -> None:
    body = {"role": "worker", "version": 1, "rid": 4, "future_field": [1, 2]}
    assert Hello.from_wire(body) == Hello(role="worker", version=1)


def test_defaults_fill_missing_optional_fields() -> None:
    spec = JobSpec.from_wire({"type": "RUN"})
    assert spec == JobSpec(type="RUN")
    assert (spec.priority, spec.max_attempts, spec.slots, spec.skills) == (1, 3, 1, ["GENERAL"])


def test_an_integer_is_accepted_where_a_float_is_expected() -> None:
    status = TaskStatus.from_wire({"job_id": "J", "attempt": 1, "state": "RUNNING", "started_at": 5})
    assert status.started_at == 5.0
    assert isinstance(status.started_at, float)


def test_tuples_count_as_arrays() -> None:
    assert SubmitDag.from_wire({"jobs": ({"type": "RUN"},)}) == SubmitDag(jobs=[JobSpec(type="RUN")])


# --------------------------------------------------------------------------- refusals

REQUIRED = [
    (cls, f.name)
    for cls in MESSAGE_CLASSES
    for f, _ in fields_of(cls)
    if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
]


@pytest.mark.parametrize(("cls", "name"), REQUIRED, ids=[f"{c.__name__}.{n}" for c, n in REQUIRED])
def test_missing_required_field(cls: type[Message], name: str) -> None:
    body = sample(cls).to_wire()
    del body[name]
    with pytest.raises(SchemaError, match=f"missing field '{name}'"):
        cls.from_wire(body)


MISTYPED = [(cls, f.name, hint) for cls in MESSAGE_CLASSES for f, hint in fields_of(cls) if wrong_values(hint)]


@pytest.mark.parametrize(("cls", "name", "hint"), MISTYPED, ids=[f"{c.__name__}.{n}" for c, n, _ in MISTYPED])
def test_wrong_type_is_a_schema_error(cls: type[Message], name: str, hint: Any) -> None:
    body = sample(cls).to_wire()
    assert cls.from_wire(body) == sample(cls)
    for wrong in wrong_values(hint):
        with pytest.raises(SchemaError, match=f"{cls.__name__}.{name}") as info:
            cls.from_wire({**body, name: wrong})
        assert info.value.error_code == "BAD_MESSAGE"
        assert not info.value.fatal


def nested(depth: int) -> list[Any]:
    value: list[Any] = []
    for _ in range(depth):
        value = [value]
    return value


# msgpack decodes up to 1 023 levels: a repr() of that many is past Python's recursion limit
REFUSED_AS_SHOWN = [nested(1020), list(range(100_000)), "x" * 100_000, b"\xff" * 100_000, {"a": 1}, 2**70]


@pytest.mark.parametrize(
    "wrong", REFUSED_AS_SHOWN, ids=["deep", "long-list", "long-str", "long-bytes", "map", "big-int"]
)
@pytest.mark.parametrize(("cls", "name", "hint"), MISTYPED, ids=[f"{c.__name__}.{n}" for c, n, _ in MISTYPED])
def test_a_refused_value_is_named_in_a_few_words_whatever_its_size_or_depth(
    cls: type[Message], name: str, hint: Any, wrong: Any
) -> None:
    body = sample(cls).to_wire()
    try:
        cls.from_wire({**body, name: wrong})
    except SchemaError as exc:  # anything else (RecursionError, a ValueError from repr) fails the test
        assert len(exc.message) < 400
    # (or the field takes it: a long string where a string goes)


@pytest.mark.parametrize(
    ("body", "where"),
    [
        ({"job": {"type": 1}}, "Submit.job: JobSpec.type"),
        ({"job": {"type": "RUN", "deps": ["a", 2]}}, r"JobSpec.deps\[1\]"),
        ({"job": {"type": "RUN", "priority": True}}, "JobSpec.priority"),
        ({"job": {"type": "RUN", "args": {"a": 1}}}, "JobSpec.args"),
        ({"job": {"data": "calc.py"}}, "missing field 'type'"),
        ({"job": [{"type": "RUN"}]}, "Submit.job"),
    ],
)
def test_nested_errors_name_the_path(body: dict[str, Any], where: str) -> None:
    with pytest.raises(SchemaError, match=where):
        Submit.from_wire(body)


def test_nested_list_item_errors_name_the_index() -> None:
    body = sample(Register).to_wire()
    body["running"] = [{"job_id": "a", "attempt": 1}, {"job_id": "b", "attempt": "2"}]
    with pytest.raises(SchemaError, match=r"Register.running\[1\]: TaskRef.attempt"):
        Register.from_wire(body)
    body["running"] = []
    body["finished"] = [{"job_id": "a", "attempt": 1, "state": "DONE"}]
    with pytest.raises(SchemaError, match=r"Register.finished\[0\]: TaskStatus.state"):
        Register.from_wire(body)


FLOATS = [
    (cls, f.name)
    for cls in MESSAGE_CLASSES
    for f, hint in fields_of(cls)
    if hint is float or (typing.get_origin(hint) in (Union, types.UnionType) and float in typing.get_args(hint))
]


@pytest.mark.parametrize(("cls", "name"), FLOATS, ids=[f"{c.__name__}.{n}" for c, n in FLOATS])
@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf], ids=["nan", "inf", "-inf"])
def test_non_finite_floats_are_refused(cls: type[Message], name: str, bad: float) -> None:
    body = {**sample(cls).to_wire(), name: bad}
    with pytest.raises(SchemaError, match="finite"):
        cls.from_wire(body)
    with pytest.raises(SchemaError, match="finite"):  # the same through the wire
        cls.from_wire(decode_datagram(encode_frame(0x30, body)).body)


def test_nested_non_finite_float_is_refused() -> None:
    with pytest.raises(SchemaError, match="JobSpec.timeout_s"):
        Submit.from_wire({"job": {"type": "RUN", "timeout_s": math.nan}})


def test_huge_integer_where_a_float_is_expected() -> None:
    with pytest.raises(SchemaError, match="timeout_s"):
        JobSpec.from_wire({"type": "RUN", "timeout_s": 10**400})


@pytest.mark.parametrize(
    ("cls", "changes", "where"),
    [
        (Register, {"capacity": 0}, "Register.capacity"),
        (Register, {"capacity": -5}, "Register.capacity"),
        (Register, {"port": -1}, "Register.port"),
        (Register, {"port": 65536}, "Register.port"),
        (Register, {"memory_mb": 0}, "Register.memory_mb"),
        (Register, {"host_memory_mb": -3}, "Register.host_memory_mb"),
        (JobSpec, {"type": ""}, "JobSpec.type"),
        (JobSpec, {"id": ""}, "JobSpec.id"),
        (JobSpec, {"delay_ms": -1}, "JobSpec.delay_ms"),
        (JobSpec, {"max_attempts": 0}, "JobSpec.max_attempts"),
        (JobSpec, {"slots": 0}, "JobSpec.slots"),
        (JobSpec, {"memory_mb": -1}, "JobSpec.memory_mb"),
        (JobSpec, {"timeout_s": 0}, "JobSpec.timeout_s"),
        (JobSpec, {"timeout_s": -1.5}, "JobSpec.timeout_s"),
        (JobSpec, {"data": "echo a\x00b"}, "JobSpec.data: must not contain NUL"),
        (JobSpec, {"args": ["fine", "x\x00"]}, "JobSpec.args: must not contain NUL"),
        (JobSpec, {"type": "shell", "data": "echo " + "x" * 131067}, "JobSpec.data: a command line over 131071"),
        (JobSpec, {"args": ["é" * 65536]}, "JobSpec.args: an argument over 131071 bytes"),
        (JobSpec, {"args": ["x" * 100_000] * 11}, "JobSpec.args: data and args over 1048576 bytes"),
        (SubmitDag, {"jobs": []}, "SubmitDag.jobs"),
        (Hello, {"role": "admin"}, "Hello.role"),
        (TaskStatus, {"state": "running"}, "TaskStatus.state"),
        (SpawnWorker, {"port": 65536}, "SpawnWorker.port"),
        (SpawnWorker, {"capacity": -1}, "SpawnWorker.capacity"),
        (Spawn, {"port": -1}, "Spawn.port"),
        (Spawn, {"capacity": -2}, "Spawn.capacity"),
    ],
)
def test_out_of_range_values(cls: type[Message], changes: dict[str, Any], where: str) -> None:
    body = {**sample(cls).to_wire(), **changes}
    with pytest.raises(SchemaError, match=where):
        cls.from_wire(body)


def test_what_exec_takes_is_accepted() -> None:
    JobSpec(type="SHELL", data="echo " + "x" * 131066, args=["y" * 131071] * 7).check()
    JobSpec(type="RUN", data="calc.py", args=["é" * 65535]).check()


def test_nested_range_check_runs() -> None:
    with pytest.raises(SchemaError, match=r"SubmitDag.jobs\[1\]: JobSpec.max_attempts"):
        SubmitDag.from_wire({"jobs": [{"type": "RUN"}, {"type": "RUN", "max_attempts": 0}]})


@pytest.mark.parametrize("body", [None, [], "x", 1, b"map"], ids=repr)
def test_a_body_that_is_not_a_map(body: Any) -> None:
    with pytest.raises(SchemaError):
        Hello.from_wire(body)


@st.composite
def fuzzed_body(draw: st.DrawFn, cls: type[Message]) -> dict[str, Any]:
    """A map whose keys are mostly the class' fields, each missing, valid or junk."""
    body: dict[str, Any] = {}
    for f, hint in fields_of(cls):
        choice = draw(st.sampled_from(["missing", "valid", "junk"]))
        if choice == "valid":
            value = draw(strategy_for(hint))
            body[f.name] = value.to_wire() if isinstance(value, Message) else _wire(value)
        elif choice == "junk":
            body[f.name] = draw(any_values | st.sampled_from([math.nan, math.inf, -(2**63), 2**64 - 1]))
    body.update(draw(st.dictionaries(st.text(max_size=5), any_values, max_size=2)))
    return body


def _wire(value: Any) -> Any:
    if isinstance(value, Message):
        return value.to_wire()
    if isinstance(value, list):
        return [_wire(v) for v in value]
    return value


@pytest.mark.parametrize("cls", MESSAGE_CLASSES, ids=class_id)
@given(data=st.data())
@settings(max_examples=20, deadline=None)
def test_fuzzed_bodies_raise_schema_error_and_nothing_else(cls: type[Message], data: st.DataObject) -> None:
    body = data.draw(fuzzed_body(cls))
    try:
        message = cls.from_wire(body)
    except SchemaError as exc:
        assert exc.message
        return
    assert isinstance(message, cls)
    assert cls.from_wire(message.to_wire()) == message


# --------------------------------------------------------------------------- envelope


@pytest.mark.parametrize("opcode", sorted(set(range(256)) - set(Opcode)))
def test_parse_request_of_an_unknown_opcode(opcode: int) -> None:
    with pytest.raises(UnknownOpcode) as info:
        parse_request(Frame(opcode, {}))
    assert info.value.error_code == "UNKNOWN_OPCODE"
    assert not info.value.fatal
    with pytest.raises(UnknownOpcode):
        parse_reply(Frame(opcode, {}, FLAG_REPLY))


def test_parse_request_honours_the_allowed_table() -> None:
    frame = decode_datagram(encode_message(Submit(job=JobSpec(type="RUN")), rid=1))
    with pytest.raises(UnknownOpcode, match="SUBMIT"):
        parse_request(frame, {Opcode.HELLO: Hello})


@pytest.mark.parametrize("op", sorted(set(Opcode) - set(REPLIES) - {Opcode.ERROR}), ids=lambda op: op.name)
def test_parse_reply_of_an_opcode_without_answers(op: Opcode) -> None:
    with pytest.raises(UnknownOpcode, match=op.name):
        parse_reply(Frame(op, {"rid": 1}, FLAG_REPLY))


def test_parse_request_refuses_a_bad_body_with_schema_error() -> None:
    frame = decode_datagram(encode_frame(Opcode.SUBMIT, {"rid": 3, "job": {"type": ["RUN"]}}))
    with pytest.raises(SchemaError):
        parse_request(frame)


def test_encode_error_with_rid_answers_that_request() -> None:
    frame = decode_datagram(encode_error("UNKNOWN_JOB", "no job with id 'x'", rid=42))
    assert frame.opcode == Opcode.ERROR
    assert frame.flags == FLAG_REPLY | FLAG_ERROR
    assert frame.body == {"code": "UNKNOWN_JOB", "message": "no job with id 'x'", "rid": 42}
    assert frame.rid == 42
    assert parse_reply(frame) == ErrorReply(code="UNKNOWN_JOB", message="no job with id 'x'")
    assert parse_message(frame) == ErrorReply(code="UNKNOWN_JOB", message="no job with id 'x'")


def test_encode_error_without_rid_is_not_a_reply() -> None:
    frame = decode_datagram(encode_error("BAD_HEADER", "spare byte must be zero"))
    assert frame.opcode == Opcode.ERROR
    assert frame.flags == FLAG_ERROR
    assert "rid" not in frame.body
    assert frame.rid is None
    assert parse_reply(frame) == ErrorReply(code="BAD_HEADER", message="spare byte must be zero")
    assert parse_message(frame) == ErrorReply(code="BAD_HEADER", message="spare byte must be zero")


@given(message=st.text(st.characters(exclude_categories=())) | st.text(min_size=MAX_MESSAGE_CHARS - 5))
def test_an_error_message_goes_out_as_one_bounded_printable_line(message: str) -> None:
    frame = decode_datagram(encode_error("UNKNOWN_JOB", message, rid=1))
    sent = frame.body["message"]
    assert sent.isprintable()  # so no line break, no control character, no lone surrogate
    assert len(sent) <= MAX_MESSAGE_CHARS + len("... (cut from 99999 characters)")
    if message.isprintable() and len(message) <= MAX_MESSAGE_CHARS:
        assert sent == message


def test_an_error_message_shows_what_it_escaped_and_where_it_was_cut() -> None:
    assert one_line("no job with id 'a\nb'") == "no job with id 'a\\nb'"
    assert one_line("x" * 30, limit=10) == "xxxxxxxxxx... (cut from 30 characters)"


def test_error_flag_on_any_opcode_parses_as_an_error() -> None:
    frame = Frame(Opcode.SUBMIT, {"rid": 1, "code": "INVALID_JOB", "message": "no such file"}, FLAG_REPLY | FLAG_ERROR)
    assert parse_reply(frame) == ErrorReply(code="INVALID_JOB", message="no such file")


def test_malformed_error_frame_is_a_schema_error() -> None:
    with pytest.raises(SchemaError, match="message"):
        parse_reply(Frame(Opcode.ERROR, {"code": "X", "rid": 1}, FLAG_REPLY | FLAG_ERROR))


def test_reply_with_the_wrong_body_is_a_schema_error() -> None:
    frame = decode_datagram(encode_message(Drain(reason="x"), rid=1, reply_to=Opcode.SUBMIT))
    with pytest.raises(SchemaError, match="SubmitReply"):
        parse_reply(frame)


@pytest.mark.parametrize(("part", "parts"), [(0, 0), (-1, 2), (2, 2), (5, 3)])
def test_a_dag_part_out_of_its_range_is_refused(part: int, parts: int) -> None:
    with pytest.raises(SchemaError, match="SubmitDag.part"):
        SubmitDag.from_wire({"jobs": [{"type": "RUN"}], "part": part, "parts": parts})


def test_a_dag_sent_whole_has_no_part_fields_on_the_wire() -> None:
    assert SubmitDag(jobs=[JobSpec(type="RUN")]).to_wire() == {"jobs": [{"type": "RUN"}]}


@pytest.mark.parametrize(
    ("spec", "fragment"),
    [
        (JobSpec(type="SHELL", data="true", priority=2**64), "Integer value out of range"),
        (JobSpec(type="SHELL", data="echo \udcff"), "surrogates not allowed"),  # an undecodable argv byte
    ],
)
def test_a_value_the_wire_cannot_carry_is_a_schema_error_naming_the_message(spec: JobSpec, fragment: str) -> None:
    with pytest.raises(SchemaError, match=f"Submit: cannot be encoded: .*{fragment}"):
        encode_message(Submit(job=spec))
