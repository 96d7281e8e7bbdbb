"""Walk the message dataclasses' annotations: sample values, wrong values, doc renderings.

Shared by the message tests and the doc test so both read the schema the way
``Message.from_wire`` does.
"""

from __future__ import annotations

import dataclasses
import inspect
import types
import typing
from typing import Any, Literal, Union

import protocol.messages as messages_module
from protocol import Message

__all__ = ["MESSAGE_CLASSES", "fields_of", "render_default", "render_type", "sample", "wrong_values"]

MESSAGE_CLASSES: list[type[Message]] = sorted(
    (
        obj
        for obj in vars(messages_module).values()
        if inspect.isclass(obj) and issubclass(obj, Message) and obj is not Message and dataclasses.is_dataclass(obj)
    ),
    key=lambda cls: cls.__name__,
)


def fields_of(cls: type[Message]) -> list[tuple[dataclasses.Field[Any], Any]]:
    """``(field, resolved annotation)`` for each field of a message class."""
    hints = typing.get_type_hints(cls)
    return [(f, hints[f.name]) for f in dataclasses.fields(cls)]  # type: ignore[arg-type]


def is_required(f: dataclasses.Field[Any]) -> bool:
    return f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING


def _optional_inner(tp: Any) -> Any | None:
    if typing.get_origin(tp) in (Union, types.UnionType):
        inner = [a for a in typing.get_args(tp) if a is not type(None)]
        return inner[0]
    return None


def render_type(tp: Any) -> str:
    """The type as ``docs/PROTOCOL.md`` writes it."""
    simple = {str: "str", int: "int", float: "float", bool: "bool", bytes: "bin", Any: "any"}
    if tp in simple:
        return simple[tp]
    inner = _optional_inner(tp)
    if inner is not None:
        return f"{render_type(inner)} or nil"
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is Literal:
        return " or ".join(f'"{a}"' for a in args)
    if origin is list:
        return f"[{render_type(args[0])}]"
    if origin is dict:
        return f"{{str: {render_type(args[1])}}}"
    if isinstance(tp, type) and issubclass(tp, Message):
        return tp.__name__
    raise AssertionError(f"no rendering for {tp!r}")


def render_default(f: dataclasses.Field[Any]) -> str:
    """The default as the doc writes it: ``required``, ``nil``, ``[]``, ``""``, ``1``..."""
    if is_required(f):
        return "required"
    if f.default is not dataclasses.MISSING:
        value = f.default
    else:
        factory = f.default_factory
        assert callable(factory)
        value = factory()
    if value is None:
        return "nil"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, list):
        return "[" + ", ".join(f'"{v}"' if isinstance(v, str) else str(v) for v in value) + "]"
    return str(value)


def sample(tp: Any) -> Any:
    """A small valid value for an annotation (nested messages as instances)."""
    simple = {str: "x", int: 1, float: 1.5, bool: False, bytes: b"\x00n", Any: "any"}
    if tp in simple:
        return simple[tp]
    inner = _optional_inner(tp)
    if inner is not None:
        return sample(inner)
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is Literal:
        return args[0]
    if origin is list:
        return [sample(args[0])]
    if origin is dict:
        return {"k": sample(args[1])}
    if isinstance(tp, type) and issubclass(tp, Message):
        return tp(**{f.name: SAMPLE_VALUES.get((tp.__name__, f.name), sample(hint)) for f, hint in fields_of(tp)})
    raise AssertionError(f"no sample for {tp!r}")


# fields whose check() refuses the generic sample value
SAMPLE_VALUES: dict[tuple[str, str], Any] = {("SubmitDag", "part"): 0}


def wrong_values(tp: Any) -> list[Any]:
    """Wire values of the wrong type for an annotation (empty for ``Any``)."""
    if tp is Any:
        return []
    if tp is str:
        return [1, b"x", None, ["x"]]
    if tp is int:
        return ["1", True, 1.5, None]
    if tp is float:
        return ["1.5", True, None, [1.5]]
    if tp is bool:
        return [1, 0, "true", None]
    if tp is bytes:
        return ["x", 1, None, [0]]
    inner = _optional_inner(tp)
    if inner is not None:
        return [v for v in wrong_values(inner) if v is not None]
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is Literal:
        return ["NOT-" + str(args[0]), 1, None, True]
    if origin is list:
        return [{"a": 1}, "abc", 1, None, [*(wrong_values(args[0])[:1])]]
    if origin is dict:
        wrong_item = wrong_values(args[1])[:1]
        return [[1, 2], "abc", None, {1: "a"}, *({"k": v} for v in wrong_item)]
    if isinstance(tp, type) and issubclass(tp, Message):
        nested = sample(tp).to_wire()
        broken = [{**nested, name: v} for name, v in _first_wrong_field(tp)]
        return [[nested], "abc", 1, None, *broken]
    raise AssertionError(f"no wrong values for {tp!r}")


def _first_wrong_field(cls: type[Message]) -> list[tuple[str, Any]]:
    for f, hint in fields_of(cls):
        wrong = wrong_values(hint)
        if wrong:
            return [(f.name, wrong[0])]
    return []
