"""Benchmarks and the prepared GPU checks, run from the repository root as modules (`python -m bench.bench_train`)."""
