"""``python -m trainerkit.trainers.subprocess``: a SUBPROCESS pool worker (see :mod:`.worker`)."""

import sys

from .worker import main

sys.exit(main())
