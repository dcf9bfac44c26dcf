"""Tests of trainerkit/trainers/: LOCAL here, the packaged backends in subfolders."""
