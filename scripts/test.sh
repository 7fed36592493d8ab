#!/usr/bin/env bash
# Runs the default test suite (everything not marked slow): sets up .venv if needed.
# Pass `-m slow` to run the long reproductions instead.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/venv.sh"
cd "$ROOT"
python -m pytest "$@"
