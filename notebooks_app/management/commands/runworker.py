"""`manage.py runworker kernel`: a kernel worker of this project's fleet (KERNEL_FLEET, "kernel").

It replaces Channels' runworker (this app comes before `channels` in INSTALLED_APPS) because the
worker reads its channels itself: which ones depends on the virtual shards whose leases it holds,
which change while it runs (notebooks_app/kernel/fleet.py).  Start it on any number of hosts; each
takes its share.  SIGTERM (or Ctrl-C) hands every shard over before it exits.
"""
import asyncio
import logging
import signal

from channels.management.commands.runworker import Command as ChannelsRunworker
from django.conf import settings
from django.core.management import CommandError

logger = logging.getLogger("django.channels.worker")


class Command(ChannelsRunworker):
    help = "Run a kernel worker of this project's fleet: `runworker kernel` (the KERNEL_FLEET name)."

    def handle(self, *args, **options):
        channels = options["channels"]
        fleet = settings.KERNEL_FLEET
        if channels != [fleet]:
            raise CommandError(
                f"this project's only worker is the kernel worker: run `manage.py runworker {fleet}` (KERNEL_FLEET); "
                f"it reads the channels of the shards it holds itself, so no other channel ({', '.join(channels)}) is needed"
            )
        if settings.KERNEL_EMBEDDED:
            raise CommandError("without REDIS_URL the kernel runs inside the server (the embedded default); set REDIS_URL and DATABASE_URL to run workers apart")
        bound_idle_transactions()
        asyncio.run(self._main(channels))

    async def _main(self, channels):
        from notebooks_app.kernel.worker import run_worker

        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        await run_worker(stop, ready=lambda: logger.info("Running worker for channels %s", channels))


def bound_idle_transactions():
    """This worker's PostgreSQL sessions end a transaction left idle for a third of the lease
    time: a worker paused mid-write (SIGSTOP, a frozen VM) would otherwise keep the row lock of
    its lease (the fence's FOR SHARE) and no other worker could take the shard.  Its own writes
    take milliseconds between statements; one cut short is retried (worker.py)."""
    from django.db import connections

    wrapper = connections["default"]
    if wrapper.vendor != "postgresql" or not settings.DATABASE_STARTUP_OPTIONS:
        return
    milliseconds = max(1000, int(settings.KERNEL_LEASE_SECONDS * 1000 / 3))
    options = wrapper.settings_dict.setdefault("OPTIONS", {})
    options["options"] = f"{options.get('options', '')} -c idle_in_transaction_session_timeout={milliseconds}".strip()
    wrapper.close()
    if hasattr(wrapper, "close_pool"):
        wrapper.close_pool()
