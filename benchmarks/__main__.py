"""``python -m benchmarks`` (see benchmarks/runner.py and docs/benchmarks.md).

Deliberately empty at import time: a ``spawn`` child re-imports the main
module, and the bare spawn baseline must not pay for the harness.
"""

if __name__ == "__main__":
    import sys

    from benchmarks.runner import main

    sys.exit(main())
