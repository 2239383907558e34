#!/usr/bin/env bash
# The main job: set up (first run only), then extract keywords with the default bundles.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh >&2
. .venv/bin/activate
keyatten-lite extract "自然语言处理是人工智能的重要方向"
keyatten-lite extract "Graph neural networks learn representations of nodes from the structure of graph data."
