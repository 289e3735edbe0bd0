"""``python -m pgqueue_lab`` runs the command line (the demo by default)."""

import sys

from .tools.cli import main

sys.exit(main())
