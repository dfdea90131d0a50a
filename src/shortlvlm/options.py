"""Options objects: frozen dataclasses whose fields carry their default, help text, check and CLI flag.

Every setting a user chooses (TIS, each scorer, SCP, calibration, layer-by-layer) is a field declared
with `option(...)`. That one declaration is the API default and docstring (`@options` appends a field
list to the class docstring), the CLI flag (`shortlvlm.cli.flags` generates the flags from the fields)
and the plan's record (`to_dict` / `from_dict`, one sub-dict per options object under its own field
names), so `--help`, the docstrings and the plan cannot drift apart.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import typing
from collections.abc import Callable
from typing import Any, ClassVar, TypeVar

from shortlvlm.errors import ShortLVLMError

AUTO_FLAG = ""  # option(flag=...) default: --{flag_prefix}-{field name}
Check = Callable[[Any], "str | None"]  # returns what is wrong ("must be ...") or None
T = TypeVar("T", bound="Options")


def option(default: Any = dataclasses.MISSING, *, help: str, flag: str | None = AUTO_FLAG,
           parse: Callable[[str], Any] | None = None, choices: tuple | None = None, check: Check | None = None,
           metavar: str | None = None, default_factory: Any = dataclasses.MISSING) -> Any:
    """A dataclass field with its help text; `flag=None` keeps it out of the CLI (API only)."""
    metadata = {"help": help, "flag": flag, "parse": parse, "choices": choices, "check": check, "metavar": metavar}
    return dataclasses.field(default=default, default_factory=default_factory, metadata=metadata)


class Options:
    """Base of every options object: field checks, list -> tuple, and the plan's dict form."""

    flag_prefix: ClassVar[str] = ""  # "tis" -> --tis-top-p
    error: ClassVar[type[ShortLVLMError]] = ShortLVLMError  # raised for a bad value
    # Options added (or whose default changed) after plans recorded them, with the value a record that lacks them
    # was made with (tis-loss's `bridge`: off; lstsq's `prior`: zero). `from_record` fills them in.
    recorded_before: ClassVar[dict] = {}

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if isinstance(value, list):
                value = tuple(value)
                object.__setattr__(self, field.name, value)
            check = field.metadata.get("check")
            problem = check(value) if check is not None else None
            choices = field.metadata.get("choices")
            if problem is None and choices is not None and value not in choices:
                problem = f"must be one of {', '.join(map(str, choices))}"
            if problem is not None:
                raise self.error(f"{describe(type(self), field)} {problem}, got {value!r}")

    def to_dict(self) -> dict:
        """{field name: value}, nested options as sub-dicts, tuples as lists (JSON-ready)."""
        return {field.name: _plain(getattr(self, field.name)) for field in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls: type[T], data: object) -> T:
        """The options a `to_dict` result describes; unknown names are refused, missing ones take defaults."""
        if not isinstance(data, dict):
            raise cls.error(f"{cls.__name__} options must be an object, got {type(data).__name__}")
        fields = {field.name: field for field in dataclasses.fields(cls)}
        unknown = sorted(str(name) for name in data if name not in fields)
        if unknown:
            raise cls.error(f"unknown {cls.__name__} option(s): {', '.join(unknown)}")
        nested = nested_options(cls)
        values = {name: nested[name].from_dict(value) if name in nested and isinstance(value, dict) else value
                  for name, value in data.items()}
        return cls(**values)

    @classmethod
    def from_record(cls: type[T], data: dict) -> T:
        """The options a plan recorded: what the record lacks takes `recorded_before`'s value, else the default."""
        return cls.from_dict({**cls.recorded_before, **data})


def options(cls: type[T]) -> type[T]:
    """Make `cls` a frozen, keyword-only dataclass and list its fields (default: help) in its docstring."""
    cls = dataclasses.dataclass(frozen=True, kw_only=True)(cls)
    lines = [f"    {field.name} = {_default_text(field)}: {field.metadata['help']}"
             for field in dataclasses.fields(cls) if "help" in field.metadata]
    if lines:
        cls.__doc__ = f"{(cls.__doc__ or '').rstrip()}\n\n    Options:\n" + "\n".join(lines) + "\n"
    return cls


def flag_of(cls: type[Options], field: dataclasses.Field) -> str | None:
    """The CLI flag of an options field, or None for API-only fields."""
    flag = field.metadata.get("flag", None)
    if flag != AUTO_FLAG:
        return flag
    prefix = f"{cls.flag_prefix}-" if cls.flag_prefix else ""
    return f"--{prefix}{field.name.replace('_', '-')}"


def describe(cls: type[Options], field: dataclasses.Field) -> str:
    """How an error names a field: `SCP.rank (--scp-rank)`."""
    flag = None if nested_options(cls).get(field.name) else flag_of(cls, field)
    return f"{cls.__name__}.{field.name}" + (f" ({flag})" if flag else "")


def nested_options(cls: type[Options]) -> dict[str, type[Options]]:
    """{field name: options class} for the fields that hold another options object."""
    hints = typing.get_type_hints(cls)
    found = {}
    for field in dataclasses.fields(cls):
        kinds = typing.get_args(hints[field.name]) or (hints[field.name],)
        for kind in kinds:
            if isinstance(kind, type) and issubclass(kind, Options):
                found[field.name] = kind
    return found


def _plain(value: Any) -> Any:
    if isinstance(value, Options):
        return value.to_dict()
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _default_text(field: dataclasses.Field) -> str:
    if field.default is not dataclasses.MISSING:
        return repr(field.default)
    if field.default_factory is not dataclasses.MISSING:
        return f"{field.default_factory.__name__}()"
    return "required"


def positive_count(text: str) -> int:
    """A flag parser: an integer >= 1 (batch sizes, counts); its error is argparse's, worded for the user."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"takes a positive integer (got '{text}')") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"takes a positive integer (got {value})")
    return value


def open_fraction(text: str) -> float:
    """A flag parser: a number strictly between 0 and 1."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"takes a fraction strictly between 0 and 1 (got '{text}')") from None
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"takes a fraction strictly between 0 and 1 (got {value:g})")
    return value


# Checks shared by the options classes.
def positive_int(value: Any) -> str | None:
    return None if isinstance(value, int) and not isinstance(value, bool) and value >= 1 else \
        "must be a positive integer"


def optional_positive_int(value: Any) -> str | None:
    return None if value is None else positive_int(value)


def non_negative_int(value: Any) -> str | None:
    return None if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else \
        "must be a non-negative integer"


def fraction(value: Any) -> str | None:
    """In (0, 1]."""
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    return None if number and 0 < value <= 1 else "must be in (0, 1]"


def optional_open_fraction(value: Any) -> str | None:
    """None, or strictly between 0 and 1."""
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    return None if value is None or (number and 0 < value < 1) else "must be strictly between 0 and 1"


def finite_or(*words: str) -> Check:
    """A finite number, or one of `words`."""
    def check(value: Any) -> str | None:
        if value in words:
            return None
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        return (None if number and math.isfinite(value)
                else f"must be a finite number or {' or '.join(map(repr, words))}")
    return check


def is_bool(value: Any) -> str | None:
    return None if isinstance(value, bool) else "must be true or false"


def options_from_text(cls: type[T], text: str, **fixed: Any) -> T:
    """'ridge=0.1,tokens=important' -> cls(ridge=0.1, tokens="important"): each value read as its CLI flag
    reads it (the field's parser, else its int/float/bool/str type); nested options cannot be set this way."""
    fields = {field.name: field for field in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    values = dict(fixed)
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, equals, raw = (part.strip() for part in item.partition("="))
        if not equals or name not in fields or name in nested_options(cls):
            settable = ", ".join(n for n in fields if n not in nested_options(cls))
            raise cls.error(f"{cls.__name__} option {item!r} must be NAME=VALUE with NAME one of: {settable}")
        values[name] = _read_value(cls, fields[name], hints[name], raw)
    return cls(**values)


def _read_value(cls: type[Options], field: dataclasses.Field, hint: Any, raw: str) -> Any:
    parse = field.metadata.get("parse")
    kinds = [k for k in (typing.get_args(hint) or (hint,)) if k is not type(None)]
    try:
        if parse is not None:
            return parse(raw)
        if bool in kinds:
            if raw.lower() not in ("true", "false"):
                raise ValueError("takes true or false")
            return raw.lower() == "true"
        for kind in (int, float):
            if kind in kinds:
                return kind(raw)
    except (ValueError, argparse.ArgumentTypeError) as err:
        raise cls.error(f"{cls.__name__}.{field.name} cannot read {raw!r} ({err})") from None
    return raw
