"""WebSocket URL patterns and the kernel worker's channel routes."""
from django.urls import path

from . import consumers
from .kernel_client import shard_channels

websocket_urlpatterns = [
    path("ws/notebooks/<uuid:notebook_id>/", consumers.NotebookConsumer.as_asgi()),
]


def kernel_channel_routes():
    """Every kernel channel name, including 'kernel' and kernel.0..kernel.K-1, routed to the worker."""
    from .kernel.worker import KernelConsumer

    names = set(shard_channels()) | {"kernel"}
    return {name: KernelConsumer.as_asgi() for name in sorted(names)}
