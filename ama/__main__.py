"""``python -m ama``: the kit's command line (see :mod:`ama.cli`)."""
import sys

from .cli import main

sys.exit(main())
