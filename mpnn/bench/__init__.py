"""``mpnn-bench``: benchmarks of the input pipeline and of data preparation.

Sub-commands (``python -m mpnn.bench SUBCOMMAND --help``):

- ``loader``: graphs/s of the project's `tf.data` pipeline over batch sizes and
  parallelism settings (`mpnn.bench.loader`);
- ``prep``: records/s of ``mpnn-prep-water`` or (``--converter pdbbind``) complexes/s
  of ``mpnn-prep-pdbbind`` with 1, 2, ... worker processes (`mpnn.bench.prep`).

Each prints a plain-text table on stdout and writes a JSON report (``--output``, default
``bench-<subcommand>.json``) that records the machine, date, versions and command line
(`mpnn.bench.common`). Every figure carries the peak resident memory of the process.

`mpnn.bench.water_set` makes the synthetic water sets (perturbed minima, TIP4P energies and
forces) of ``benchmarks/make_water_set.py``; its workers are spawned processes, so neither
it nor this package imports TensorFlow.
"""
