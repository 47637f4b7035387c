#!/usr/bin/env bash
# Set up betlake on a fresh machine: a virtualenv in .venv with the project and its tools.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null || PYTHON=python3
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
# native/: the batch path of validation, in Rust (maturin from PyPI, pyo3 from crates.io)
command -v cargo >/dev/null || { echo "setup: Rust's cargo is needed to build native/ (rustup.rs)" >&2; exit 1; }
.venv/bin/python -m pip install --quiet ./native
.venv/bin/python -m pip install --quiet --editable ".[dev]"
bash scripts/install_prism.sh >/dev/null  # the Beam runner of the stream, built from Go modules
# NATS JetStream (BETLAKE_SOURCE=nats, betlake local start nats): Debian's nats-server
if ! command -v nats-server >/dev/null && [ ! -x /usr/sbin/nats-server ]; then
  if [ "$(id -u)" = 0 ]; then
    { apt-get install -y -qq nats-server || { apt-get update -qq && apt-get install -y -qq nats-server; }; } >/dev/null
  else
    echo "note: nats-server is missing (apt-get install nats-server); the NATS source needs it" >&2
  fi
fi
# the browser tests drive Debian's chromium (Playwright's own browser download cannot work here)
if [ ! -x /usr/bin/chromium ]; then
    apt-get install -y -qq chromium >/dev/null 2>&1 ||
        { apt-get update -qq && apt-get install -y -qq chromium >/dev/null; }
fi
echo "betlake installed in $(pwd)/.venv"
