"""Static files storage: WhiteNoise's compressed, content-hashed copies of static/, with the
page's ES module imports rewritten to the hashed names. Used by `collectstatic` and `{% static %}`."""
from whitenoise.storage import CompressedManifestStaticFilesStorage


class StaticFilesStorage(CompressedManifestStaticFilesStorage):
    # The page's scripts are ES modules that import each other by relative path
    # (static/notebooks/js/*.js). Django rewrites `import … from "./x.js"` to the hashed name
    # only when asked; without it the hashed notebook.js would load unhashed modules, which are
    # not cached for long and could mix two releases in one page.
    support_js_module_import_aggregation = True
