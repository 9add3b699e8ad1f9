"""``python -m kvmlite``: the same as the ``kvmlite`` command."""

import sys

from kvmlite.cli import main

sys.exit(main())
