"""Waiting for a condition in tests: poll with a deadline, never a bare sleep.

The helper is the one the conformance suite ships (trainerkit.testing), so that
trainerkit's own tests and third-party backends' tests wait the same way.
"""

from trainerkit.testing.waiting import wait_until

__all__ = ["wait_until"]
