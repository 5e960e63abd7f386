#!/usr/bin/env bash
# Rebuild the vendored CodeMirror 6 bundle and KaTeX (bundle, stylesheet, fonts), and copy the chart
# renderers drawn in output frames (plotly.js, vega + vega-lite + vega-embed, BokehJS, Leaflet with
# what folium's maps load), from the pinned npm packages (package-lock.json).
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
# Chart renderers and map libraries, as the browser builds their projects publish (loaded as classic
# scripts in output frames, notebooks_app/frames.py). Their versions match the Python packages in
# requirements.txt: plotly.js as plotly.py bundles it, BokehJS exactly bokeh's version.
vendor=static/notebooks/vendor
rm -rf "$vendor"/{plotly,vega,bokeh,leaflet,jquery,bootstrap,leaflet.awesome-markers}
mkdir -p "$vendor"/{plotly,vega,bokeh,leaflet,jquery,bootstrap,leaflet.awesome-markers}
cp node_modules/plotly.js-dist-min/plotly.min.js node_modules/plotly.js-dist-min/LICENSE "$vendor/plotly/"
cp node_modules/vega/build/vega.min.js node_modules/vega-lite/build/vega-lite.min.js node_modules/vega-embed/build/vega-embed.min.js "$vendor/vega/"
cp node_modules/vega/LICENSE "$vendor/vega/LICENSE"
for part in "" -gl -widgets -tables -api; do cp "node_modules/@bokeh/bokehjs/build/js/bokeh$part.min.js" "$vendor/bokeh/"; done
cp node_modules/@bokeh/bokehjs/LICENSE "$vendor/bokeh/"
cp -r node_modules/leaflet/dist/leaflet.js node_modules/leaflet/dist/leaflet.css node_modules/leaflet/dist/images node_modules/leaflet/LICENSE "$vendor/leaflet/"
cp node_modules/jquery/dist/jquery.min.js node_modules/jquery/LICENSE.txt "$vendor/jquery/"
cp node_modules/bootstrap/dist/js/bootstrap.bundle.min.js node_modules/bootstrap/dist/css/bootstrap.min.css node_modules/bootstrap/LICENSE "$vendor/bootstrap/"
cp -r node_modules/leaflet.awesome-markers/dist/leaflet.awesome-markers.js node_modules/leaflet.awesome-markers/dist/leaflet.awesome-markers.css node_modules/leaflet.awesome-markers/dist/images "$vendor/leaflet.awesome-markers/"
# Source-map comments name files we do not ship: dropped, so collectstatic does not look for them.
sed -i -E 's@^//# sourceMappingURL=.*$@@; s@/\*# sourceMappingURL=[^*]*\*/@@' "$vendor"/{plotly,vega,bokeh,leaflet,jquery,bootstrap}/*.{js,css} 2>/dev/null || true
echo "==> $(wc -c < static/notebooks/vendor/codemirror.bundle.js) bytes in static/notebooks/vendor/codemirror.bundle.js"
