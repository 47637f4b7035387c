"""Performance scripts, run from the project root as modules (``python -m benchmarks.NAME``)."""
