"""The base of every message body: validation driven by dataclass annotations.

:meth:`Message.from_wire` checks a decoded map against the dataclass'
annotations, building one converter per field once per class: a missing
field, a wrong type or a value out of range raises :class:`SchemaError`,
never ``KeyError``/``TypeError``. Unknown keys are ignored so that a newer
peer may add optional fields.

Fast paths
----------
Every frame a master or worker handles goes through here (tens of thousands a
second), so each class also gets two functions generated once from its
annotations (:func:`_compile_from_wire`, :func:`_compile_to_wire`): straight-line
code with one exact type test per field and no per-field calls for plain
values. The fast decoder accepts only the exact, usual shapes (``type(v) is
str``, a ``float`` for a float field ...) and answers None for anything else,
and the generic path then decides, with its precise error or its conversion
(an int where a float is expected). So both paths accept and refuse the same
bodies and build equal messages; the fast one just skips the work for the
common case.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import MISSING, Field, fields
from typing import Any, ClassVar, Final, Literal, TypeVar, Union

from .errors import SchemaError
from .opcodes import Opcode

__all__ = ["Message", "require"]

M = TypeVar("M", bound="Message")
Converter = Callable[[Any, str], Any]


class Message:
    """Base of every body. Subclasses are frozen dataclasses."""

    OPCODE: ClassVar[Opcode | None] = None
    # leave optional fields at their default out of the map (smaller frames, quicker to decode)
    OMIT_DEFAULTS: ClassVar[bool] = False
    _converters: ClassVar[dict[str, tuple[Converter, bool]]]
    _fast_from_wire: ClassVar[Callable[[dict[str, Any]], Any]]
    _fast_to_wire: ClassVar[Callable[[Any], dict[str, Any]]]

    def to_wire(self) -> dict[str, Any]:
        """The body as a plain map, ready for msgpack."""
        cls = type(self)
        encode = cls.__dict__.get("_fast_to_wire") or _compile_to_wire(cls)
        return encode(self)

    @classmethod
    def from_wire(cls: type[M], body: Mapping[str, Any]) -> M:
        """Validate ``body`` and build the message.

        Raises:
            SchemaError: a field is missing, mistyped or out of range.
        """
        if type(body) is dict:
            fast = cls.__dict__.get("_fast_from_wire") or _compile_from_wire(cls)
            message = fast(body)
            if message is not None:
                return message  # type: ignore[no-any-return]
        return cls._checked_from_wire(body)

    @classmethod
    def _checked_from_wire(cls: type[M], body: Mapping[str, Any]) -> M:
        """The generic path: every field through its converter, with a precise error."""
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


# ---------------------------------------------------------------------- generated fast paths

_ABSENT: Any = object()  # a key the body does not have
_BAD: Any = object()  # a value the fast path leaves to the generic one
_SIMPLE: Final = (str, int, bool, bytes)  # checked inline with ``type(v) is T``


def _fast_check(tp: Any) -> Callable[[Any], Any] | None:
    """A function returning the value for a field of type ``tp`` (a fresh container for
    lists and maps, as the generic path makes) or :data:`_BAD`; None: no fast check."""
    if tp is Any:
        return lambda v: v
    if tp is float:
        return lambda v: v if type(v) is float and v - v == 0.0 else _BAD  # finite; an int: generic path
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp in _SIMPLE:
        return lambda v: v if type(v) is tp else _BAD
    if origin in (Union, types.UnionType):
        inner = [a for a in args if a is not type(None)]
        check = _fast_check(inner[0]) if len(inner) == 1 else None
        return None if check is None else (lambda v: None if v is None else check(v))
    if origin is Literal and all(type(a) is str for a in args):
        allowed = frozenset(args)
        return lambda v: v if type(v) is str and v in allowed else _BAD
    if origin is list or origin is dict:
        return _fast_container(origin, args)
    if isinstance(tp, type) and issubclass(tp, Message) and "from_wire" not in tp.__dict__:
        nested = tp  # (a class with its own from_wire is left to it, through the generic path)

        def check_nested(v: Any) -> Any:
            if type(v) is not dict:
                return _BAD
            fast = nested.__dict__.get("_fast_from_wire") or _compile_from_wire(nested)
            try:
                message = fast(v)
            except SchemaError:  # its check() failed: the generic path names where
                return _BAD
            return _BAD if message is None else message

        return check_nested
    return None


def _fast_container(origin: Any, args: tuple[Any, ...]) -> Callable[[Any], Any] | None:
    """:func:`_fast_check` for ``list[T]`` and ``dict[str, T]``."""
    if origin is list and args[0] in _SIMPLE:
        item = args[0]

        def check_simple_list(v: Any) -> Any:
            # a plain loop: about twice as fast as all() over a generator for the short lists of a spec
            if type(v) is not list:
                return _BAD
            for x in v:
                if type(x) is not item:
                    return _BAD
            return v[:]

        return check_simple_list
    if origin is list:
        check = _fast_check(args[0])
        if check is None:
            return None

        def check_list(v: Any) -> Any:
            if type(v) is not list:
                return _BAD
            out = [check(x) for x in v]
            return _BAD if any(x is _BAD for x in out) else out

        return check_list
    if args[0] is str and (args[1] in _SIMPLE or args[1] is Any):
        value = args[1]
        anything = value is Any
        return lambda v: (
            dict(v)
            if type(v) is dict and all(type(k) is str and (anything or type(x) is value) for k, x in v.items())
            else _BAD
        )
    return None


def _compile_from_wire(cls: type[Message]) -> Callable[[dict[str, Any]], Any]:
    """Generate ``cls``'s fast decoder: the message, or None to take the generic path."""
    hints = typing.get_type_hints(cls)
    names: dict[str, Any] = {"_ABSENT": _ABSENT, "_BAD": _BAD, "new": object.__new__, "cls": cls}
    lines = ["def fast(body):", "    get = body.get"]
    sets = []
    for i, f in enumerate(fields(cls)):  # type: ignore[arg-type]
        tp = hints[f.name]
        check = _fast_check(tp)
        slot = cls.__dict__.get(f.name)
        if check is None or getattr(cls, "__post_init__", None) is not None or not hasattr(slot, "__set__"):
            cls._fast_from_wire = _no_fast_path  # some field needs the generic path every time
            return _no_fast_path
        lines.append(f"    v{i} = get({f.name!r}, _ABSENT)")
        if tp in _SIMPLE:
            test = f"type(v{i}) is not t{i}"
            names[f"t{i}"] = tp
        else:
            lines.append(f"    if v{i} is not _ABSENT: v{i} = k{i}(v{i})")
            test = f"v{i} is _BAD"
            names[f"k{i}"] = check
        if _required(f):
            lines.append(f"    if v{i} is _ABSENT or {test}: return None")
        elif f.default is MISSING:
            names[f"d{i}"] = f.default_factory
            lines.append(f"    if v{i} is _ABSENT: v{i} = d{i}()")
            lines.append(f"    elif {test}: return None")
        else:
            # a plain default (None, a number, a string) is shared as it is: no call per message
            names[f"d{i}"] = f.default
            lines.append(f"    if v{i} is _ABSENT: v{i} = d{i}")
            lines.append(f"    elif {test}: return None")
        names[f"s{i}"] = slot.__set__  # type: ignore[union-attr]
        sets.append(f"    s{i}(m, v{i})")
    lines.append("    m = new(cls)")
    lines.extend(sets)
    if cls.check is not Message.check:
        lines.append("    m.check()")
    lines.append("    return m")
    exec("\n".join(lines), names)  # source built above from the class' own fields
    fast: Callable[[dict[str, Any]], Any] = names["fast"]
    cls._fast_from_wire = fast
    return fast


def _no_fast_path(body: dict[str, Any]) -> None:
    return None


def _required(f: Field[Any]) -> bool:
    return f.default is MISSING and f.default_factory is MISSING


def _compile_to_wire(cls: type[Message]) -> Callable[[Any], dict[str, Any]]:
    """Generate ``cls``'s encoder: the same map as the generic walk, in straight-line code.

    With ``OMIT_DEFAULTS`` an optional field is left out while it holds its
    default (one comparison each): the receiver fills the default back in, as
    the protocol allows for every optional field.
    """
    hints = typing.get_type_hints(cls)
    names: dict[str, Any] = {"_to_wire_value": _to_wire_value}
    items = []
    optional = []
    for i, f in enumerate(fields(cls)):  # type: ignore[arg-type]
        value = f"m.{f.name}"
        if _holds_messages(hints[f.name]):
            value = f"_to_wire_value(m.{f.name})"  # nested messages, lists: the generic walk
        if cls.OMIT_DEFAULTS and not _required(f):
            names[f"d{i}"] = f.default if f.default is not MISSING else f.default_factory()  # type: ignore[operator]
            optional.append(f"    if m.{f.name} != d{i}: body[{f.name!r}] = {value}")
        else:
            items.append(f"{f.name!r}: {value}")
    source = "\n".join([f"def wire(m):\n    body = {{{', '.join(items)}}}", *optional, "    return body"])
    exec(source, names)  # built from the class' own fields
    wire: Callable[[Any], dict[str, Any]] = names["wire"]
    cls._fast_to_wire = wire
    return wire


def _holds_messages(tp: Any) -> bool:
    """Whether a field of type ``tp`` may hold a message, which the generic walk turns into a map.

    A list of plain values goes out as it is: msgpack writes it the same, and
    copying it element by element cost a client a tenth of a second per
    100 000-job DAG (their ``deps`` and ``skills``).
    """
    if tp is Any:
        return True
    if isinstance(tp, type):
        return issubclass(tp, Message) or issubclass(tp, list)
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is list:
        return not args or _holds_messages(args[0])
    if origin in (Union, types.UnionType):
        return any(_holds_messages(a) for a in args if a is not type(None))
    return False


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
        raise SchemaError(f"{where}: expected one of {', '.join(map(str, allowed))}, got {_shown(v)}")
    return v


_SHOWN_CHARS: Final = 60


def _shown(v: Any) -> str:
    """A refused value for an error message: a short scalar as Python writes it, anything else by its type.

    Never ``repr()`` of a container: a body may nest a thousand levels deep (RecursionError), or hold
    a list of a million items.
    """
    if isinstance(v, str | bytes):
        if len(v) <= _SHOWN_CHARS:
            return repr(v)
        return f"{v[:_SHOWN_CHARS]!r}... ({len(v)} {'characters' if isinstance(v, str) else 'bytes'})"
    if v is None or isinstance(v, bool | float) or (isinstance(v, int) and v.bit_length() <= 64):
        return repr(v)
    return f"a value of type {type(v).__name__}"


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
