"""``python -m agents``: the ``textenv`` command line."""

import sys

from agents.cli import main

sys.exit(main())
