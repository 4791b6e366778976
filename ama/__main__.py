"""``python -m ama``: the kit's command line (see :mod:`ama.apps.cli`)."""
import sys

from .apps.cli import main

sys.exit(main())
