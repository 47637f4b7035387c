#!/usr/bin/env bash
# Set up, lint, and run every test (unit and integration: real Delta tables, a real Dagster
# instance, a real Kafka broker that the tests fetch and start themselves).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/lint-imports  # the floors of pyproject.toml [tool.importlinter]: no upward import
# Two test processes (each with its own broker and servers): the stream's fault and live tests
# spend minutes waiting on paced producers and drains, so the other tests run beside them.
.venv/bin/python -m pytest --numprocesses 2 --dist worksteal "$@"
