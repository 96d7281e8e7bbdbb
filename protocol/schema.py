"""The base of every message body: validation driven by dataclass annotations.

:meth:`Message.from_wire` checks a decoded map against the dataclass'
annotations, building one converter per field once per class: a missing
field, a wrong type or a value out of range raises :class:`SchemaError`,
never ``KeyError``/``TypeError``. Unknown keys are ignored so that a newer
peer may add optional fields.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import MISSING, fields
from typing import Any, ClassVar, Literal, TypeVar, Union

from .errors import SchemaError
from .opcodes import Opcode

__all__ = ["Message", "require"]

M = TypeVar("M", bound="Message")
Converter = Callable[[Any, str], Any]


class Message:
    """Base of every body. Subclasses are frozen dataclasses."""

    OPCODE: ClassVar[Opcode | None] = None
    _converters: ClassVar[dict[str, tuple[Converter, bool]]]

    def to_wire(self) -> dict[str, Any]:
        """The body as a plain map, ready for msgpack."""
        return {name: _to_wire_value(getattr(self, name)) for name in _converters_of(type(self))}

    @classmethod
    def from_wire(cls: type[M], body: Mapping[str, Any]) -> M:
        """Validate ``body`` and build the message.

        Raises:
            SchemaError: a field is missing, mistyped or out of range.
        """
        if not isinstance(body, Mapping):
            raise SchemaError(f"{cls.__name__}: expected a map, got {type(body).__name__}")
        kwargs: dict[str, Any] = {}
        for name, (convert, required) in _converters_of(cls).items():
            if name in body:
                kwargs[name] = convert(body[name], f"{cls.__name__}.{name}")
            elif required:
                raise SchemaError(f"{cls.__name__}: missing field '{name}'")
        message = cls(**kwargs)
        message.check()
        return message

    def check(self) -> None:
        """Range checks beyond types; raise :class:`SchemaError`."""


def _to_wire_value(value: Any) -> Any:
    if isinstance(value, Message):
        return value.to_wire()
    if isinstance(value, list):
        return [_to_wire_value(v) for v in value]
    return value


def _converters_of(cls: type[Message]) -> dict[str, tuple[Converter, bool]]:
    cached = cls.__dict__.get("_converters")
    if cached is not None:
        return cached  # type: ignore[no-any-return]
    hints = typing.get_type_hints(cls)
    table: dict[str, tuple[Converter, bool]] = {}
    for f in fields(cls):  # type: ignore[arg-type]
        required = f.default is MISSING and f.default_factory is MISSING
        table[f.name] = (_converter(hints[f.name]), required)
    cls._converters = table
    return table


def _fail(where: str, expected: str, value: Any) -> SchemaError:
    return SchemaError(f"{where}: expected {expected}, got {type(value).__name__}")


def _converter(tp: Any) -> Converter:  # noqa: C901 - one branch per supported annotation
    if tp is Any:
        return lambda v, where: v
    if tp is str:
        return _check_str
    if tp is bool:
        return _check_bool
    if tp is int:
        return _check_int
    if tp is float:
        return _check_float
    if tp is bytes:
        return _check_bytes
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (Union, types.UnionType):
        inner = [a for a in args if a is not type(None)]
        if len(inner) != 1:
            raise TypeError(f"unsupported union {tp}")
        convert_inner = _converter(inner[0])
        return lambda v, where: None if v is None else convert_inner(v, where)
    if origin is Literal:
        allowed = args
        return lambda v, where: _check_literal(v, where, allowed)
    if origin is list:
        convert_item = _converter(args[0])
        return lambda v, where: _check_list(v, where, convert_item)
    if origin is dict:
        convert_value = _converter(args[1])
        return lambda v, where: _check_dict(v, where, convert_value)
    if isinstance(tp, type) and issubclass(tp, Message):
        return lambda v, where: _check_nested(v, where, tp)
    raise TypeError(f"unsupported field type {tp!r}")


def _check_str(v: Any, where: str) -> str:
    if not isinstance(v, str):
        raise _fail(where, "a string", v)
    return v


def _check_bool(v: Any, where: str) -> bool:
    if not isinstance(v, bool):
        raise _fail(where, "a boolean", v)
    return v


def _check_int(v: Any, where: str) -> int:
    if not isinstance(v, int) or isinstance(v, bool):
        raise _fail(where, "an integer", v)
    return v


def _check_float(v: Any, where: str) -> float:
    if not isinstance(v, int | float) or isinstance(v, bool):
        raise _fail(where, "a number", v)
    if v != v or v in (float("inf"), float("-inf")):
        raise SchemaError(f"{where}: expected a finite number, got {v}")
    try:
        return float(v)
    except OverflowError:  # an int beyond float range (not from msgpack, whose ints are 64-bit)
        raise SchemaError(f"{where}: expected a finite number, got an integer out of range") from None


def _check_bytes(v: Any, where: str) -> bytes:
    if not isinstance(v, bytes):
        raise _fail(where, "bytes", v)
    return v


def _check_literal(v: Any, where: str, allowed: tuple[Any, ...]) -> Any:
    if v not in allowed or isinstance(v, bool) != any(isinstance(a, bool) for a in allowed):
        raise SchemaError(f"{where}: expected one of {', '.join(map(str, allowed))}, got {v!r}")
    return v


def _check_list(v: Any, where: str, convert_item: Converter) -> list[Any]:
    if not isinstance(v, list | tuple):
        raise _fail(where, "an array", v)
    return [convert_item(item, f"{where}[{i}]") for i, item in enumerate(v)]


def _check_dict(v: Any, where: str, convert_value: Converter) -> dict[str, Any]:
    if not isinstance(v, dict):
        raise _fail(where, "a map", v)
    out: dict[str, Any] = {}
    for key, item in v.items():
        if not isinstance(key, str):
            raise _fail(f"{where} key", "a string", key)
        out[key] = convert_value(item, f"{where}[{key!r}]")
    return out


def _check_nested(v: Any, where: str, tp: type[Message]) -> Message:
    if not isinstance(v, dict):
        raise _fail(where, "a map", v)
    try:
        return tp.from_wire(v)
    except SchemaError as exc:
        raise SchemaError(f"{where}: {exc.message}") from exc


def require(condition: bool, message: str) -> None:
    if not condition:
        raise SchemaError(message)
