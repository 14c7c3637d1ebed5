# Sourced by scripts/serve and scripts/test: make .venv with the first Python >= 3.11 found.
cd "$(dirname "${BASH_SOURCE[0]}")/.."
if [ ! -x .venv/bin/python ]; then
  for py in "${PYTHON:-}" python3.13 python3.12 python3.11 python3; do
    [ -n "$py" ] && command -v "$py" >/dev/null 2>&1 || continue
    "$py" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null || continue
    if "$py" -m venv .venv; then break; fi
    echo "'$py -m venv' failed. On Debian/Ubuntu: sudo apt-get install python3-venv" >&2
    exit 1
  done
fi
if [ ! -x .venv/bin/python ]; then
  echo "comet-relay needs Python 3.11 or newer (set PYTHON=/path/to/python3.11)." >&2
  exit 1
fi
