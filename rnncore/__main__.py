"""``python -m rnncore``: the command line (see `rnncore.cli`)."""

import sys

from .cli import main

sys.exit(main())
