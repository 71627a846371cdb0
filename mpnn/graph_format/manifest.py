"""``manifest.json``: what a prepared data set holds, as a typed, frozen dataclass.

The converters (`data_prep`) build a `Manifest` and `save` it; the loader, training,
evaluation and benchmarks `load` it. The file is JSON with these keys (the JSON Schema
is ``manifest.schema.json`` next to this module):

================  ==============================================================
key               value
================  ==============================================================
schema_version    int, `SCHEMA_VERSION` (the record features' version)
created           ISO 8601 UTC time of writing
kind              ``"water"`` or ``"pdbbind"``: the data source
target            ``{"name", "units", "extensive"}`` of the regression target
features          ``{name: {"dtype", "level", "inner_shape", "description"}}``
                  (`mpnn.graph_format.features.features_to_json`)
vocab             ``{"atom": [...], "bond": [...]}``: type names by index
compression       ``"GZIP"`` or ``"none"``
splits            ``{"train"|"valid"|"test": {"records", "shards": [{"file",
                  "records", "bytes", "sha256"}]}}``; files relative to the
                  manifest's directory
target_stats      statistics of the target over the train split, or null:
                  ``count, mean, std, min, max, per_atom_type_mean {type: mean},
                  graph_offset, residual_std, atoms_per_graph_mean,
                  per_atom_type_reference {type: energy}`` (no intercept)
options           the converter's options (free form)
sources           ``[{"path", "sha256", "records"}]``: every input file
skipped           ``[{"source", "index", "reason"}]``: every input not converted
notes             ``{note: count}``: repairs made by the converter
summary           ``{"converted", "skipped"}``
totals            ``{"atoms", "edges", "skipped_by_reason": {reason: count}}``
ranks             MPI ranks that converted (1 without MPI)
warnings          ``[str]``: what the converter found doubtful in the set as a
                  whole (e.g. energies implausible in their stated unit); the
                  records were written all the same
timing            ``{phase_seconds: float}`` of the conversion (free form)
(others)          source-specific keys (water: ``group``, and with coordinates
                  ``geometry``: ``{"cutoff", "units", "forces"}``; pdbbind:
                  ``atom_features``, ``cutoff``, ``rwpe_order``, ``index_files``),
                  kept in `Manifest.extra`
================  ==============================================================
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import os
from dataclasses import dataclass, field
from typing import Any, Mapping

from mpnn.atomic import atomic_open
from mpnn.errors import InputError
from mpnn.graph_format.features import SCHEMA_VERSION

MANIFEST_NAME = "manifest.json"
SPLITS = ("train", "valid", "test")
_REQUIRED = ("schema_version", "kind", "target", "features", "vocab", "splits")


class ManifestError(InputError, ValueError):
    """A manifest that cannot be used (the message names the file and the problem)."""


@dataclass(frozen=True)
class Target:
    name: str
    units: str
    extensive: bool


@dataclass(frozen=True)
class Shard:
    """One TFRecord file: name relative to the manifest, records, size (bytes) and sha256
    (None in manifests written before they were recorded)."""

    file: str
    records: int
    bytes: int | None = None
    sha256: str | None = None


@dataclass(frozen=True)
class Split:
    records: int
    shards: tuple[Shard, ...] = ()


@dataclass(frozen=True)
class TargetStats:
    """Target statistics over the train split (see `data_prep.records.TargetSums`); units
    those of the target.

    ``per_atom_type_mean`` and ``graph_offset`` are the least-squares fit of the target on
    the atom-type counts with an intercept; ``per_atom_type_reference`` the same fit
    without one (size-extensive reference energies per element; empty in manifests
    written before it was recorded)."""

    count: int
    mean: float
    std: float
    min: float
    max: float
    per_atom_type_mean: dict[str, float]
    graph_offset: float
    residual_std: float
    atoms_per_graph_mean: float
    per_atom_type_reference: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Source:
    path: str
    sha256: str
    records: int


@dataclass(frozen=True)
class SkippedEntry:
    """An input not converted: its file, index in that file (frame, row, line) and why."""

    source: str
    index: int
    reason: str


@dataclass(frozen=True)
class Totals:
    atoms: int
    edges: int
    skipped_by_reason: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class Summary:
    converted: int
    skipped: int


@dataclass(frozen=True)
class Manifest:
    """A prepared data set (see the module docstring for the file's keys).

    `path` is where it was loaded from or saved to (not part of the file).
    """

    kind: str
    target: Target
    features: dict[str, dict]
    vocab: dict[str, list[str]]
    splits: dict[str, Split]
    compression: str = "GZIP"
    target_stats: TargetStats | None = None
    options: dict[str, Any] = field(default_factory=dict)
    sources: tuple[Source, ...] = ()
    skipped: tuple[SkippedEntry, ...] = ()
    notes: dict[str, int] = field(default_factory=dict)
    summary: Summary = Summary(0, 0)
    totals: Totals = Totals(0, 0)
    ranks: int = 1
    warnings: tuple[str, ...] = ()
    timing: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    schema_version: int = SCHEMA_VERSION
    created: str = ""
    path: str | None = field(default=None, compare=False)

    # -- reading ----------------------------------------------------------------------

    @classmethod
    def load(cls, dir_or_path: str, validate: bool = True) -> "Manifest":
        """Load and (unless `validate` is False: `mpnn.verify` reports every problem, not
        the first) `validate` ``manifest.json`` (or the directory holding it).

        Raises:
            ManifestError: unreadable file, missing keys, wrong schema version, unknown split.
        """
        path = os.path.join(dir_or_path, MANIFEST_NAME) if os.path.isdir(dir_or_path) else dir_or_path
        try:
            with open(path) as handle:
                content = json.load(handle)
        except (OSError, json.JSONDecodeError) as exc:
            raise ManifestError(f"{path}: cannot read manifest: {exc}") from exc
        manifest = cls.from_json(content, path)
        if validate:
            manifest.validate()
        return manifest

    @classmethod
    def from_json(cls, content: Mapping[str, Any], path: str | None = None) -> "Manifest":
        """The manifest of a parsed ``manifest.json``; raises `ManifestError` (naming `path`)
        when a required key is missing or a section has the wrong shape."""
        where = path or "manifest"
        if not isinstance(content, Mapping):
            raise ManifestError(f"{where}: not a JSON object")
        missing = [key for key in _REQUIRED if key not in content]
        if missing:
            raise ManifestError(f"{where}: manifest has no {', '.join(repr(k) for k in missing)} section")
        known = {f.name for f in dataclasses.fields(cls)} - {"extra", "path"}
        try:
            stats = content.get("target_stats")
            summary, totals = content.get("summary"), content.get("totals")
            return cls(
                schema_version=content["schema_version"],
                created=content.get("created", ""),
                kind=content["kind"],
                target=Target(**content["target"]),
                features=dict(content["features"]),
                vocab={k: list(v) for k, v in content["vocab"].items()},
                compression=content.get("compression", "GZIP"),
                splits={
                    name: Split(int(s["records"]), tuple(Shard(**shard) for shard in s["shards"]))
                    for name, s in content["splits"].items()
                },
                target_stats=TargetStats(**stats) if stats is not None else None,
                options=dict(content.get("options", {})),
                sources=tuple(Source(**s) for s in content.get("sources", ())),
                skipped=tuple(SkippedEntry(**s) for s in content.get("skipped", ())),
                notes=dict(content.get("notes", {})),
                summary=Summary(**summary) if summary is not None else Summary(0, 0),
                totals=Totals(**totals) if totals is not None else Totals(0, 0),
                ranks=int(content.get("ranks", 1)),
                warnings=tuple(str(w) for w in content.get("warnings", ())),
                timing=dict(content.get("timing", {})),
                extra={k: v for k, v in content.items() if k not in known},
                path=path,
            )
        except (TypeError, KeyError, ValueError, AttributeError) as exc:
            raise ManifestError(f"{where}: malformed manifest: {type(exc).__name__}: {exc}") from exc

    def validate(self) -> None:
        """Check what a reader relies on.

        Raises:
            ManifestError: naming the file and the problem (schema version, unknown split,
                shard counts that do not add up, compression).
        """
        where = self.path or "manifest"
        if self.schema_version != SCHEMA_VERSION:
            raise ManifestError(f"{where}: schema version {self.schema_version}, this mpnn reads {SCHEMA_VERSION}")
        unknown = sorted(set(self.splits) - set(SPLITS))
        if unknown:
            raise ManifestError(f"{where}: unknown split(s) {unknown}; splits are {list(SPLITS)}")
        if self.compression not in ("GZIP", "none"):
            raise ManifestError(f"{where}: compression {self.compression!r}, expected 'GZIP' or 'none'")
        for name, split in self.splits.items():
            in_shards = sum(s.records for s in split.shards)
            if in_shards != split.records:
                raise ManifestError(f"{where}: split {name!r} lists {split.records} records, its shards {in_shards}")

    # -- writing ----------------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        """The content of ``manifest.json`` (keys in the documented order, extras last)."""
        content = {
            "schema_version": self.schema_version,
            "created": self.created,
            "kind": self.kind,
            "target": dataclasses.asdict(self.target),
            "features": self.features,
            "vocab": self.vocab,
            "compression": self.compression,
            "splits": {
                name: {"records": s.records, "shards": [dataclasses.asdict(shard) for shard in s.shards]}
                for name, s in self.splits.items()
            },
            "target_stats": dataclasses.asdict(self.target_stats) if self.target_stats is not None else None,
            "options": self.options,
            "sources": [dataclasses.asdict(s) for s in self.sources],
            "skipped": [dataclasses.asdict(s) for s in self.skipped],
            "notes": self.notes,
            "summary": dataclasses.asdict(self.summary),
            "totals": dataclasses.asdict(self.totals),
            "ranks": self.ranks,
            "warnings": list(self.warnings),
            "timing": self.timing,
        }
        return {**content, **self.extra}

    def save(self, directory: str) -> "Manifest":
        """Write ``directory/manifest.json`` atomically (a temporary file renamed); returns
        the manifest with its `path` set (and `created` stamped if it was empty)."""
        path = os.path.join(directory, MANIFEST_NAME)
        saved = dataclasses.replace(
            self,
            path=path,
            created=self.created or _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        )
        with atomic_open(path) as handle:
            json.dump(saved.to_json(), handle, indent=1)
            handle.write("\n")
        return saved

    # -- what readers ask -------------------------------------------------------------

    @property
    def directory(self) -> str:
        """The directory of the shard files (that of `path`; the working directory if unset)."""
        return os.path.dirname(os.path.abspath(self.path)) if self.path else os.getcwd()

    @property
    def feature_names(self) -> list[str]:
        return list(self.features)

    def split(self, name: str) -> tuple[list[str], list[int]]:
        """Shard paths and their record counts of split `name`.

        Raises:
            ManifestError: the manifest has no such split.
        """
        if name not in self.splits:
            raise ManifestError(f"{self.path or 'manifest'}: no split {name!r} (has {list(self.splits)})")
        shards = self.splits[name].shards
        return [os.path.join(self.directory, s.file) for s in shards], [s.records for s in shards]

    @property
    def group_name(self) -> str | None:
        """Name of the per-record group that reports break errors down by (water:
        ``n_waters``), or None when the data set has none."""
        return self.extra.get("group", {}).get("name")

    def split_records(self, name: str) -> int:
        """Records of split `name`, 0 if the manifest has no such split."""
        return self.splits[name].records if name in self.splits else 0
