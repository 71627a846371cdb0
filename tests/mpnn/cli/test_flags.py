"""mpnn.cli.flags: each flag comes from its declared setting (help, type, choices, default),
so a setting changed on its dataclass changes the command line with it."""

from __future__ import annotations

import argparse
from dataclasses import dataclass

import pytest

from mpnn.cli.flags import add_settings_flags
from mpnn.cli.train import build_parser, parse_config
from mpnn.errors import UsageError
from mpnn.settings import AT_LEAST_1, setting


@dataclass(frozen=True)
class Options:
    target: int = setting(help="required: no default", allowed=AT_LEAST_1)
    count: int = setting(2, "how many", AT_LEAST_1)
    kind: str = setting("a", "which", choices=("a", "b"))
    fast: bool = setting(False, "go fast")
    hidden: str = setting("x", "set from files only", flag=False)


def test_flags_follow_the_declarations():
    parser = argparse.ArgumentParser(prog="p", exit_on_error=False)
    add_settings_flags(parser, Options)
    args = parser.parse_args(["--target", "3", "--kind", "b", "--fast"])
    assert vars(args) == {"target": 3, "count": 2, "kind": "b", "fast": True}
    assert "how many" in parser.format_help() and "--hidden" not in parser.format_help()
    with pytest.raises(argparse.ArgumentError, match="invalid choice: 'c'"):
        parser.parse_args(["--target", "3", "--kind", "c"])
    with pytest.raises(SystemExit):  # --target is required: the field has no default
        parser.parse_args([])


def test_every_family_option_with_a_flag_is_a_flag_of_mpnn_train():
    from mpnn import models

    help_text = build_parser().format_help()
    for name, declared in models.option_settings().items():
        assert f"--{name.replace('_', '-')}" in help_text
    assert "mpnn: message-passing steps; schnet: interactions" == models.option_settings()["message_steps"].help


def test_the_old_family_flag_and_config_key_still_work_with_a_deprecation_line(tmp_path, capsys, caplog):
    assert parse_config(["--data", "d", "--model", "schnet"]).family == "schnet"
    assert capsys.readouterr().err.splitlines() == [
        "mpnn-train: warning: --model is deprecated for the model family, use --family (it will be removed in the "
        "next release)"
    ]
    assert parse_config(["--data", "d", "--family", "gat-lspe"]).family == "gat-lspe"
    assert capsys.readouterr().err == ""
    (tmp_path / "old.yaml").write_text("model: schnet\nepochs: 3\n")
    config = parse_config(["--data", "d", "--config", str(tmp_path / "old.yaml")])
    assert (config.family, config.epochs) == ("schnet", 3)
    assert f"{tmp_path / 'old.yaml'}: the key 'model' is deprecated for the model family, use 'family'" in caplog.text


def test_an_architecture_option_is_checked_by_the_families_that_have_it():
    with pytest.raises(UsageError, match=r"^argument --layers: must be a whole number >= 1, got 0$"):
        parse_config(["--data", "d", "--layers", "0"])
    with pytest.raises(UsageError, match=r"^argument --force-weight: must be a number >= 0 \(0: energies only\)"):
        parse_config(["--data", "d", "--family", "schnet", "--force-weight", "-1"])
