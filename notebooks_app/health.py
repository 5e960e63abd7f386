"""Health checks for load balancers and supervisors (docs/operations.md#health-checks).

* `/healthz`: the process is up and serving; touches nothing else.
* `/readyz`: PostgreSQL answers, Redis answers, and every kernel shard's worker answers a
  ping (a `kernel.ping` through its channel, replied on the core layer); 200 when all do,
  503 naming the ones that did not.  Each check is bounded by READY_TIMEOUT seconds.
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


async def _kernel_shard(channel):
    layer = get_channel_layer()
    reply = await layer.new_channel()
    await layer.send(channel, {"type": "kernel.ping", "replyChannel": reply})
    await asyncio.wait_for(layer.receive(reply), READY_TIMEOUT)


async def _kernel():
    if settings.KERNEL_EMBEDDED:
        return  # runs inside this very process
    await asyncio.gather(*(_kernel_shard(channel) for channel in kernel_client.shard_channels()))


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
    return JsonResponse(body, status=503 if failed else 200)
