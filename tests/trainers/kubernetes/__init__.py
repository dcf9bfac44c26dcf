"""Tests of trainerkit/trainers/kubernetes/ (the layout of tests mirrors the package)."""
