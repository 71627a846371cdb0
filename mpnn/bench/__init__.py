"""``mpnn-bench``: benchmarks of the input pipeline and of data preparation.

Sub-commands (``python -m mpnn.cli.bench SUBCOMMAND --help``):

- ``loader``: graphs/s of the project's `tf.data` pipeline over batch sizes and
  parallelism settings (`mpnn.bench.loader`);
- ``prep``: records/s of ``mpnn-prep-water`` or (``--converter pdbbind``) complexes/s
  of ``mpnn-prep-pdbbind`` with 1, 2, ... worker processes (`mpnn.bench.prep`);
- ``train``: graphs/s and atoms/s of training steps over widths, batch sizes and model
  variants, on one rank or several (`mpnn.bench.train`).

Each module's ``run(options)`` (`LoaderBenchOptions`, `PrepBenchOptions`,
`TrainBenchOptions`) returns the report's benchmark-specific part and `format_report` its
table; `mpnn.bench.common.make_report` adds the environment. The command line is
`mpnn.cli.bench`: each sub-command prints the table on stdout and writes the JSON report
(``--output``, default ``bench-<subcommand>.json``), which records the machine, date,
versions and command line. Every figure carries the peak resident memory of the process.

`mpnn.bench.water_set` makes the synthetic water sets (perturbed minima, TIP4P energies and
forces) of ``benchmarks/make_water_set.py``; its workers are spawned processes, so neither
it nor this package imports TensorFlow.
"""
