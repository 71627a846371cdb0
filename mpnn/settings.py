"""Settings declared once: each options dataclass states, on its own fields, the help text
and the values a setting allows; the command line (`mpnn.cli.flags`) and the dataclass's
validation both read them.

Example::

    @dataclass(frozen=True)
    class PredictOptions:
        batch_size: int = setting(256, "structures per model call", AT_LEAST_1)

    check(PredictOptions(batch_size=0))   # UsageError: argument --batch-size: must be a whole number >= 1, got 0

TensorFlow-free (the converters' options use it too).
"""

from __future__ import annotations

import dataclasses
import enum
from dataclasses import dataclass
from typing import Any, Callable, Iterable

from mpnn.errors import UsageError

# The key of a field's metadata that holds its `Setting`.
SETTING = "setting"


@dataclass(frozen=True)
class Allowed:
    """The values a setting allows: `test(value)` is true for them; `text` says which, as
    it reads after "must be" (e.g. ``"a whole number >= 1"``)."""

    test: Callable[[Any], bool]
    text: str


AT_LEAST_0 = Allowed(lambda v: v >= 0, "a whole number >= 0")
AT_LEAST_1 = Allowed(lambda v: v >= 1, "a whole number >= 1")
POSITIVE = Allowed(lambda v: v > 0, "a number > 0")
NON_NEGATIVE = Allowed(lambda v: v >= 0, "a number >= 0")
FRACTION = Allowed(lambda v: 0 <= v <= 1, "a number in [0, 1]")
BELOW_1 = Allowed(lambda v: 0 <= v < 1, "a number in [0, 1)")
EACH_AT_LEAST_1 = Allowed(
    lambda v: len(v) > 0 and all(x >= 1 for x in v), "one or more whole numbers >= 1"
)
AUTOTUNE_OR_AT_LEAST_1 = Allowed(lambda v: v == -1 or v >= 1, "-1 (AUTOTUNE) or a whole number >= 1")


class Choice(str, enum.Enum):
    """The allowed values of a setting that takes one of a fixed set (its argparse
    ``choices`` and its validation). A str, so that JSON files keep plain strings."""

    @classmethod
    def values(cls) -> tuple[str, ...]:
        return tuple(member.value for member in cls)


@dataclass(frozen=True)
class Setting:
    """What a field of an options dataclass means to its user.

    Attributes:
        help: the flag's help text (units included).
        allowed: the values allowed (None: any value of the field's type).
        choices: the values allowed when they are a fixed set (e.g. a `Choice`'s ``values()``).
        flag: whether the command line has a flag for it (False: set from files or code only).
    """

    help: str
    allowed: Allowed | None = None
    choices: tuple[str, ...] | None = None
    flag: bool = True


def setting(
    default: Any = dataclasses.MISSING,
    help: str = "",
    allowed: Allowed | None = None,
    *,
    choices: Iterable[str] | None = None,
    flag: bool = True,
    default_factory: Callable[[], Any] | Any = dataclasses.MISSING,
) -> Any:
    """A dataclass field with its `Setting` in its metadata (use as the field's default)."""
    return dataclasses.field(
        default=default,
        default_factory=default_factory,
        metadata={SETTING: Setting(help, allowed, tuple(choices) if choices is not None else None, flag)},
    )


def settings_of(options: type | Any) -> dict[str, Setting]:
    """The declared settings of an options dataclass (or instance), by field name, in order."""
    return {f.name: f.metadata[SETTING] for f in dataclasses.fields(options) if SETTING in f.metadata}


def flag(name: str) -> str:
    """The command-line spelling of setting `name` (``batch_size`` -> ``--batch-size``)."""
    return "--" + name.replace("_", "-")


def check_value(name: str, value: Any, declared: Setting) -> None:
    """Raise `UsageError` in argparse's words, naming the flag of `name`, unless `value`
    (None: a default chosen later, not checked) is allowed by `declared`."""
    if value is None:
        return
    if declared.choices is not None:  # of each value of a list-valued setting
        for each in value if isinstance(value, (list, tuple)) else (value,):
            check_choice(name, each, declared.choices)
    if declared.allowed is not None and not declared.allowed.test(value):
        shown = " ".join(map(str, value)) if isinstance(value, (list, tuple)) else value  # as typed after the flag
        raise UsageError(f"argument {flag(name)}: must be {declared.allowed.text}, got {shown}")


def check_choice(name: str, value: Any, allowed: Iterable[str]) -> None:
    """Raise `UsageError` naming the flag of `name` unless `value` is one of `allowed`
    (listed in the message in the order given)."""
    allowed = tuple(allowed)
    if value not in allowed:
        raise UsageError(f"argument {flag(name)}: invalid choice {value!r} (choose from {', '.join(allowed)})")


def check(options: Any) -> None:
    """`check_value` of every declared setting of the dataclass instance `options`."""
    for name, declared in settings_of(options).items():
        check_value(name, getattr(options, name), declared)
