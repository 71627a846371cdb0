"""`MPNNCalculator`: a trained model as an ASE calculator; energy and forces from a model
that sees geometry, energy only from a topology model.

    from ase.io import read
    from mpnn.ase import MPNNCalculator

    atoms = read("data/samples/water/minima/w10_lowest.xyz")
    atoms.calc = MPNNCalculator("runs/demo")  # a run directory or an mpnn-export directory
    atoms.get_potential_energy()  # eV
    atoms.get_forces()  # eV/Angstrom, from a geometry model (mpnn-train --model schnet)

The model's energy (in its training unit, kcal/mol for water clusters) is converted to eV
and its forces to eV/Angstrom, the units ASE expects.

- A geometry model (`mpnn.models.schnet`) gets the structure's atom types, positions and the
  atom pairs within the cutoff it was trained with, rebuilt from the atoms at every call
  by the converter's `data_prep.geometry.geometry_features`; its forces are ``-dE/dR``
  (`mpnn.forces`). It needs no water topology (the model reads none): any structure of its
  elements goes, but one the geometry check refuses (atoms closer than
  `data_prep.geometry.MIN_DISTANCE`, more than `data_prep.geometry.MAX_NEIGHBOURS`
  neighbours, a periodic cell) is a `CalculationFailed` naming the reason. It relaxes
  clusters with `ase.optimize`; with a model trained on waters moved rigidly (the TIP4P
  sets of `mpnn.bench.water_set`), keep the waters rigid (`rigid_waters`).
- A topology model gets the graph ``mpnn-prep-water`` would make (`data_prep.water.water_graph`)
  and gives no forces: the graph's hydrogen bonds switch on and off at hard geometric
  cutoffs, so the predicted energy jumps as atoms move and has no useful gradient. Use it to
  screen or rank structures, not to relax them or run dynamics.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from ase import Atoms
from ase.calculators.calculator import Calculator, CalculationFailed, PropertyNotImplementedError, all_changes
from ase.constraints import FixBondLengths

from data_prep.geometry import GeometryError, geometry_features
from data_prep.water import ATOM_VOCAB, WaterGraphError, water_graph, water_molecules
from mpnn.predict import TrainedModel, load_trained

NO_FORCES = (
    "MPNNCalculator gives energies only: its graph's hydrogen bonds switch on and off at hard cutoffs "
    "(O...O 3.5 Angstrom, 30 degrees), so the energy is not smooth in the positions and has no useful "
    "forces; use it to screen structures, not for relaxation or dynamics"
)
NO_STRESS = "the model's structures are finite clusters, without a cell"


class MPNNCalculator(Calculator):
    """Energy (eV), and forces (eV/Angstrom) from a geometry model, of a water cluster.

    Args:
        model: a run directory of ``mpnn-train`` (or its ``model.keras``), an
            ``mpnn-export`` directory, or a loaded `mpnn.predict.TrainedModel`.
    """

    implemented_properties = ["energy"]  # and "forces" for a geometry model (set per instance)

    def __init__(self, model: str | TrainedModel, **kwargs):
        super().__init__(**kwargs)
        self.model = model if isinstance(model, TrainedModel) else load_trained(model)
        if self.model.has_forces:
            self.implemented_properties = ["energy", "forces"]

    def get_property(self, name: str, atoms: Atoms | None = None, allow_calculation: bool = True):
        if name not in self.implemented_properties:
            raise PropertyNotImplementedError(self._not_implemented([name]))
        return super().get_property(name, atoms, allow_calculation)

    def calculate(
        self, atoms: Atoms | None = None, properties: Sequence[str] = ("energy",), system_changes=all_changes
    ) -> None:
        super().calculate(atoms, properties, system_changes)
        unsupported = [p for p in properties if p not in self.implemented_properties]
        if unsupported:
            raise PropertyNotImplementedError(self._not_implemented(unsupported))
        if self.model.has_forces:
            (energy,), (forces,) = self.model.predict_graphs_with_forces([self._geometry_graph()])
            self.results["energy"] = float(energy) * self.model.ev_per_unit
            self.results["forces"] = forces.astype(np.float64) * self.model.ev_per_unit
            return
        try:
            # The graph needs an energy; it is a placeholder here, never used.
            graph = water_graph(self.atoms, 0.0, "ase")
        except WaterGraphError as exc:
            raise CalculationFailed(f"not a water cluster the model can read: {exc}") from exc
        energy = float(self.model.predict_graphs([graph])[0])
        self.results["energy"] = energy * self.model.ev_per_unit

    def _geometry_graph(self) -> dict[str, np.ndarray]:
        """The record features a geometry model reads of `self.atoms`: atom types, and the
        positions and pairs of `geometry_features`; no bonds (the model reads none).

        Raises:
            CalculationFailed: an element outside the model's vocabulary, or a structure
                the geometry check refuses.
        """
        symbols = self.atoms.get_chemical_symbols()
        unknown = sorted(set(symbols) - set(ATOM_VOCAB))
        if unknown:
            raise CalculationFailed(f"element(s) other than {'/'.join(ATOM_VOCAB)}: {', '.join(unknown)}")
        try:
            geometry = geometry_features(self.atoms, self.model.cutoff)
        except GeometryError as exc:
            raise CalculationFailed(f"a structure the model cannot read: {exc}") from exc
        return {
            "n_atom": np.int64(len(symbols)),
            "n_bond": np.int64(0),
            "atom": np.array([ATOM_VOCAB.index(s) for s in symbols], np.int64),
            "bond": np.zeros(0, np.int64),
            "connectivity": np.zeros((0, 2), np.int64),
            **geometry,
        }

    def _not_implemented(self, names: Sequence[str]) -> str:
        reason = NO_STRESS if self.model.has_forces else NO_FORCES
        return f"{', '.join(names)}: {reason}"


def rigid_waters(atoms: Atoms) -> FixBondLengths:
    """A constraint that keeps every water of the cluster `atoms` rigid: its two O-H and its
    H-H distances fixed (`ase.constraints.FixBondLengths`). For relaxing with a model
    trained on waters moved as rigid bodies, which has not learnt how a water bends or
    stretches::

        atoms.set_constraint(rigid_waters(atoms))
        BFGS(atoms).run(fmax=0.05)

    Raises:
        ValueError: `atoms` is not a water cluster (the reason from `water_graph`).
    """
    try:
        oxygen, first, second = water_molecules(atoms).T
    except WaterGraphError as exc:
        raise ValueError(f"not a water cluster: {exc}") from exc
    pairs = np.concatenate([np.column_stack([oxygen, first]), np.column_stack([oxygen, second]),
                            np.column_stack([first, second])])
    return FixBondLengths(pairs.tolist())
