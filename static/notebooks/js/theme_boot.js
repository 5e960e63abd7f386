// Runs before the first paint (a classic script in <head>, templates/base.html): a signed-out page
// takes the theme this browser remembers; a signed-in one mirrors its account's theme here, so the
// login page after logging out looks the same. theme.js does the rest (docs/frontend.md, "Themes").
(function () {
  var root = document.documentElement;
  try {
    if (root.dataset.themeStore === "local") {
      var saved = localStorage.getItem("theme");
      if (saved === "light" || saved === "dark" || saved === "system") root.dataset.theme = saved;
    } else {
      localStorage.setItem("theme", root.dataset.theme);
    }
  } catch (error) {
    // Storage refused (private mode, policy): the server's value stands.
  }
})();
