"""SchNetPack's SchNet and our ``schnet`` family side by side: same data, machine and budget.

Issue 20 asks for a geometry model at least as accurate as SchNetPack's SchNet and at least
twice as fast in training structures per second. This script trains both on the same
extended XYZ files written by ``benchmarks/make_water_set.py`` (TIP4P energies in kcal/mol,
forces in kcal/mol/Angstrom), with the same cutoff (Angstrom), width, interactions, radial
basis, readout, loss weights, batch, learning rate, seed and wall-clock budget, on the same 2
cores without a GPU, evaluates both on the test file with the same metric code
(`mpnn.evaluate.split_metrics`) and writes one JSON report::

    python benchmarks/make_water_set.py --count 30000 --seed 0 -o /tmp/water-train --workers 2
    python benchmarks/make_water_set.py --count 3000 --seed 1 -o /tmp/water-test --workers 2
    python benchmarks/schnetpack_side_by_side.py --train /tmp/water-train/water_0000.extxyz \\
        --test /tmp/water-test/water_0000.extxyz --budget-seconds 1800

SchNetPack is installed by this script into its own virtualenv (``--venv``, default
``benchmarks/.venv-schnetpack``, git-ignored), never into the project's: torch 2.13.0 (the
CPU wheel), then SchNetPack with ``--no-deps`` and its run-time dependencies (the package
index serves SchNetPack 2.1.1 at most, whose pin ``sympy<=1.12`` conflicts with torch 2.13's
``sympy>=1.13.3``; sympy is used only by SchNetPack's SO(3) layers, not by SchNet). The
SchNetPack side runs in that virtualenv as a separate process (``--schnetpack-worker``, this
same file: its top level imports nothing outside the standard library).

What each side does:

- **SchNetPack**: the structures go into an ``ASEAtomsData`` database; an
  ``AtomsDataModule`` serves them with the transforms ``ASENeighborList(cutoff)``,
  ``RemoveOffsets`` (the mean energy per atom of the training split; water clusters all
  have the composition (H2O)n, so per-element references would fit the same), the energy
  per atom as a target, ``CastTo32``; ``representation.SchNet`` (``GaussianRBF``,
  ``CosineCutoff``), ``atomistic.Atomwise`` (sum over atoms) and ``atomistic.Forces``
  (``-dE/dR`` by autograd) in a ``NeuralNetworkPotential``; SchNetPack's ``AtomisticTask``
  trained by a Lightning ``Trainer`` on the CPU with ``torch.set_num_threads(threads)``.
- **Ours**: ``mpnn-prep-water TRAIN --test-inputs TEST --cutoff C`` (the test file is the
  test split, the train file is split into train and valid by the seeded hash of each
  record's id), then ``horovodrun -np 2 mpnn-train --family schnet`` with a global batch
  (``--batch-strategy gbs``, so both sides take the same number of structures per step).

The same loss on both sides: ``MSE(E_pred / n, E_true / n) + force_weight * MSE(F_pred,
F_true)`` (energies per atom, forces per component; `mpnn.forces`), Adam at a constant
learning rate halved after 5 epochs without a better validation loss, the same validation
structures (those of the train file that ``mpnn-prep-water`` puts in valid, by its own
`data_prep.records.SplitRule`), and the weights of the best validation epoch are tested.
Both stop after the epoch in which the budget passes (ours: ``--max-train-seconds``; the
SchNetPack side: the same rule in a Lightning callback), so both report the seconds they
actually trained.

Speed: structures trained per second over the training epochs, validation included
(``fit``), on both sides; for SchNetPack also with validation excluded (``train_only``),
and for ours when its metrics give the training-only seconds. SchNetPack builds every
structure's neighbour list in Python (ASE's ``neighbor_list``, a new ``Atoms`` each time)
at every access, so in every epoch again, in the data loader's worker processes
(``--loader-workers``; 0: in the training process between steps), and collates a batch
by concatenating per-structure tensors and offsetting the pair indices; ours reads the pairs
found once at conversion (a KD-tree) from the records and batches them in ``tf.data``.
SchNetPack's offsets are computed before training by one pass over the training split (its
neighbour lists included), reported as ``setup_seconds`` and not counted in the budget.
Measured on 64 structures of 3 to 30 waters (50 atoms, 1,460 pairs within 5 Angstrom on
average): reading a structure and its ASE neighbour list took 16 ms of CPU, a training step
of 32 structures 2.5 s of CPU on 2 threads, so the neighbour lists are about a sixth of
SchNetPack's work per epoch.

Budget: a side whose epochs are long passes the budget by up to one epoch (SchNetPack's on
30,000 structures at the 25 structures/s those CPU seconds give on 2 idle cores: some 20
minutes), which gives it more training than the other; the report has each side's seconds. The models differ in one respect: SchNetPack
embeds the elements up to Z = 100 (6,400 parameters at width 64, all but two rows unused), ours
the data set's elements, so SchNetPack counts more parameters for the same network.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as _dt
import json
import logging
import os
import shutil
import subprocess
import sys
import time
from types import SimpleNamespace
from typing import Any, Sequence

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_VENV = os.path.join(REPO, "benchmarks", ".venv-schnetpack")
WORKER_FLAG = "--schnetpack-worker"
SCHNETPACK = "schnetpack==2.1.1"  # the newest the package index serves
TORCH = "torch==2.13.0"
# SchNetPack 2.1.1's run-time dependencies less sympy (see the module docstring) and its
# development tools (pre-commit, black, tensorboard).
SCHNETPACK_DEPENDENCIES = (
    "numpy>=2.0.0", "ase>=3.21", "h5py", "pyyaml", "hydra-core>=1.1.0", "pytorch-lightning>=2.0.0", "torchmetrics",
    "hydra-colorlog>=1.1.0", "rich", "fasteners", "dirsync", "torch-ema", "matscipy>=1.1.0", "tqdm", "protobuf",
)
PLATEAU_FACTOR, PLATEAU_PATIENCE = 0.5, 5  # as mpnn-train --lr-decay plateau

log = logging.getLogger("schnetpack_side_by_side")


class BenchmarkInputError(Exception):
    """An input or a step of the benchmark that fails; the message names it."""


@dataclasses.dataclass(frozen=True)
class SideBySideOptions:
    """What both sides train with.

    Attributes:
        train, test: extended XYZ files (``make_water_set.py``: energies kcal/mol, forces
            kcal/mol/Angstrom).
        budget_seconds: wall-clock training budget of each side, seconds.
        cutoff: pair cutoff, Angstrom.
        width: features per atom (SchNetPack's ``n_atom_basis``).
        interactions: interaction blocks (ours: ``--message-steps``).
        rbf: Gaussians of the radial basis (ours: ``--rbf-bins``).
        readout_hidden: hidden units of the per-atom energy MLP.
        batch_size: structures per training step (ours: the global batch over 2 ranks).
        force_weight: weight of the force term of the loss against the energy per atom.
        learning_rate: Adam's learning rate.
        valid_fraction: share of the train file used for validation.
        max_epochs: epochs at most (the budget usually stops training first).
        seed: seed of the weights, the shuffling and the validation split.
        threads: CPU threads of the SchNetPack process (ours: 2 ranks on the 2 cores).
        loader_workers: SchNetPack's data loader worker processes.
        only: ``"schnetpack"``, ``"ours"`` or ``"both"``.
        out: path of the report JSON (``benchmarks/results/<date>-geometry/...``).
        workdir: scratch directory (databases, records, runs).
        venv: SchNetPack's virtualenv.

    The defaults are ours (``mpnn-prep-water --cutoff``, `mpnn.models.schnet.SchNetConfig`,
    ``mpnn-train``'s batch and learning rate; a test keeps them equal).
    """

    train: str
    test: str
    budget_seconds: float = 1800.0
    cutoff: float = 7.0
    width: int = 64
    interactions: int = 3
    rbf: int = 32
    readout_hidden: int = 32
    batch_size: int = 64
    force_weight: float = 0.1
    learning_rate: float = 1e-3
    valid_fraction: float = 0.05
    max_epochs: int = 1000
    seed: int = 0
    threads: int = 2
    loader_workers: int = 1
    only: str = "both"
    out: str = ""
    workdir: str = ""
    venv: str = DEFAULT_VENV


# ---- the SchNetPack side, parent process (project virtualenv) --------------------------------


def schnetpack_python(venv: str) -> str:
    """The Python of SchNetPack's virtualenv `venv`, made (torch, then SchNetPack) if needed.

    Raises:
        BenchmarkInputError: an install step failed (its command and the end of its output).
    """
    python = os.path.join(venv, "bin", "python")
    installed = f"import importlib.metadata as m; assert m.version('schnetpack') == {SCHNETPACK.split('==')[1]!r}"
    if os.path.exists(python) and _run_quiet([python, "-c", f"{installed}; import torch, pytorch_lightning"]) is None:
        return python
    pip = [python, "-m", "pip", "install", "--quiet"]
    steps = [
        [sys.executable, "-m", "venv", venv],
        [*pip, TORCH],
        [*pip, "--no-deps", SCHNETPACK],
        [*pip, TORCH, *SCHNETPACK_DEPENDENCIES],
    ]
    for command in steps:
        log.info("SchNetPack virtualenv: %s", " ".join(command))
        failure = _run_quiet(command)
        if failure is not None:
            raise BenchmarkInputError(f"installing SchNetPack into {venv}: {' '.join(command)} failed: {failure}")
    return python


def _run_quiet(command: Sequence[str], timeout: float = 1800.0) -> str | None:
    """Run `command`; None when it succeeds, else the last lines of its output."""
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return str(exc)
    if result.returncode == 0:
        return None
    lines = [line for line in (result.stdout + result.stderr).splitlines() if not line.startswith("WARNING: Location")]
    return " | ".join(lines[-6:])


def validation_indices(train: str, count: int, fraction: float, seed: int, test: str) -> list[int]:
    """Indices of the structures of the file `train` (`count` of them) that ``mpnn-prep-water
    TRAIN --test-inputs TEST --fractions 1-f f 0 --seed SEED`` puts in its valid split: its
    own rule (`data_prep.records.SplitRule`) on each record's id (file name and index)."""
    from data_prep.records import SplitRule

    rule = SplitRule((1.0 - fraction, fraction, 0.0), seed, test_sources=frozenset({os.path.realpath(test)}))
    source, name = os.path.realpath(train), os.path.basename(train)
    return [k for k in range(count) if rule.split_of(k, f"{name}:{k}", source=source) == "valid"]


def count_frames(path: str) -> int:
    """Frames of the extended XYZ file `path` (`data_prep.structures.scan_xyz_frames`)."""
    from data_prep.structures import open_structure_file, scan_xyz_frames

    with open_structure_file(path) as handle:
        return scan_xyz_frames(handle).count


def run_schnetpack(options: SideBySideOptions) -> dict[str, Any]:
    """Train and test SchNetPack's SchNet in its virtualenv; its run facts and test metrics
    (`mpnn.evaluate.split_metrics`, the code that gives ours)."""
    import numpy as np

    from mpnn.evaluate import split_metrics
    from mpnn.predictions import ForcePredictions, Predictions

    python = schnetpack_python(options.venv)
    workdir = os.path.join(options.workdir, "schnetpack")
    if os.path.exists(workdir):
        shutil.rmtree(workdir)
    os.makedirs(workdir)
    count = count_frames(options.train)
    config = {
        **dataclasses.asdict(options),
        "workdir": workdir,
        "valid_indices": validation_indices(options.train, count, options.valid_fraction, options.seed, options.test),
    }
    config_path = os.path.join(workdir, "config.json")
    with open(config_path, "w") as handle:
        json.dump(config, handle)
    command = [python, os.path.abspath(__file__), WORKER_FLAG, config_path]
    log.info("SchNetPack side: %s", " ".join(command))
    # In `workdir`: SchNetPack's data module leaves its "splitting.lock" in the current directory.
    if subprocess.run(command, cwd=workdir, timeout=options.budget_seconds * 3 + 3600).returncode != 0:
        raise BenchmarkInputError(f"the SchNetPack run failed (its output above; files in {workdir})")
    with open(os.path.join(workdir, "run.json")) as handle:
        run = json.load(handle)
    arrays = np.load(os.path.join(workdir, "test_predictions.npz"))
    forces = ForcePredictions(arrays["forces_true"], arrays["forces_pred"], arrays["atom_n_waters"])
    ids = np.array([f"{os.path.basename(options.test)}:{k}" for k in range(len(arrays["energy_true"]))])
    test = Predictions(ids, arrays["n_waters"], arrays["energy_true"], arrays["energy_pred"], forces)
    return {**run, "test": split_metrics(test, "n_waters")}


# ---- the SchNetPack side, worker process (SchNetPack's virtualenv) ---------------------------


def schnetpack_worker(config_path: str) -> int:
    """Train SchNetPack's SchNet as configured in `config_path` (`run_schnetpack`); write
    ``run.json`` and ``test_predictions.npz`` beside it. Imports only SchNetPack's stack."""
    import typing

    import torch.utils.data.dataloader

    # SchNetPack 2.1.1 imports this type variable, which torch 2.13 no longer defines; it is
    # only an annotation there.
    if not hasattr(torch.utils.data.dataloader, "T_co"):
        torch.utils.data.dataloader.T_co = typing.TypeVar("T_co", covariant=True)

    import ase.io
    import numpy as np
    import pytorch_lightning as pl
    import schnetpack as spk
    import schnetpack.transform as trn
    import torch
    import torchmetrics

    with open(config_path) as handle:
        config = json.load(handle)
    workdir = config["workdir"]
    parts = schnetpack_parts()
    torch.set_num_threads(config["threads"])
    pl.seed_everything(config["seed"], workers=True)

    started = time.perf_counter()
    train = ase.io.read(config["train"], index=":", format="extxyz")
    test = ase.io.read(config["test"], index=":", format="extxyz")
    database = os.path.join(workdir, "structures.db")
    dataset = spk.data.ASEAtomsData.create(
        database, distance_unit="Ang", property_unit_dict={"energy": "kcal/mol", "forces": "kcal/mol/Ang"}
    )
    frames = train + test
    dataset.add_systems(
        [{"energy": np.array([a.get_potential_energy()]), "forces": a.get_forces()} for a in frames], frames
    )
    valid = sorted(config["valid_indices"])
    valid_set = set(valid)
    split_file = os.path.join(workdir, "split.npz")
    np.savez(
        split_file,
        train_idx=np.array([k for k in range(len(train)) if k not in valid_set]),
        val_idx=np.array(valid),
        test_idx=np.arange(len(train), len(frames)),
    )
    database_seconds = time.perf_counter() - started

    cutoff, width = config["cutoff"], config["width"]
    datamodule = spk.data.AtomsDataModule(
        database,
        batch_size=config["batch_size"],
        split_file=split_file,
        transforms=[
            trn.ASENeighborList(cutoff=cutoff),
            trn.RemoveOffsets("energy", remove_mean=True, remove_atomrefs=False),
            parts.EnergyPerAtom(),
            trn.CastTo32(),
        ],
        num_workers=config["loader_workers"],
        pin_memory=False,
        load_properties=["energy", "forces"],
    )
    model = spk.model.NeuralNetworkPotential(
        representation=spk.representation.SchNet(
            n_atom_basis=width,
            n_interactions=config["interactions"],
            radial_basis=spk.nn.GaussianRBF(n_rbf=config["rbf"], cutoff=cutoff),
            cutoff_fn=spk.nn.CosineCutoff(cutoff),
        ),
        input_modules=[spk.atomistic.PairwiseDistances()],
        output_modules=[
            spk.atomistic.Atomwise(n_in=width, n_hidden=config["readout_hidden"], n_layers=2, output_key="energy"),
            spk.atomistic.Forces(energy_key="energy", force_key="forces"),
            parts.PerAtomEnergyOutput(),
        ],
        postprocessors=[trn.CastTo64(), trn.AddOffsets("energy", add_mean=True, add_atomrefs=False)],
    )
    mae = {"MAE": torchmetrics.MeanAbsoluteError()}
    task = spk.task.AtomisticTask(
        model=model,
        outputs=[
            spk.task.ModelOutput("energy_per_atom", loss_fn=torch.nn.MSELoss(), loss_weight=1.0, metrics=mae),
            spk.task.ModelOutput("forces", loss_fn=torch.nn.MSELoss(), loss_weight=config["force_weight"], metrics=mae),
        ],
        optimizer_cls=torch.optim.Adam,
        optimizer_args={"lr": config["learning_rate"]},
        scheduler_cls=torch.optim.lr_scheduler.ReduceLROnPlateau,
        scheduler_args={"factor": PLATEAU_FACTOR, "patience": PLATEAU_PATIENCE},
        scheduler_monitor="val_loss",
    )
    clock = parts.TrainingClock(config["budget_seconds"])
    best = pl.callbacks.ModelCheckpoint(dirpath=os.path.join(workdir, "checkpoints"), monitor="val_loss", save_top_k=1)
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=1,
        max_epochs=config["max_epochs"],
        callbacks=[clock, best],
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        inference_mode=False,  # validation needs autograd for the forces
        default_root_dir=workdir,
    )
    fit_started = time.perf_counter()
    trainer.fit(task, datamodule=datamodule)
    fit_seconds = time.perf_counter() - fit_started

    task.load_state_dict(torch.load(best.best_model_path, weights_only=False)["state_dict"])
    evaluation_started = time.perf_counter()
    energy_pred, forces_pred, order = predict_test(task.model, datamodule.test_dataloader())
    evaluation_seconds = time.perf_counter() - evaluation_started
    test_order = np.argsort(order)  # dataset index -> row of the predictions
    energy_pred = energy_pred[test_order]
    forces_pred = [forces_pred[k] for k in test_order]
    n_waters = np.array([len(a) // 3 for a in test])
    np.savez(
        os.path.join(workdir, "test_predictions.npz"),
        energy_true=np.array([a.get_potential_energy() for a in test]),
        energy_pred=energy_pred,
        n_waters=n_waters,
        forces_true=np.concatenate([a.get_forces() for a in test]),
        forces_pred=np.concatenate(forces_pred),
        atom_n_waters=np.repeat(n_waters, [len(a) for a in test]),
    )
    run = {
        "epochs_run": clock.epochs,
        "train_structures": len(train) - len(valid),
        "valid_structures": len(valid),
        "test_structures": len(test),
        "structures_trained": clock.structures,
        "train_seconds_without_validation": clock.train_seconds,
        "fit_seconds_in_epochs": clock.fit_seconds,
        "structures_per_second": {
            "train_only": clock.structures / clock.train_seconds if clock.train_seconds else None,
            "fit": clock.structures / clock.fit_seconds if clock.fit_seconds else None,
        },
        "setup_seconds": fit_seconds - clock.fit_seconds,
        "database_seconds": database_seconds,
        "evaluation_seconds": evaluation_seconds,
        "best_epoch": int(torch.load(best.best_model_path, weights_only=False)["epoch"]),
        "parameters": sum(p.numel() for p in model.parameters()),
        "threads": torch.get_num_threads(),
        "loader_workers": config["loader_workers"],
        "versions": {
            "schnetpack": _version("schnetpack"), "torch": torch.__version__, "pytorch_lightning": pl.__version__,
            "ase": ase.__version__, "python": sys.version.split()[0],
        },
    }
    with open(os.path.join(workdir, "run.json"), "w") as handle:
        json.dump(run, handle, indent=2)
    return 0


def _version(package: str) -> str:
    from importlib.metadata import version

    return version(package)


def predict_test(model, loader) -> tuple[Any, list, Any]:
    """Energies ``[n]`` (kcal/mol, offsets added back), forces (``[n_atom, 3]`` each,
    kcal/mol/Angstrom) and the dataset index of each structure, in the loader's order."""
    import numpy as np
    import schnetpack.properties as props

    model.eval()
    energies, forces, order = [], [], []
    for batch in loader:
        results = model(batch)  # autograd stays on: forces are -dE/dR
        sizes = batch[props.n_atoms].tolist()
        energies.append(results["energy"].detach().numpy())
        forces.extend(np.split(results["forces"].detach().numpy().astype(np.float64), np.cumsum(sizes)[:-1]))
        order.append(batch[props.idx].numpy())
    return np.concatenate(energies), forces, np.concatenate(order)


def schnetpack_parts() -> SimpleNamespace:
    """The SchNetPack side's own transform, output module and callback (``EnergyPerAtom``,
    ``PerAtomEnergyOutput``, ``TrainingClock``): subclasses of SchNetPack's, torch's and
    Lightning's classes, so defined only in SchNetPack's virtualenv."""
    import pytorch_lightning as pl
    import schnetpack.properties as props
    import torch
    from schnetpack.transform import Transform

    class EnergyPerAtom(Transform):
        """Data transform: the target ``energy_per_atom`` = energy / atoms (after the offsets)."""

        is_preprocessor = True
        is_postprocessor = False

        def forward(self, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
            inputs["energy_per_atom"] = inputs["energy"] / inputs[props.n_atoms]
            return inputs

    class PerAtomEnergyOutput(torch.nn.Module):
        """Output module: ``energy_per_atom [B]`` = the structure's energy / its atoms, so that
        the loss weighs clusters of every size alike, as ours does (`mpnn.forces`)."""

        def __init__(self):
            super().__init__()
            self.model_outputs = ["energy_per_atom"]

        def forward(self, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
            inputs["energy_per_atom"] = inputs["energy"] / inputs[props.n_atoms]
            return inputs

    class TrainingClock(pl.Callback):
        """Seconds of the training epochs with and without their validation, structures
        trained, epochs; stops training after the epoch in which `budget` seconds of the
        epochs have passed (as ``mpnn-train --max-train-seconds``)."""

        def __init__(self, budget: float):
            self.budget = budget
            self.train_seconds = self.fit_seconds = 0.0
            self.structures = self.epochs = 0
            self._fit_start = self._mark = 0.0

        def on_train_start(self, trainer, module):
            self._fit_start = time.perf_counter()

        def on_train_epoch_start(self, trainer, module):
            self._mark = time.perf_counter()

        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
            self.structures += len(batch[props.n_atoms])

        def on_validation_start(self, trainer, module):
            self.train_seconds += time.perf_counter() - self._mark

        def on_validation_end(self, trainer, module):
            self._mark = time.perf_counter()

        def on_train_epoch_end(self, trainer, module):
            now = time.perf_counter()
            self.train_seconds += now - self._mark
            self._mark = now
            self.epochs += 1
            self.fit_seconds = now - self._fit_start
            if self.fit_seconds >= self.budget:
                trainer.should_stop = True

    return SimpleNamespace(EnergyPerAtom=EnergyPerAtom, PerAtomEnergyOutput=PerAtomEnergyOutput,
                           TrainingClock=TrainingClock)


# ---- our side -------------------------------------------------------------------------------


def run_ours(options: SideBySideOptions) -> dict[str, Any]:
    """Prepare the files (``mpnn-prep-water``) and train ``schnet`` on 2 Horovod ranks
    (``mpnn-train``); the commands, their seconds and the run's ``metrics.json``."""
    from mpnn.graph_format.manifest import Manifest

    tools = os.path.dirname(sys.executable)
    records, run_dir = os.path.join(options.workdir, "records"), os.path.join(options.workdir, "run")
    for path in (records, run_dir):
        if os.path.exists(path):
            shutil.rmtree(path)
    prepare = [
        os.path.join(tools, "mpnn-prep-water"), options.train, "-o", records, "--cutoff", str(options.cutoff),
        "--test-inputs", options.test, "--fractions", str(1.0 - options.valid_fraction), str(options.valid_fraction),
        "0", "--seed", str(options.seed), "--workers", "2", "--quiet",
    ]
    train = [
        os.path.join(tools, "horovodrun"), "-np", "2", "-H", "localhost:2", "--gloo",
        os.path.join(tools, "mpnn-train"), "--data", records, "--run-dir", run_dir, "--family", "schnet",
        "--width", str(options.width), "--message-steps", str(options.interactions), "--rbf-bins", str(options.rbf),
        "--readout-hidden", str(options.readout_hidden), "--force-weight", str(options.force_weight),
        "--batch-size", str(options.batch_size), "--batch-strategy", "gbs", "--learning-rate",
        str(options.learning_rate), "--warmup-epochs", "0", "--lr-decay", "plateau", "--loss", "mse",
        "--epochs", str(options.max_epochs), "--max-train-seconds", str(options.budget_seconds),
        "--seed", str(options.seed), "--verbose", "2",
    ]
    seconds = {}
    for name, command in (("prepare", prepare), ("train", train)):
        log.info("our side: %s", " ".join(command))
        started = time.perf_counter()
        if subprocess.run(command, cwd=REPO, timeout=options.budget_seconds * 3 + 3600).returncode != 0:
            raise BenchmarkInputError(f"our side failed at: {' '.join(command)} (its output above)")
        seconds[name] = time.perf_counter() - started
    with open(os.path.join(run_dir, "metrics.json")) as handle:
        metrics = json.load(handle)
    train_records = Manifest.load(records).split_records("train")
    epochs, train_seconds = metrics.get("epochs_run"), metrics.get("train_seconds")
    fit_speed = epochs * train_records / train_seconds if epochs and train_seconds else None
    train_only = metrics.get("train_seconds_without_validation")  # if the run reports it
    return {
        "commands": {"prepare": prepare, "train": train},
        "command_seconds": seconds,
        "epochs_run": epochs,
        "train_structures": train_records,
        "fit_seconds_in_epochs": train_seconds,
        "structures_per_second": {
            "fit": fit_speed,
            "train_only": epochs * train_records / train_only if epochs and train_only else None,
        },
        "run_dir": run_dir,
        "test": metrics.get("test", {}),
        "metrics": {key: value for key, value in metrics.items() if key not in ("test", "valid", "train")},
    }


# ---- report ---------------------------------------------------------------------------------


def lscpu() -> str:
    """``lscpu``'s description of this machine (empty where it is missing)."""
    try:
        return subprocess.run(["lscpu"], capture_output=True, text=True, timeout=30).stdout
    except OSError:
        return ""


def _get(side: dict | None, *keys: str) -> float | None:
    """``side[k1][k2]...``, None where any is missing (each side's metrics may lack some)."""
    value: Any = side
    for key in keys:
        if not isinstance(value, dict) or key not in value:
            return None
        value = value[key]
    return value if isinstance(value, (int, float)) else None


ROWS = (  # (label, path in a side's results, lower is better)
    ("epochs", ("epochs_run",), False),
    ("seconds of training epochs", ("fit_seconds_in_epochs",), False),
    ("structures/s, validation included", ("structures_per_second", "fit"), False),
    ("structures/s, training only", ("structures_per_second", "train_only"), False),
    ("energy MAE, kcal/mol", ("test", "mae"), True),
    ("energy MAE per water, kcal/mol", ("test", "mae_per_water"), True),
    ("force MAE, kcal/mol/A", ("test", "forces", "mae"), True),
    ("force RMSE, kcal/mol/A", ("test", "forces", "rmse"), True),
    *((f"force MAE {axis}", ("test", "forces", "by_component", axis, "mae"), True) for axis in "xyz"),
    *((f"force RMSE {axis}", ("test", "forces", "by_component", axis, "rmse"), True) for axis in "xyz"),
)


def ratios(ours: dict | None, theirs: dict | None) -> dict[str, float | None]:
    """ours / SchNetPack of every row of `ROWS` (speeds: > 1 is ours faster; errors: < 1 is
    ours more accurate), None where a side lacks the figure."""
    result = {}
    for label, path, _ in ROWS:
        a, b = _get(ours, *path), _get(theirs, *path)
        result[label] = a / b if a is not None and b else None
    return result


def format_report(report: dict[str, Any]) -> str:
    """The side-by-side tables: headline figures, then energy MAE per water by cluster size."""
    from mpnn.bench.common import format_table

    ours, theirs = report.get("ours"), report.get("schnetpack")

    def cell(value: float | None) -> str:
        return "n/a" if value is None else f"{value:.4g}"

    rows = [[label, cell(_get(ours, *path)), cell(_get(theirs, *path)), cell(report["ratios"][label])]
            for label, path, _ in ROWS]
    lines = [format_table(["", "ours", "SchNetPack", "ours/SchNetPack"], rows)]
    sizes = sorted({int(size) for side in (ours, theirs) if side for size in side.get("test", {}).get("by_group", {})})
    if sizes:
        size_rows = []
        for size in sizes:
            a = _get(ours, "test", "by_group", str(size), "mae_per_water")
            b = _get(theirs, "test", "by_group", str(size), "mae_per_water")
            size_rows.append([size, cell(a), cell(b), cell(a / b if a is not None and b else None)])
        lines += ["", "energy MAE per water (kcal/mol) by cluster size",
                  format_table(["waters", "ours", "SchNetPack", "ours/SchNetPack"], size_rows)]
    return "\n".join(lines)


def run_side_by_side(options: SideBySideOptions) -> dict[str, Any]:
    """Run the sides `options.only` names; the report (also written to `options.out`)."""
    from mpnn.bench.common import environment, write_report

    for path in (options.train, options.test):
        if not os.path.isfile(path):
            raise BenchmarkInputError(f"{path}: no such file (an extended XYZ file of make_water_set.py)")
    os.makedirs(options.workdir, exist_ok=True)
    report: dict[str, Any] = {"benchmark": "schnetpack_side_by_side", **environment(), "lscpu": lscpu(),
                              "options": dataclasses.asdict(options)}
    if options.only in ("schnetpack", "both"):
        report["schnetpack"] = run_schnetpack(options)
    if options.only in ("ours", "both"):
        report["ours"] = run_ours(options)
    report["ratios"] = ratios(report.get("ours"), report.get("schnetpack"))
    write_report(options.out, report)
    return report


def build_parser() -> argparse.ArgumentParser:
    defaults = SideBySideOptions(train="", test="")
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add = parser.add_argument
    add("--train", required=True, help="training structures: an extended XYZ file of make_water_set.py")
    add("--test", required=True, help="test structures: such a file made with another seed")
    add("--budget-seconds", type=float, default=defaults.budget_seconds,
        help="training wall-clock budget of each side, seconds (default %(default)s)")
    add("--cutoff", type=float, default=defaults.cutoff, help="pair cutoff, Angstrom (default %(default)s)")
    add("--width", type=int, default=defaults.width, help="features per atom, n_atom_basis (default %(default)s)")
    add("--interactions", type=int, default=defaults.interactions, help="interaction blocks (default %(default)s)")
    add("--rbf", type=int, default=defaults.rbf, help="Gaussians of the radial basis (default %(default)s)")
    add("--readout-hidden", type=int, default=defaults.readout_hidden,
        help="hidden units of the per-atom energy MLP (default %(default)s)")
    add("--batch-size", type=int, default=defaults.batch_size, help="structures per step (default %(default)s)")
    add("--force-weight", type=float, default=defaults.force_weight,
        help="weight of the force term of the loss (default %(default)s)")
    add("--learning-rate", type=float, default=defaults.learning_rate, help="Adam (default %(default)s)")
    add("--valid-fraction", type=float, default=defaults.valid_fraction,
        help="share of the train file for validation (default %(default)s)")
    add("--max-epochs", type=int, default=defaults.max_epochs, help="epochs at most (default %(default)s)")
    add("--seed", type=int, default=defaults.seed, help="seed (default %(default)s)")
    add("--threads", type=int, default=defaults.threads, help="SchNetPack's torch threads (default %(default)s)")
    add("--loader-workers", type=int, default=defaults.loader_workers,
        help="SchNetPack's data loader processes (default %(default)s)")
    add("--only", choices=["schnetpack", "ours", "both"], default=defaults.only, help="sides to run")
    add("--out", help="report JSON (default benchmarks/results/<date>-geometry/schnetpack_side_by_side.json)")
    add("--workdir", help="scratch directory (default <tmp>/schnetpack_side_by_side)")
    add("--venv", default=defaults.venv, help="SchNetPack's virtualenv, made if missing (default %(default)s)")
    return parser


def options_from_args(args: argparse.Namespace) -> SideBySideOptions:
    """The options of parsed flags, with the default report path and scratch directory.

    Raises:
        BenchmarkInputError: a value out of range (naming its flag).
    """
    import tempfile

    for flag in ("budget_seconds", "cutoff", "width", "interactions", "rbf", "readout_hidden", "batch_size",
                 "learning_rate", "max_epochs", "threads"):
        if getattr(args, flag) <= 0:
            raise BenchmarkInputError(f"--{flag.replace('_', '-')} must be positive, got {getattr(args, flag)}")
    if args.force_weight < 0 or args.loader_workers < 0 or not 0 < args.valid_fraction < 1:
        raise BenchmarkInputError("--force-weight and --loader-workers must be >= 0, --valid-fraction in (0, 1)")
    date = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d")
    out = args.out or os.path.join(REPO, "benchmarks", "results", f"{date}-geometry", "schnetpack_side_by_side.json")
    workdir = args.workdir or os.path.join(tempfile.gettempdir(), "schnetpack_side_by_side")
    values = {k: v for k, v in vars(args).items() if k not in ("train", "test", "venv", "out", "workdir")}
    # Absolute: the SchNetPack process runs in its own directory.
    paths = {name: os.path.abspath(path) for name, path in
             (("train", args.train), ("test", args.test), ("venv", args.venv), ("out", out), ("workdir", workdir))}
    return SideBySideOptions(**values, **paths)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == [WORKER_FLAG]:  # in SchNetPack's virtualenv, started by run_schnetpack
        return schnetpack_worker(argv[1])
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    sys.path.insert(0, REPO)
    try:
        options = options_from_args(build_parser().parse_args(argv))
        report = run_side_by_side(options)
    except BenchmarkInputError as exc:
        log.error("%s", exc)
        return 1
    print(format_report(report))
    print(f"report: {options.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
