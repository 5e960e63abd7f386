#!/usr/bin/env bash
# Rebuild the vendored CodeMirror 6 bundle and KaTeX (bundle, stylesheet, fonts) from the pinned npm packages (package-lock.json).
# The bundle is committed, so running the app needs no Node; only changing the editor does.
# Usage: scripts/build_editor.sh     (needs Node 20+ and npm)
set -euo pipefail
cd "$(dirname "$0")/.."
npm ci --no-audit --no-fund
mkdir -p static/notebooks/vendor
npm run --silent build:editor
npm run --silent build:katex
# KaTeX's stylesheet and fonts, for markdown math: woff2 only (every browser the page supports
# reads it), so the stylesheet's woff/ttf fallbacks are dropped with the files they name.
rm -rf static/notebooks/vendor/katex
mkdir -p static/notebooks/vendor/katex/fonts
cp node_modules/katex/dist/fonts/*.woff2 static/notebooks/vendor/katex/fonts/
sed -E 's/,url\(fonts\/[^)]+\.(woff|ttf)\) format\("(woff|truetype)"\)//g' node_modules/katex/dist/katex.min.css > static/notebooks/vendor/katex/katex.min.css
echo "==> $(wc -c < static/notebooks/vendor/codemirror.bundle.js) bytes in static/notebooks/vendor/codemirror.bundle.js"
