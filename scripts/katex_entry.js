// Entry point of the vendored KaTeX bundle (static/notebooks/vendor/katex.bundle.js): markdown
// cells' math (js/markdown_view.js). Its stylesheet and fonts are copied to vendor/katex/ by
// scripts/build_editor.sh; rebuild both with that script.
export { default as katex } from "katex";
