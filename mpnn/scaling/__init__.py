"""``mpnn-scaling``: the DBS/GBS scaling study of the PDBbind paper, on any prepared data set.

A study trains the same model with 1, 2, 4, ... Horovod ranks, under a constant per-rank
batch (``dbs``) and a constant global batch (``gbs``), for several batch sizes and repeats,
and compares training time and test R^2 / Pearson r with the 1-rank run of the same batch
size. Sub-commands (``mpnn-scaling SUBCOMMAND --help``):

- ``plan``: expand a study (YAML file and/or flags) into runs, written to ``DIR/study.json``
  (`mpnn.scaling.plan`);
- ``run --local``: train the runs one after another with ``horovodrun`` on this machine
  (`mpnn.scaling.local`);
- ``submit --scheduler slurm|pbs``: one batch job per run from the scripts in ``jobs/``
  (`mpnn.scaling.submit`);
- ``collect``: read the run directories into one table (CSV and Markdown) and draw the
  time-gain and metric-loss figures (`mpnn.scaling.collect`, `mpnn.scaling.plots`).
"""
