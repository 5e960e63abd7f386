"""WebSocket URL patterns. The kernel worker's channel routes are kernel/worker.py's."""
from django.urls import path

from . import consumers

websocket_urlpatterns = [
    path("ws/notebooks/<uuid:notebook_id>/", consumers.NotebookConsumer.as_asgi()),
]
