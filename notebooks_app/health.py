"""Health checks for load balancers and supervisors (docs/operations.md#health-checks).

* `/healthz`: the process is up and serving; touches nothing else.
* `/readyz`: PostgreSQL answers, Redis answers, and every kernel shard's worker answers a
  ping (a `kernel.ping` through its channel, replied on the core layer); 200 when all do,
  503 naming the ones that did not.  Each check is bounded by READY_TIMEOUT seconds.  The
  answer also says, per shard, which worker answered and how many execution processes it
  runs, how many wait (pending) and their memory (`kernel_workers`).
"""
import asyncio
import logging

from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer
from django.conf import settings
from django.db import DatabaseError, connection
from django.http import JsonResponse
from django.views.decorators.cache import never_cache

from . import kernel_client
from .layers import REDIS_ERRORS

logger = logging.getLogger(__name__)

READY_TIMEOUT = 3.0


@never_cache
def healthz(request):
    return JsonResponse({"status": "ok"})


def _check_database():
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")


async def _database():
    await asyncio.wait_for(sync_to_async(_check_database)(), READY_TIMEOUT)


async def _redis():
    if not settings.REDIS_URL:
        return
    from redis import asyncio as aioredis

    client = aioredis.from_url(settings.REDIS_URL, socket_connect_timeout=READY_TIMEOUT, socket_timeout=READY_TIMEOUT)
    try:
        await asyncio.wait_for(client.ping(), READY_TIMEOUT)
    finally:
        await client.aclose()


async def kernel_shard(channel, timeout=READY_TIMEOUT):
    """Ping the worker of `channel`; what it says of itself (KernelService.describe)."""
    layer = get_channel_layer()
    reply = await layer.new_channel()
    await layer.send(channel, {"type": "kernel.ping", "replyChannel": reply})
    pong = await asyncio.wait_for(layer.receive(reply), timeout)
    return pong.get("worker") or {}


async def _kernel():
    if settings.KERNEL_EMBEDDED:
        from .kernel.worker import get_service

        return {"embedded": _summary(get_service().describe())}  # runs inside this very process
    channels = kernel_client.shard_channels()
    workers = await asyncio.gather(*(kernel_shard(channel) for channel in channels))
    return {channel: _summary(worker) for channel, worker in zip(channels, workers)}


def _summary(worker):
    """A worker as /readyz shows it: who, and its processes in numbers (no notebook ids)."""
    return {key: worker.get(key) for key in ("host", "pid", "started", "live", "pending", "memory_mb")}


def _describe(exc):
    if isinstance(exc, asyncio.TimeoutError):
        return f"no answer within {READY_TIMEOUT:g} s"
    return f"{type(exc).__name__}: {exc}"[:200]


@never_cache
async def readyz(request):
    names = ["database", "redis", "kernel"]
    results = await asyncio.gather(_database(), _redis(), _kernel(), return_exceptions=True)
    failed = {}
    for name, result in zip(names, results):
        if isinstance(result, BaseException):
            if not isinstance(result, (asyncio.TimeoutError, DatabaseError, *REDIS_ERRORS)):
                logger.error("readiness check %s failed unexpectedly", name, exc_info=result)
            failed[name] = _describe(result)
    body = {"status": "unavailable" if failed else "ok", "checks": {name: failed.get(name, "ok") for name in names}}
    if not isinstance(results[2], BaseException):
        body["kernel_workers"] = results[2]
    return JsonResponse(body, status=503 if failed else 200)
