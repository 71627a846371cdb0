"""``python -m mpnn.design``: the ``mpnn-design`` command."""

import sys

from mpnn.design.search import main

sys.exit(main())
