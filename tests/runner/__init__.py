"""Tests of trainerkit/runner/ (the layout of tests mirrors the package)."""
