"""``python -m kvmlite.serve DEVICE ...``: the arguments of ``kvmlite serve``."""

import sys

from kvmlite.serve import main

sys.exit(main())
