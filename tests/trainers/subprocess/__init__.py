"""Tests of trainerkit/trainers/subprocess/ (the layout of tests mirrors the package)."""
