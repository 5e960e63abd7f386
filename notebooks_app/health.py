"""Health checks for load balancers and supervisors (docs/operations.md#health-checks).

* `/healthz`: the process is up and serving; touches nothing else.
* `/readyz`: PostgreSQL answers, Redis answers, and every virtual shard of the kernel fleet is
  held by a live worker (an unexpired lease, kernel/fleet.py); 200 when all hold, 503 naming
  the ones that did not.  Each check is bounded by READY_TIMEOUT seconds.  The answer also says,
  per live worker, how many shards it holds, how many execution processes it runs, how many
  wait (pending), their memory and when it last renewed (`kernel_workers`).
"""
import asyncio
import logging

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import DatabaseError, connection
from django.http import JsonResponse
from django.views.decorators.cache import never_cache

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
    if not (settings.REDIS_URL or settings.REDIS_SENTINELS):
        return
    from redis import asyncio as aioredis

    if settings.REDIS_SENTINELS:  # the master the sentinels name now (settings._sentinel_hosts)
        from redis.asyncio.sentinel import Sentinel

        host = settings.CHANNEL_LAYERS["default"]["CONFIG"]["hosts"][0]
        sentinel = Sentinel(host["sentinels"], socket_timeout=READY_TIMEOUT, socket_connect_timeout=READY_TIMEOUT)
        client = sentinel.master_for(host["master_name"], db=host.get("db", 0), password=host.get("password"), socket_timeout=READY_TIMEOUT, socket_connect_timeout=READY_TIMEOUT)
    else:
        client = aioredis.from_url(settings.REDIS_URL, socket_connect_timeout=READY_TIMEOUT, socket_timeout=READY_TIMEOUT)
    try:
        await asyncio.wait_for(client.ping(), READY_TIMEOUT)
    finally:
        await client.aclose()


class KernelNotReady(Exception):
    pass


def fleet_summary():
    """The fleet's live workers and the shards none holds (kernel/fleet.py), from the database."""
    from .kernel.fleet import fleet_status

    return fleet_status(settings.KERNEL_FLEET, settings.KERNEL_VSHARDS, settings.KERNEL_LEASE_SECONDS)


async def _kernel():
    if settings.KERNEL_EMBEDDED:
        from .kernel.worker import get_service

        return {"embedded": _summary(get_service().describe())}  # runs inside this very process
    status = await asyncio.wait_for(sync_to_async(fleet_summary)(), READY_TIMEOUT)
    workers = {worker["name"]: {**_summary(worker["state"] or {}), "shards": len(worker["shards"]), "renewed": worker["heartbeat_at"].isoformat()} for worker in status["workers"] if worker["live"]}
    if status["uncovered"]:
        shown = ", ".join(map(str, status["uncovered"][:10])) + (" …" if len(status["uncovered"]) > 10 else "")
        raise KernelNotReady(f"{len(status['uncovered'])} of {settings.KERNEL_VSHARDS} shards have no live kernel worker ({shown}); {len(workers)} live")
    return workers


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
            if not isinstance(result, (asyncio.TimeoutError, DatabaseError, KernelNotReady, *REDIS_ERRORS)):
                logger.error("readiness check %s failed unexpectedly", name, exc_info=result)
            failed[name] = _describe(result)
    body = {"status": "unavailable" if failed else "ok", "checks": {name: failed.get(name, "ok") for name in names}}
    if not isinstance(results[2], BaseException):
        body["kernel_workers"] = results[2]
    return JsonResponse(body, status=503 if failed else 200)
