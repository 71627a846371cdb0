"""mpnn.settings: a setting's allowed values are declared once, on its dataclass field, and
checked from there (the flags of mpnn/cli read the same declarations: tests/mpnn/cli)."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from mpnn import settings
from mpnn.config import TrainConfig
from mpnn.errors import UsageError
from mpnn.settings import AT_LEAST_1, Allowed, setting


@dataclass(frozen=True)
class Options:
    count: int = setting(2, "how many", AT_LEAST_1)
    kind: str = setting("a", "which", choices=("a", "b"))
    ratio: float | None = setting(None, "a share", Allowed(lambda v: 0 <= v <= 1, "a number in [0, 1]"))
    note: str = "no declared setting"


def test_values_outside_the_declared_ones_are_usage_errors_naming_the_flag():
    settings.check(Options(count=1, kind="b", ratio=None))  # None: a default chosen later
    with pytest.raises(UsageError, match=r"^argument --count: must be a whole number >= 1, got 0$"):
        settings.check(Options(count=0))
    with pytest.raises(UsageError, match=r"^argument --kind: invalid choice 'c' \(choose from a, b\)$"):
        settings.check(Options(kind="c"))
    with pytest.raises(UsageError, match=r"^argument --ratio: must be a number in \[0, 1\], got 1.5$"):
        settings.check(Options(ratio=1.5))


def test_only_declared_fields_are_settings():
    assert list(settings.settings_of(Options)) == ["count", "kind", "ratio"]
    assert settings.settings_of(Options)["count"].help == "how many"


def test_the_training_config_validates_from_its_declarations():
    TrainConfig(data="d").validate()
    for field, value, message in [
        ("epochs", 0, "argument --epochs: must be a whole number >= 1, got 0"),
        ("lr_decay", "linear", "argument --lr-decay: invalid choice 'linear' (choose from cosine, plateau, none)"),
        ("family", "painn", "argument --family: invalid choice 'painn' (choose from auto, mpnn, gat-lspe, schnet)"),
        ("ema_momentum", 1.0, "argument --ema-momentum: must be a number in [0, 1) (0: off), got 1.0"),
    ]:
        with pytest.raises(UsageError) as error:
            TrainConfig(data="d", **{field: value}).validate()
        assert str(error.value) == message
