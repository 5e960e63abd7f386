"""Redis behind Sentinel (REDIS_SENTINELS, docs/operations.md "Several hosts"): a real sentinel
watching the test Redis; a process configured with the sentinels alone (no host in REDIS_URL)
finds the master through it, /readyz's Redis check passes through it, and a kernel worker so
configured serves the notebooks of clients that reach the same Redis directly."""
import os
import subprocess
import sys
import textwrap
from urllib.parse import urlsplit

import pytest
from asgiref.sync import sync_to_async

from notebooks_app.models import Notebook

from .conftest import ROOT, WorkerProcess, create, database_url_for_tests, run_and_wait, text_output
from .live import free_port
from .waiting import eventually

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]


@pytest.fixture
def sentinel(tmp_path):
    """A Sentinel monitoring the test Redis as `mymaster`; the sentinel's address."""
    redis = urlsplit(os.environ["REDIS_URL"])
    port = free_port()
    config = tmp_path / "sentinel.conf"
    config.write_text(f"port {port}\nbind 127.0.0.1\ndir {tmp_path}\nsentinel monitor mymaster {redis.hostname} {redis.port} 1\nsentinel down-after-milliseconds mymaster 60000\n")
    proc = subprocess.Popen(["redis-server", str(config), "--sentinel"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def answers():
        done = subprocess.run(["redis-cli", "-p", str(port), "sentinel", "get-master-addr-by-name", "mymaster"], capture_output=True, text=True)
        return done.returncode == 0 and str(redis.port) in done.stdout

    try:
        eventually(answers, 20, "the sentinel to know its master").wait()
        yield f"127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(10)


def sentinel_env(sentinels):
    """A process's environment with Redis reached through the sentinels only: REDIS_URL keeps the
    database number and no host."""
    db = urlsplit(os.environ["REDIS_URL"]).path or "/0"
    return dict(os.environ, REDIS_SENTINELS=sentinels, REDIS_SENTINEL_MASTER="mymaster", REDIS_URL=f"redis://unused.invalid{db}", DATABASE_URL=database_url_for_tests())


def test_the_layers_and_readiness_find_the_master_through_the_sentinel(sentinel):
    script = textwrap.dedent(
        """
        import asyncio, django
        django.setup()
        from channels.layers import get_channel_layer
        from django.conf import settings
        from notebooks_app import health

        async def main():
            layer = get_channel_layer()
            await layer.send("sentinel-check", {"type": "hello", "n": 1})
            message = await layer.receive_within("sentinel-check", 5)
            events = get_channel_layer(settings.EVENTS_CHANNEL_LAYER)
            channel = await events.new_channel()
            await events.group_add("sentinel-group", channel)
            await events.group_send("sentinel-group", {"type": "event", "n": 2})
            event = await asyncio.wait_for(events.receive(channel), 5)
            await health._redis()
            print("hosts", settings.CHANNEL_LAYERS["default"]["CONFIG"]["hosts"][0]["sentinels"], "message", message["n"], "event", event["n"])

        asyncio.run(main())
        """
    )
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=sentinel_env(sentinel), capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-3000:]
    host, port = sentinel.split(":")
    assert f"hosts [('{host}', {port})] message 1 event 2" in done.stdout


async def test_a_kernel_worker_through_the_sentinel_serves_notebooks(sentinel, settings, live_kernel, ws, users):
    fleet = f"sentinel{os.getpid()}"
    settings.KERNEL_FLEET = fleet
    worker = WorkerProcess([fleet], extra_env={**{k: v for k, v in sentinel_env(sentinel).items() if k.startswith("REDIS")}, "KERNEL_FLEET": fleet}).start()
    try:
        notebook = await sync_to_async(Notebook.objects.create)(name="through sentinel", owner=users["alice"])
        client = await ws(users["alice"], notebook)
        cell = await create(client, "6 * 7")
        events = await run_and_wait(client, cell)
        assert events[-1]["status"] == "success" and text_output(client, cell) == "42"
    finally:
        worker.kill()
