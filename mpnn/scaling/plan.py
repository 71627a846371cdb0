"""Expand a scaling study into runs and write them to ``DIR/study.json``.

A study is ranks x strategies x batch sizes x repeats, each run an ``mpnn-train`` with the
same data, epochs, model family and extra settings. With one rank ``dbs`` and ``gbs`` train the
same thing (per-rank batch = global batch = ``--batch-size``), so each batch size and
repeat gets a single 1-rank run that is the baseline of both strategies. Repeat ``i``
trains with seed ``seed + i`` in every configuration, so repeats differ from each other
while a configuration and its baseline share their seeds.

``study.json`` holds the study's settings and one entry per run; run directories are
relative to the study directory (``runs/<run id>``), so a finished study can be moved
or committed with its results.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import logging
import os
from dataclasses import dataclass
from typing import Any

import yaml

from mpnn import atomic, settings
from mpnn.config import LEGACY_FAMILY_KEY, BatchStrategy, ModelName, with_family
from mpnn.errors import UsageError, UserError
from mpnn.settings import AT_LEAST_0, AT_LEAST_1, Allowed, setting

log = logging.getLogger(__name__)

STUDY_FILE = "study.json"
RUNS_SUBDIR = "runs"
# Flags the study sets for every run; `train_args` must not set them again.
CONTROLLED_FLAGS = ("--data", "--config", "--run-dir", "--epochs", "--batch-size", "--batch-strategy",
                    "--seed", "--family", "--model")


class StudyError(UserError, ValueError):
    """A study that cannot be planned or read (the message names the file and the problem)."""


POSITIVE_LIST = Allowed(lambda v: bool(v) and all(isinstance(x, int) and x >= 1 for x in v),
                        "a non-empty list of whole numbers >= 1")


@dataclass
class Study:
    """The settings of a scaling study (the keys of a study YAML file, and the flags of
    ``mpnn-scaling plan``, which override them): each declares its help and allowed values
    (`mpnn.settings`).

    Paths are stored absolute, so runs and jobs can start from any working directory.
    """

    data: str = setting("", "prepared data set (manifest.json or its directory)")
    ranks: list[int] = setting(help="rank counts (must include 1; default 1 2)", allowed=POSITIVE_LIST,
                               default_factory=lambda: [1, 2])
    strategies: list[str] = setting(help="batch strategies: dbs and/or gbs (default both)",
                                    allowed=Allowed(bool, "a non-empty list"), choices=BatchStrategy.values(),
                                    default_factory=lambda: list(BatchStrategy.values()))
    batch_sizes: list[int] = setting(help="--batch-size values: per rank for dbs, global for gbs (default 64 128)",
                                     allowed=POSITIVE_LIST, default_factory=lambda: [64, 128])
    repeats: int = setting(1, "runs per configuration, seeds SEED, SEED+1, ... (default 1)", AT_LEAST_1)
    epochs: int = setting(10, "epochs of every run (default 10)", AT_LEAST_1)
    family: str = setting("auto", "model family of every run: mpnn, gat-lspe, schnet or auto (default auto)",
                          choices=ModelName.values())
    seed: int = setting(0, "seed of the first repeat (default 0)", AT_LEAST_0)
    config: str = setting("", "mpnn-train --config file for every run")
    train_args: list[str] = setting(help="further mpnn-train flags for every run", flag=False,
                                    default_factory=list)

    def validate(self) -> None:
        """Raise `StudyError` naming the first invalid setting."""
        try:
            settings.check(self)
        except UsageError as exc:
            raise StudyError(str(exc)) from None
        if not self.data:
            raise StudyError("no data: set `data` in the study file or pass --data")
        if not os.path.exists(self.data):
            raise StudyError(f"data {self.data}: no such file or directory")
        if self.config and not os.path.isfile(self.config):
            raise StudyError(f"config {self.config}: no such file")
        if 1 not in self.ranks:
            raise StudyError(f"ranks {self.ranks} lack 1: time gain and metric loss are relative to 1 rank")
        if "gbs" in self.strategies:
            uneven = [(b, r) for b in self.batch_sizes for r in self.ranks if b % r]
            if uneven:
                b, r = uneven[0]
                raise StudyError(f"gbs splits the global batch across ranks: batch size {b} is not divisible by {r}")
        clashes = [a for a in self.train_args if a.split("=", 1)[0] in CONTROLLED_FLAGS]
        if clashes:
            raise StudyError(f"train_args {clashes} set what the study controls; use the study's own keys instead")


@dataclass
class Run:
    """One training run of a study.

    `strategy` is what ``--batch-strategy`` gets; `serves` the strategies whose curves the
    run belongs to (both for a 1-rank run). `batch_size` is ``--batch-size`` (per rank for
    dbs, global for gbs); `batch_per_rank` and `global_batch` are what the ranks see.
    `run_dir` is relative to the study directory; `train_args` are the run's mpnn-train
    flags other than ``--data``, ``--config`` and ``--run-dir`` (which the study supplies).
    """

    id: str
    ranks: int
    strategy: str
    serves: list[str]
    batch_size: int
    batch_per_rank: int
    global_batch: int
    repeat: int
    seed: int
    run_dir: str
    train_args: list[str]

    def mpnn_train_args(self, study: Study, study_dir: str) -> list[str]:
        """The complete mpnn-train argument list of this run."""
        args = ["--data", study.data, "--run-dir", os.path.join(os.path.abspath(study_dir), self.run_dir)]
        if study.config:
            args += ["--config", study.config]
        return args + self.train_args


def load_study_file(path: str) -> dict[str, Any]:
    """Read a study YAML (or JSON) file into a dict of `Study` fields."""
    try:
        with open(path) as handle:
            values = yaml.safe_load(handle)
    except (OSError, yaml.YAMLError) as exc:
        raise StudyError(f"{path}: cannot read the study: {exc}") from exc
    if not isinstance(values, dict):
        raise StudyError(f"{path}: expected a mapping of study settings, got {type(values).__name__}")
    if LEGACY_FAMILY_KEY in values:  # a file the user writes; study.json (written by plan) is read quietly
        log.warning("%s: the study key %r is deprecated for the model family, use 'family'", path, LEGACY_FAMILY_KEY)
    values = with_family(values)
    unknown = set(values) - {f.name for f in dataclasses.fields(Study)}
    if unknown:
        raise StudyError(f"{path}: unknown study keys {sorted(unknown)}")
    return values


def make_study(values: dict[str, Any]) -> Study:
    """A validated `Study` from a dict (study file < flags), with absolute paths."""
    values = with_family(values)
    for name in ("ranks", "strategies", "batch_sizes", "train_args"):  # a single value or a string of words
        if isinstance(values.get(name), (str, int)):
            values[name] = str(values[name]).split() if name == "train_args" else [values[name]]
    study = Study(**values)
    study.data = os.path.abspath(study.data) if study.data else ""
    study.config = os.path.abspath(study.config) if study.config else ""
    study.validate()
    study.ranks = sorted(set(study.ranks))
    study.train_args = [str(a) for a in study.train_args]
    return study


def expand(study: Study) -> list[Run]:
    """The runs of `study`, ordered repeat by repeat and batch by batch with the 1-rank
    baseline first, so that a study stopped half-way has complete comparisons."""
    runs = []
    for repeat in range(study.repeats):
        seed = study.seed + repeat
        for batch in study.batch_sizes:
            for ranks in study.ranks:
                strategies = ["dbs"] if ranks == 1 else study.strategies
                for strategy in strategies:
                    run_id = f"r1-b{batch}-rep{repeat}" if ranks == 1 else f"r{ranks}-{strategy}-b{batch}-rep{repeat}"
                    per_rank = batch if strategy == "dbs" else batch // ranks
                    args = ["--epochs", str(study.epochs), "--batch-size", str(batch), "--batch-strategy", strategy,
                            "--seed", str(seed), "--family", study.family, *study.train_args]
                    runs.append(Run(
                        id=run_id, ranks=ranks, strategy=strategy,
                        serves=list(study.strategies) if ranks == 1 else [strategy],
                        batch_size=batch, batch_per_rank=per_rank, global_batch=per_rank * ranks,
                        repeat=repeat, seed=seed, run_dir=os.path.join(RUNS_SUBDIR, run_id), train_args=args,
                    ))
    return runs


def write_plan(study_dir: str, study: Study, runs: list[Run]) -> str:
    """Write ``study_dir/study.json``; returns its path.

    An existing plan is kept when it lists the same study and runs (so planning again is
    harmless) and is an error when it differs.
    """
    path = os.path.join(study_dir, STUDY_FILE)
    content = {"study": dataclasses.asdict(study), "runs": [dataclasses.asdict(r) for r in runs]}
    if os.path.exists(path):
        old = read_json(path)
        if {k: old.get(k) for k in content} != content:
            raise StudyError(f"{path} already holds a different study; remove it or choose another directory")
        return path
    os.makedirs(study_dir, exist_ok=True)
    content["created"] = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    atomic.write_json(path, content)
    return path


def load_plan(study_dir: str) -> tuple[Study, list[Run]]:
    """Read ``study_dir/study.json`` (written by `write_plan`)."""
    path = os.path.join(study_dir, STUDY_FILE)
    if not os.path.isfile(path):
        raise StudyError(f"{path}: no study here; run `mpnn-scaling plan ... -o {study_dir}` first")
    content = read_json(path)
    try:
        return Study(**with_family(content["study"])), [Run(**run) for run in content["runs"]]
    except (KeyError, TypeError) as exc:
        raise StudyError(f"{path}: not a study written by mpnn-scaling plan ({exc})") from None


def read_json(path: str) -> Any:
    try:
        with open(path) as handle:
            return json.load(handle)
    except (OSError, json.JSONDecodeError) as exc:
        raise StudyError(f"{path}: cannot read: {exc}") from None
