#!/usr/bin/env bash
# Rebuild the vendored CodeMirror 6 bundle from the pinned npm packages (package-lock.json).
# The bundle is committed, so running the app needs no Node; only changing the editor does.
# Usage: scripts/build_editor.sh     (needs Node 20+ and npm)
set -euo pipefail
cd "$(dirname "$0")/.."
npm ci --no-audit --no-fund
mkdir -p static/notebooks/vendor
npm run --silent build:editor
echo "==> $(wc -c < static/notebooks/vendor/codemirror.bundle.js) bytes in static/notebooks/vendor/codemirror.bundle.js"
