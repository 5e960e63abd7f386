# Sourced by scripts/run and scripts/test: create .venv and install pinned requirements once.
# Re-installs only when the requirements files change (a stamp holds their hash).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
REQUIREMENTS="${1:-requirements.txt}"
PYTHON="${PYTHON:-python3}"
if ! command -v "$PYTHON" >/dev/null 2>&1; then
  echo "error: Python 3.11+ is needed ($PYTHON not found)" >&2; exit 1
fi
"$PYTHON" - <<'PY' || { echo "error: Python 3.11 or newer is needed" >&2; exit 1; }
import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)
PY
if [ ! -x .venv/bin/python ]; then
  echo "==> creating virtualenv .venv"
  "$PYTHON" -m venv .venv
fi
stamp=".venv/.requirements-$(basename "$REQUIREMENTS").sha"
want=$(cat requirements*.txt | sha256sum | cut -d' ' -f1)
# requirements-test.txt includes requirements.txt, so its stamp stands for both.
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ] && [ "$(cat .venv/.requirements-requirements-test.txt.sha 2>/dev/null)" != "$want" ]; then
  echo "==> installing $REQUIREMENTS into .venv"
  .venv/bin/python -m pip install --quiet --upgrade pip
  .venv/bin/python -m pip install --quiet -r "$REQUIREMENTS"
  echo "$want" > "$stamp"
fi
