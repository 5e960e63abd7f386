"""The production ASGI application plus /static/ files, for browser tests against a bare Daphne.

`python -m daphne notebookproject.asgi:application` serves no static files (Django
serves them only under runserver), so the page's scripts would 404 in tests.
"""
from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler

from notebookproject.asgi import application as _application

application = ASGIStaticFilesHandler(_application)
