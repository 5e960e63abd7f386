"""Static files storage: WhiteNoise's compressed, content-hashed copies of static/, with the
page's ES module imports rewritten to the hashed names. Used by `collectstatic` and `{% static %}`."""
from whitenoise.storage import CompressedManifestStaticFilesStorage


class StaticFilesStorage(CompressedManifestStaticFilesStorage):
    # The page's scripts are ES modules that import each other by relative path
    # (static/notebooks/js/*.js). Django rewrites `import … from "./x.js"` to the hashed name
    # only when asked; without it the hashed notebook.js would load unhashed modules, which are
    # not cached for long and could mix two releases in one page.
    support_js_module_import_aggregation = True

    def url_converter(self, name, hashed_files, template=None):
        # Vendored browser builds (plotly.js, BokehJS, vega, ...) are classic scripts whose
        # minified code merely looks like imports (`${url}`): left exactly as published.
        if name.startswith("notebooks/vendor/") and name.endswith(".js"):
            return lambda matchobj: matchobj["matched"]
        return super().url_converter(name, hashed_files, template)
