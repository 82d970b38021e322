"""``python -m segkd ...`` (and ``torchrun -m segkd train ...``) runs the ``segkd`` command line."""

import sys

from segkd.cli import main

sys.exit(main())
