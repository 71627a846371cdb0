"""``python -m mpnn.scaling``: the command ``mpnn-scaling`` (`mpnn.cli.scaling`)."""

import sys

from mpnn.cli.scaling import main

if __name__ == "__main__":  # not when a spawned process re-imports its parent's main module
    sys.exit(main())
