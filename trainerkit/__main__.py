"""``python -m trainerkit``: the ``trainerkit`` command (see docs/cli.md)."""

import sys

from trainerkit.cli import main

if __name__ == "__main__":
    sys.exit(main())
