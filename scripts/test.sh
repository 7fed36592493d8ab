#!/usr/bin/env bash
# Runs the default test suite (everything not marked slow): sets up .venv if needed.
# Pass `-m slow` to run the long reproductions instead.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/venv.sh"
cd "$ROOT"
# The peer-parity tests compare flowzoo with torchcfm and facebookresearch/flow_matching value by value. The
# peers are test tools, not dependencies of flowzoo (flow_matching is CC-BY-NC): they are installed without
# their dependencies, which would pull a CUDA build of torch. FLOWZOO_PEERS=0 skips them (those tests then skip).
if [ "${FLOWZOO_PEERS:-1}" = 1 ] && ! python -c "import torchcfm, flow_matching" 2>/dev/null; then
  echo "[flowzoo] installing the peers for the parity tests: torchcfm 1.0.7, flow_matching 1.0.10 (--no-deps)"
  python -m pip install -q --disable-pip-version-check --no-deps -c "$ROOT/constraints.txt" \
    torchcfm==1.0.7 flow_matching==1.0.10
fi
python -m pytest "$@"
