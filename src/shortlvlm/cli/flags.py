"""CLI flags generated from options fields (shortlvlm.options), and options objects built back from them.

A field's flag, default, choices and help text come from its `option(...)` declaration; a nested
options field (TISCosine.tis) contributes its own fields' flags. Booleans that default to off are
switches (`--tis-joint`), those that default to on can be turned off (`--no-tis-skip-template`).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import types
import typing
from collections.abc import Callable, Iterable
from typing import Any

from shortlvlm.options import Options, flag_of, nested_options

T = typing.TypeVar("T", bound=Options)


class DeprecatedName(argparse.Action):
    """A flag's old name: still works, stores where the new name does, and says once on stderr what to use."""

    def __init__(self, option_strings: list[str], dest: str, *, new: str, why: str, **kwargs: Any):
        super().__init__(option_strings, dest, help=argparse.SUPPRESS, **kwargs)
        self.new, self.why = new, why

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        # Printed, not logged: flags are parsed before the command sets up its logging (cli/main.py).
        print(f"shortlvlm: warning: {option_string} is deprecated here, use {self.new} ({self.why})", file=sys.stderr)
        setattr(namespace, self.dest, values)


def dest_of(flag: str) -> str:
    """Where argparse keeps a flag's value: --tis-top-p -> tis_top_p."""
    return flag.lstrip("-").replace("-", "_")


def option_flags(cls: type[Options]) -> Iterable[tuple[type[Options], dataclasses.Field, str]]:
    """(class, field, flag) of every field that has a flag, nested options included, in declaration order."""
    nested = nested_options(cls)
    for field in dataclasses.fields(cls):
        flag = flag_of(cls, field)
        if flag is None:
            continue
        if field.name in nested:
            yield from option_flags(nested[field.name])
        else:
            yield cls, field, flag


def add_options(group: argparse._ActionsContainer, cls: type[Options], seen: set[str] | None = None) -> None:
    """Add a flag for every flagged field of `cls`; flags already in `seen` (shared by several classes) once."""
    seen = set() if seen is None else seen
    for owner, field, flag in option_flags(cls):
        if flag in seen:
            continue
        seen.add(flag)
        default = field.default if field.default is not dataclasses.MISSING else None
        kwargs: dict[str, Any] = {"dest": dest_of(flag), "default": default, "help": help_text(field, default)}
        if field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
            kwargs["required"] = True
        if isinstance(default, bool):
            kwargs["action"] = "store_true" if default is False else argparse.BooleanOptionalAction
        else:
            kwargs["type"] = _parser(owner, field, flag)
            if field.metadata.get("choices") is not None:
                kwargs["choices"] = list(field.metadata["choices"])
            if field.metadata.get("metavar"):
                kwargs["metavar"] = field.metadata["metavar"]
        group.add_argument(flag, **kwargs)


def options_from_args(cls: type[T], args: argparse.Namespace, **fixed: Any) -> T:
    """The options object the parsed flags describe (fields without a flag keep their defaults)."""
    nested = nested_options(cls)
    values = dict(fixed)
    for field in dataclasses.fields(cls):
        flag = flag_of(cls, field)
        if flag is None or field.name in values:
            continue
        if field.name in nested:
            values[field.name] = options_from_args(nested[field.name], args)
        elif hasattr(args, dest_of(flag)):
            values[field.name] = getattr(args, dest_of(flag))
    return cls(**values)


def given_flags(cls: type[Options], args: argparse.Namespace) -> list[str]:
    """The flags of `cls` that `args` sets to other than their defaults, as words a command line can repeat."""
    words: list[str] = []
    for _, field, flag in option_flags(cls):
        default = field.default if field.default is not dataclasses.MISSING else None
        value = getattr(args, dest_of(flag), default)
        if value == default:
            continue
        if isinstance(value, bool):
            words.append(flag if value else f"--no-{flag[2:]}")
        elif isinstance(value, dict):  # --max-memory 0=70GiB,cpu=200GiB
            words += [flag, ",".join(f"{key}={amount}" for key, amount in value.items())]
        elif isinstance(value, (tuple, list)):  # --writers a,b; --tis-layers 4,8
            words += [flag, ",".join(map(str, value))]
        else:
            words += [flag, str(value)]
    return words


def help_text(field: dataclasses.Field, default: Any) -> str:
    """The field's help, with its default unless it is off or unset."""
    text = field.metadata["help"]
    if isinstance(default, tuple):  # as the flag takes it: 0.1,0.2,0.3
        default = ",".join(map(str, default))
    if default is True:
        return f"{text} (default: on)"
    if default is None or default is False:
        return text
    return f"{text} (default: {default})"


def _parser(cls: type[Options], field: dataclasses.Field, flag: str) -> Callable[[str], Any] | None:
    parse = field.metadata.get("parse")
    if parse is None:
        kinds = [k for k in _kinds(typing.get_type_hints(cls)[field.name]) if k is not type(None)]
        return kinds[0] if kinds and kinds[0] in (int, float) else None

    def parse_flag(text: str) -> Any:
        try:
            return parse(text)
        except ValueError as err:
            raise argparse.ArgumentTypeError(f"{flag} {err} (got '{text}')") from None
    parse_flag.__name__ = flag
    return parse_flag


def _kinds(hint: Any) -> tuple:
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return typing.get_args(hint)
    return (hint,)
