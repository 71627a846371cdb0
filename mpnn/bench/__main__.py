"""``python -m mpnn.bench``: the command ``mpnn-bench`` (`mpnn.cli.bench`)."""

import sys

from mpnn.cli.bench import main

if __name__ == "__main__":  # not when a spawned process re-imports its parent's main module
    sys.exit(main())
