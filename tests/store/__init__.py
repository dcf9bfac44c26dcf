"""Tests of trainerkit/store/ (the layout of tests mirrors the package)."""
