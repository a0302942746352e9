"""``python -m ecgdx`` runs the command-line interface."""

import sys

from ecgdx.cli import main

sys.exit(main())
