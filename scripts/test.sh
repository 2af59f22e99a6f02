#!/usr/bin/env bash
# Install, lint, type-check the core, build the docs site, run the test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/ruff check .
# Types of the framework-neutral core ([tool.mypy] in pyproject.toml)
.venv/bin/mypy dip_core
# The docs site (mkdocs.yml, docs/): --strict fails on a broken link, anchor or a page missing from the nav
.venv/bin/mkdocs build --strict --site-dir build/site
.venv/bin/python -m pytest -q
