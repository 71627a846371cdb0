"""`MPNNCalculator`: a trained model as an ASE calculator (energy only).

    from ase.io import read
    from mpnn.ase import MPNNCalculator

    atoms = read("data/samples/water/minima/w10_lowest.xyz")
    atoms.calc = MPNNCalculator("runs/demo")  # a run directory or an mpnn-export directory
    atoms.get_potential_energy()  # eV

The structure becomes a graph exactly as ``mpnn-prep-water`` would make it
(`data_prep.water.water_graph`), and the model's energy (in its training unit, kcal/mol
for water clusters) is converted to eV, the unit ASE expects. There are no forces: the
graph's hydrogen bonds switch on and off at hard geometric cutoffs, so the predicted
energy jumps as atoms move and has no useful gradient. Use it to screen or rank
structures, not to relax them or run dynamics.
"""

from __future__ import annotations

from typing import Sequence

from ase import Atoms
from ase.calculators.calculator import Calculator, CalculationFailed, PropertyNotImplementedError, all_changes

from data_prep.water import WaterGraphError, water_graph
from mpnn.predict import TrainedModel, load_trained

NO_FORCES = (
    "MPNNCalculator gives energies only: its graph's hydrogen bonds switch on and off at hard cutoffs "
    "(O...O 3.5 Angstrom, 30 degrees), so the energy is not smooth in the positions and has no useful "
    "forces; use it to screen structures, not for relaxation or dynamics"
)


class MPNNCalculator(Calculator):
    """Energy (eV) of a water cluster from a trained MPNN.

    Args:
        model: a run directory of ``mpnn-train`` (or its ``model.keras``), an
            ``mpnn-export`` directory, or a loaded `mpnn.predict.TrainedModel`.
    """

    implemented_properties = ["energy"]

    def __init__(self, model: str | TrainedModel, **kwargs):
        super().__init__(**kwargs)
        self.model = model if isinstance(model, TrainedModel) else load_trained(model)

    def get_property(self, name: str, atoms: Atoms | None = None, allow_calculation: bool = True):
        if name not in self.implemented_properties:
            raise PropertyNotImplementedError(f"{name}: {NO_FORCES}")
        return super().get_property(name, atoms, allow_calculation)

    def calculate(
        self, atoms: Atoms | None = None, properties: Sequence[str] = ("energy",), system_changes=all_changes
    ) -> None:
        super().calculate(atoms, properties, system_changes)
        unsupported = [p for p in properties if p not in self.implemented_properties]
        if unsupported:
            raise PropertyNotImplementedError(f"{', '.join(unsupported)}: {NO_FORCES}")
        try:
            # The graph needs an energy; it is a placeholder here, never used.
            graph = water_graph(self.atoms, 0.0, "ase")
        except WaterGraphError as exc:
            raise CalculationFailed(f"not a water cluster the model can read: {exc}") from exc
        energy = float(self.model.predict_graphs([graph])[0])
        self.results["energy"] = energy * self.model.ev_per_unit
