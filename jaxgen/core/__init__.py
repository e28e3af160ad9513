"""Shared engine: solvers, training loop, checkpoints, parallelism, metrics. No paper lives here."""
