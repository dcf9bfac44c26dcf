"""trainerkit's benchmarks: every speed and memory claim, as a ratio against a
baseline measured in the same run. Run ``python -m benchmarks`` from the
repository root; see docs/benchmarks.md."""
