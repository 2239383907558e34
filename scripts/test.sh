#!/usr/bin/env bash
# Set up (first run only), then run the whole test suite, including parity against torch and
# keyatten 0.3.1. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh >&2
. .venv/bin/activate
python -m pytest -q -p no:cacheprovider runtime_tests "$@"
