#!/usr/bin/env bash
# Install, then show the two backends computing the same network.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/dip backends
.venv/bin/dip crosscheck
