"""WebSocket URL patterns and the kernel worker's channel routes."""
from django.urls import path

from . import consumers
from .kernel_client import KERNEL_CHANNEL

websocket_urlpatterns = [
    path("ws/notebooks/<uuid:notebook_id>/", consumers.NotebookConsumer.as_asgi()),
]


class KernelChannelRouter:
    """Routes `kernel` and every shard channel `kernel.<k>` to the kernel worker.

    Any shard name is accepted, so `runworker kernel.3` works whatever this
    process's KERNEL_SHARDS says; which shard a notebook uses is decided by the
    sender (kernel_client.kernel_channel).
    """

    def __init__(self):
        from .kernel.worker import KernelConsumer

        self.consumer = KernelConsumer.as_asgi()

    async def __call__(self, scope, receive, send):
        channel = scope.get("channel", "")
        if channel != KERNEL_CHANNEL and not channel.startswith(KERNEL_CHANNEL + "."):
            raise ValueError(f"no route for channel {channel!r}")
        return await self.consumer(scope, receive, send)
