"""The REST API under /api/v1/ (docs/api.md): the WebSocket protocol's edits and runs for scripts,
authenticated by personal API tokens or the browser's session. It changes nothing itself: every
edit and run goes through operations.py as the consumer's do."""
