// Light, dark or system (docs/frontend.md, "Themes"): `<html data-theme>` holds the choice (the
// server renders it, theme_boot.js restores a signed-out page's), notebook.css holds the palettes.
// This module runs the header's toggle (stored on the account, or in localStorage when signed
// out), tells the page when the resolved scheme changes (`themechange` on document, for what
// cannot use CSS variables, e.g. output frames), and recolours CodeMirror's syntax highlighting.

export const THEMES = ["light", "dark", "system"];
const STORAGE_KEY = "theme";
const darkQuery = matchMedia("(prefers-color-scheme: dark)");
const root = document.documentElement;

/** "light" or "dark": what the page shows now (the explicit choice, or the system's). */
export function resolvedTheme() {
  const theme = root.dataset.theme;
  if (theme === "light" || theme === "dark") return theme;
  return darkQuery.matches ? "dark" : "light";
}

function announce() {
  document.dispatchEvent(new CustomEvent("themechange", { detail: { theme: root.dataset.theme || "system", resolved: resolvedTheme() } }));
}

/** Show `theme` now, remember it in this browser, and on the account when signed in. */
export async function setTheme(theme, form = document.querySelector("form.theme-toggle")) {
  if (!THEMES.includes(theme)) throw new Error(`Unknown theme ${theme}`);
  root.dataset.theme = theme;
  for (const button of form?.querySelectorAll("button[name=theme]") ?? []) button.setAttribute("aria-pressed", String(button.value === theme));
  try {
    localStorage.setItem(STORAGE_KEY, theme);
  } catch {
    // Storage refused: the choice lasts for this page (and on the account when signed in).
  }
  announce();
  if (root.dataset.themeStore !== "account" || !form) return;
  const body = new FormData(form);
  body.set("theme", theme);
  const response = await fetch(form.action, { method: "POST", body, headers: { Accept: "application/json" }, credentials: "same-origin" });
  if (!response.ok) console.warn("notebook: the theme was not saved", response.status);
}

function bindToggle() {
  const form = document.querySelector("form.theme-toggle");
  if (!form || form.dataset.bound) return;
  form.dataset.bound = "true";
  form.addEventListener("submit", (event) => {
    const theme = event.submitter?.value;
    if (!THEMES.includes(theme)) return; // let the form go to the server, which says what is wrong
    event.preventDefault();
    setTheme(theme, form);
  });
}

// CodeMirror's default highlight style (basicSetup) has fixed light-page colours under generated
// class names. Each rule with one of those colours gets an override reading a CSS variable
// (--syn-*, notebook.css), so tokens follow the theme and stay readable in both.
const SYNTAX_VARIABLES = {
  "#770088": "keyword", "#222299": "atom", "#116644": "literal", "#aa1111": "string", "#ee4400": "regexp",
  "#0000ff": "definition", "#3300aa": "local", "#008855": "type", "#116677": "class", "#225566": "special",
  "#0000cc": "property", "#994400": "comment", "#ff0000": "invalid", "#404740": "meta",
};
let syntaxSheet = null;

function hex(color) {
  const match = /^rgb\((\d+), (\d+), (\d+)\)$/.exec(color);
  return match ? `#${match.slice(1).map((part) => Number(part).toString(16).padStart(2, "0")).join("")}` : color;
}

/** Called once editors exist (editor.js): CodeMirror has mounted its highlight rules by then. */
export function themeSyntax() {
  if (syntaxSheet) return;
  const overrides = [];
  for (const sheet of [...document.adoptedStyleSheets, ...document.styleSheets]) {
    let rules;
    try {
      rules = sheet.cssRules;
    } catch {
      continue; // another origin's sheet
    }
    for (const rule of rules) {
      const name = rule.style?.color && SYNTAX_VARIABLES[hex(rule.style.color)];
      if (name && /^\.ͼ[0-9a-z]+$/.test(rule.selectorText)) overrides.push(`.cm-editor ${rule.selectorText} { color: var(--syn-${name}); }`);
    }
  }
  if (!overrides.length) return; // not mounted yet: the next editor tries again
  syntaxSheet = new CSSStyleSheet();
  syntaxSheet.replaceSync(overrides.join("\n"));
  document.adoptedStyleSheets = [...document.adoptedStyleSheets, syntaxSheet];
}

darkQuery.addEventListener("change", () => {
  if ((root.dataset.theme || "system") === "system") announce();
});
bindToggle();
