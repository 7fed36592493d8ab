#!/usr/bin/env bash
# Runs the main demo on embedded data: sets up .venv if needed, then `flowzoo demo`.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/venv.sh"
cd "$ROOT"
flowzoo demo "$@"
