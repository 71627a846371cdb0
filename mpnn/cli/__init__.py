"""The command-line shells: one module per command, each a thin layer over one library
function (ARCHITECTURE.md, "Layers").

Each module's ``main(argv)`` builds its argparse parser, turns the flags into the library's
options (a frozen dataclass or `mpnn.config.TrainConfig`), calls the library, prints the
summary, and goes through `mpnn.cli.runner.run`, which gives every command the same exit
statuses and one-line messages (`mpnn.errors`). Nothing outside this package imports it;
notebooks, job scripts, benchmarks and tests call the library functions.
"""
