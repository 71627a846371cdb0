"""argparse flags from declared settings (`mpnn.settings`): one flag per field of an
options dataclass, with its help text, type and choices, so that a setting is declared once
(on its dataclass) and the command line follows."""

from __future__ import annotations

import argparse
import dataclasses
import sys
import types
import typing
from typing import Any

from mpnn.config import ModelName
from mpnn.errors import UsageError
from mpnn.settings import Setting, flag, settings_of

DEPRECATED = "{prog}: warning: {old} is deprecated for the {what}, use {new} (it will be removed in the next release)"


def add_setting_flag(
    parser: argparse.ArgumentParser | Any,
    name: str,
    kind: Any,
    declared: Setting,
    required: bool = False,
    default: Any = None,
) -> None:
    """Add ``--name`` (a ``--name/--no-name`` pair for a bool; one or more values for a list)
    for one setting of type `kind`,
    with its help and choices. Ranges are checked by the options' validation
    (`mpnn.settings.check`), whose `UsageError` the runner reports as argparse would. The
    flag's value when not given is `default`, unless the parser's ``argument_default`` is
    ``argparse.SUPPRESS`` (then only the flags given are in the namespace)."""
    defaults = {} if parser.argument_default == argparse.SUPPRESS else {"default": default}
    if kind is bool:
        parser.add_argument(
            flag(name), dest=name, action=argparse.BooleanOptionalAction, help=declared.help, **defaults
        )
        return
    base = _value_type(kind)
    many = {"nargs": "+"} if typing.get_origin(kind) in (list, tuple) else {}
    if many:
        base = typing.get_args(kind)[0]  # list[X], tuple[X, ...]
    choices = {"choices": declared.choices} if declared.choices is not None else {}
    parser.add_argument(
        flag(name), dest=name, type=base, help=declared.help, required=required, **many, **choices, **defaults
    )


def add_settings_flags(parser: argparse.ArgumentParser | Any, options: type, skip: tuple[str, ...] = ()) -> None:
    """`add_setting_flag` for every declared setting with a flag of the dataclass `options`,
    defaulting to the field's default (required where the field has none)."""
    hints = typing.get_type_hints(options)
    defaults = {
        f.name: f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        for f in dataclasses.fields(options)
    }
    for name, declared in settings_of(options).items():
        if declared.flag and name not in skip:
            required = defaults[name] is dataclasses.MISSING
            add_setting_flag(parser, name, hints[name], declared, required, None if required else defaults[name])


def options_from_args(options: type, args: argparse.Namespace, **given: Any) -> Any:
    """The dataclass `options` made from the flags of `add_settings_flags` in `args` (lists
    as the tuples a field of type ``tuple`` holds) and the other fields `given`."""
    hints = typing.get_type_hints(options)
    values = {}
    for name, declared in settings_of(options).items():
        if declared.flag and name not in given and hasattr(args, name):
            value = getattr(args, name)
            values[name] = tuple(value) if typing.get_origin(hints[name]) is tuple and value is not None else value
    return options(**values, **given)


def add_run_flag(parser: argparse.ArgumentParser, help: str) -> None:
    """``--model RUN`` of a command that reads a run directory, and its spelling before
    ``--model`` was every command's flag, a positional ``RUN_DIR`` (see `run_argument`)."""
    parser.add_argument("--model", help=help)
    parser.add_argument("run_dir", nargs="?", help=argparse.SUPPRESS)


def run_argument(args: argparse.Namespace, prog: str, help: str) -> str:
    """The run of `add_run_flag`'s flags; the positional spelling with a deprecation line.

    Raises:
        UsageError: the run given twice, or not at all.
    """
    if args.run_dir is not None:
        if args.model is not None:
            raise UsageError("argument --model: give the run once (--model RUN), not also as RUN_DIR")
        warn_deprecated(prog, "the positional RUN_DIR", "--model RUN_DIR", "run")
        return args.run_dir
    if args.model is None:
        raise UsageError(f"argument --model: required ({help})")
    return args.model


def add_legacy_family_flag(parser: argparse.ArgumentParser | Any, prog: str, dest: str = "family") -> None:
    """``--model FAMILY``, the model family's flag before ``--family`` existed (``--model``
    names a trained model in the other commands): stored as ``--family`` is, with a
    deprecation line on stderr. Kept for one release."""

    class DeprecatedFamilyFlag(argparse.Action):
        def __call__(self, parser, namespace, values, option_string=None):
            warn_deprecated(prog, "--model", "--family", "model family")
            setattr(namespace, self.dest, values)

    parser.add_argument("--model", dest=dest, choices=ModelName.values(), action=DeprecatedFamilyFlag,
                        help=argparse.SUPPRESS)


def warn_deprecated(prog: str, old: str, new: str, what: str) -> None:
    """One warning line on stderr: flag `old` is deprecated for `what`, use `new`."""
    print(DEPRECATED.format(prog=prog, old=old, new=new, what=what), file=sys.stderr)


def _value_type(kind: Any) -> type:
    """``int`` of ``int``, ``float`` of ``float | None``, ..."""
    if typing.get_origin(kind) in (typing.Union, types.UnionType):
        kind = next(arg for arg in typing.get_args(kind) if arg is not type(None))
    return kind
