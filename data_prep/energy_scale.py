"""Is a water data set's energy scale plausible in its stated unit? (eV data read as kcal/mol.)

Energies are converted to kcal/mol with the factor of ``--energy-unit``; a wrong unit goes
through silently and the model learns numbers 23 times too small or too large. What makes a
scale plausible is the energy *per water molecule*, averaged over the set (one distorted
cluster may be far off; a whole set is not). Water-cluster energies come in three kinds,
each with a narrow range per water (kcal/mol; 1 Hartree = 627.5 kcal/mol, 1 eV = 23.06
kcal/mol):

- **binding / interaction energies** (relative to isolated waters, as in the HydroNet and
  tutorial sets): the dimer -2.5 per water (-5.0 for the pair), the hexamer about -7.6,
  large clusters -10 to -11, ice's cohesive energy -11.3; distorted geometries are less
  bound. Plausible: `BINDING` = -16 to -0.5.
- **all-electron total energies** (Gaussian, ORCA, Psi4, ...): one water is -76.0 (HF) to
  -76.45 (CCSD(T)/CBS) Hartree, -47,700 to -47,970; binding adds at most ~ -16. Plausible:
  `ALL_ELECTRON_TOTAL` = -48,300 to -47,500 (-76.97 to -75.69 Hartree).
- **pseudopotential / PAW total energies** (VASP, Quantum ESPRESSO, GPAW: relative to the
  code's atomic references): PBE gives about -14.2 eV per water (-328), other functionals
  -12.5 to -16 eV. Plausible: `PSEUDOPOTENTIAL_TOTAL` = -370 to -290.

eV data read as kcal/mol land outside all three (binding -0.02 to -0.7, all-electron total
about -2,080) and so do kcal/mol data read as eV (binding -58 to -370 overlaps only the
pseudopotential range at its edge; totals about -1.1 million). One mistake this cannot see:
pseudopotential totals in eV (-14.2) read as kcal/mol look like a binding energy.

A set outside every range gets a warning (never an error: a set of relative conformer
energies near 0 is legitimate) with the numbers, the ranges, and the ``--energy-unit`` that
would make it plausible, if one does.
"""

from __future__ import annotations

from typing import Mapping

from data_prep.records import PartSummary

# Plausible mean energy per water molecule, kcal/mol: (name, low, high); see the docstring.
BINDING = ("binding energies", -16.0, -0.5)
ALL_ELECTRON_TOTAL = ("all-electron total energies", -48_300.0, -47_500.0)
PSEUDOPOTENTIAL_TOTAL = ("pseudopotential total energies", -370.0, -290.0)
PLAUSIBLE = (BINDING, ALL_ELECTRON_TOTAL, PSEUDOPOTENTIAL_TOTAL)
ATOMS_PER_WATER = 3


def kind_of(per_water: float) -> str | None:
    """The kind of energy (a `PLAUSIBLE` name) whose range holds `per_water` (kcal/mol per
    water), or None."""
    return next((name for name, low, high in PLAUSIBLE if low <= per_water <= high), None)


def energy_scale_warning(
    per_water: tuple[float, float, float], energy_unit: str, kcal_per_mol_per: Mapping[str, float]
) -> str | None:
    """The warning for a set whose mean energy per water is implausible, or None.

    Args:
        per_water: (mean, min, max) energy per water molecule over the set, kcal/mol (as
            converted from `energy_unit`).
        energy_unit: the unit the inputs were read in (``--energy-unit``).
        kcal_per_mol_per: kcal/mol per unit, for every unit ``--energy-unit`` takes.
    """
    mean, low, high = per_water
    if kind_of(mean) is not None:
        return None
    ranges = "; ".join(f"{name} {lo:,.1f} to {hi:,.1f}" for name, lo, hi in PLAUSIBLE)
    message = (
        f"energies average {mean:,.2f} kcal/mol per water (min {low:,.2f}, max {high:,.2f}) read with "
        f"--energy-unit {energy_unit}, outside every plausible range per water ({ranges})"
    )
    in_file_unit = mean / kcal_per_mol_per[energy_unit]
    for unit, factor in kcal_per_mol_per.items():
        kind = kind_of(in_file_unit * factor) if unit != energy_unit else None
        if kind is not None:
            return f"{message}: are the inputs in {unit}? With --energy-unit {unit} they average " \
                f"{in_file_unit * factor:,.2f} kcal/mol per water ({kind})"
    return f"{message}: check --energy-unit"


def check_water_energies(summary: PartSummary, energy_unit: str, kcal_per_mol_per: Mapping[str, float]) -> list[str]:
    """`data_prep.records.DatasetSpec.check` of water clusters: the warning of
    `energy_scale_warning`, if any, from the summary's energy per atom (3 atoms a water)."""
    per_atom = summary.per_atom
    if not per_atom.count:
        return []
    per_water = tuple(ATOMS_PER_WATER * v for v in (per_atom.mean, per_atom.minimum, per_atom.maximum))
    warning = energy_scale_warning(per_water, energy_unit, kcal_per_mol_per)
    return [warning] if warning else []
