"""Tests of the trainerkit command (trainerkit/cli/)."""
