#!/usr/bin/env bash
# Builds the documentation site (docs/) into docs/_build/html with warnings as errors; sets up .venv if needed
# with the dev and docs extras (autodoc imports every module, so the domain extras are needed too).
# The results tables are rendered from benchmarks/results/*.json by docs/render_results.py at the start of the build.
set -euo pipefail
export FLOWZOO_EXTRAS="${FLOWZOO_EXTRAS:-dev,docs}"
source "$(dirname "${BASH_SOURCE[0]}")/venv.sh"
cd "$ROOT"
python -m sphinx -W --keep-going -j auto -b html docs docs/_build/html "$@"
echo "[flowzoo] documentation: $ROOT/docs/_build/html/index.html"
