#!/usr/bin/env bash
# Creates (once) and reuses the virtual environment at .venv in the checkout, installing
# flowzoo in editable mode with the extras named in $FLOWZOO_EXTRAS (default: dev).
# Sourced by scripts/demo.sh and scripts/test.sh; safe to run again (a stamp file records
# what was installed, so an unchanged checkout installs nothing).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
EXTRAS="${FLOWZOO_EXTRAS:-dev}"
PYTHON_BIN="${PYTHON:-python3}"

if [ ! -x "$VENV/bin/python" ]; then
  echo "[flowzoo] creating virtual environment at $VENV"
  "$PYTHON_BIN" -m venv "$VENV"
fi

# open3d (the three_d extra, part of dev) loads libusb-1.0 at import; install it from apt where we may (CI runs
# as root), otherwise say how.
ensure_libusb() {
  case ",$EXTRAS," in *,dev,*|*,all,*|*,three_d,*) ;; *) return 0 ;; esac
  if ldconfig -p 2>/dev/null | grep -q 'libusb-1.0.so.0'; then return 0; fi
  if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    echo "[flowzoo] installing libusb-1.0-0 (apt) for open3d"
    apt-get install -y -q libusb-1.0-0 >/dev/null 2>&1 \
      || { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q libusb-1.0-0 >/dev/null 2>&1; } \
      || echo "[flowzoo] warning: could not install libusb-1.0-0; 'import open3d' will fail (flowzoo.three_d falls back to numpy I/O)"
  else
    echo "[flowzoo] note: open3d needs libusb-1.0-0: run 'sudo apt-get install -y libusb-1.0-0'"
  fi
}

# Reinstall only when pyproject.toml, the constraints or the extras changed.
STAMP="$VENV/.flowzoo-installed"
WANT="$(cat "$ROOT/pyproject.toml" "$ROOT/setup.py" "$ROOT/constraints.txt" | sha256sum | cut -d' ' -f1) $EXTRAS"
if [ ! -f "$STAMP" ] || [ "$(cat "$STAMP")" != "$WANT" ]; then
  echo "[flowzoo] installing flowzoo[$EXTRAS] into $VENV (torch pinned to the CPU build by constraints.txt)"
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check --upgrade pip >/dev/null 2>&1 || true
  ensure_libusb
  # torch first, from the pin, so that nothing later can resolve a CUDA build.
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check -c "$ROOT/constraints.txt" "torch==2.13.0"
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check -c "$ROOT/constraints.txt" -e "$ROOT[$EXTRAS]"
  echo "$WANT" > "$STAMP"
fi
export PATH="$VENV/bin:$PATH"
