"""`manage.py kernels`: the execution processes every kernel worker runs, per worker and notebook
(who started it, idle time, memory, busy or pending), and `--stop NOTEBOOK` to stop one
(docs/operations.md#kernel-lifecycle).

It asks each shard's worker over the channel layer (the `kernel.ping` of /readyz), so it sees what
the workers hold now, wherever they run; the embedded default has no worker to ask from here.
"""
import asyncio
import json
import uuid

from asgiref.sync import async_to_sync
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from notebooks_app import kernel_client
from notebooks_app.health import kernel_shard
from notebooks_app.models import Notebook

ASK_TIMEOUT = 5.0


class Command(BaseCommand):
    help = "List the kernel workers' execution processes, or stop one notebook's (--stop)."

    def add_arguments(self, parser):
        parser.add_argument("--stop", metavar="NOTEBOOK", help="stop this notebook's execution process (its id); its results turn stale")
        parser.add_argument("--reason", default="", help="with --stop: said to the notebook's pages and written in its history")
        parser.add_argument("--json", action="store_true", help="print the workers as JSON")

    def handle(self, *args, stop=None, reason="", json=False, **options):
        if settings.KERNEL_EMBEDDED:
            raise CommandError("the kernel runs inside the server in the embedded default (no REDIS_URL): there is no worker to ask from here")
        if stop:
            return self._stop(stop, reason)
        workers = async_to_sync(self._ask)()
        if json:
            self.stdout.write(_json(workers))
            return
        self._print(workers)

    def _stop(self, notebook_id, reason):
        try:
            uuid.UUID(str(notebook_id))
        except ValueError:
            raise CommandError(f"{notebook_id!r} is not a notebook id") from None
        if not Notebook.objects.filter(pk=notebook_id).exists():
            raise CommandError(f"no notebook {notebook_id}")
        if len(reason) > 200:
            raise CommandError("--reason takes at most 200 characters")
        async_to_sync(kernel_client.send)(notebook_id, {"type": "kernel.stop_process", "notebook": str(notebook_id), "reason": reason.strip()})
        self.stdout.write(f"asked the worker of {kernel_client.kernel_channel(notebook_id)} to stop notebook {notebook_id}'s kernel")

    async def _ask(self):
        channels = kernel_client.shard_channels()
        answers = await asyncio.gather(*(kernel_shard(channel, ASK_TIMEOUT) for channel in channels), return_exceptions=True)
        return {channel: (answer if not isinstance(answer, BaseException) else {"error": f"no answer within {ASK_TIMEOUT:g} s" if isinstance(answer, asyncio.TimeoutError) else str(answer)}) for channel, answer in zip(channels, answers)}

    def _print(self, workers):
        ids = {p["notebook"] for worker in workers.values() for p in worker.get("processes", ())}
        names = dict(Notebook.objects.filter(pk__in=ids).values_list("id", "name"))
        names = {str(key): value for key, value in names.items()}
        write = self.stdout.write
        for channel, worker in workers.items():
            if "error" in worker:
                write(f"{channel}: {worker['error']}")
                continue
            limits = worker["limits"]
            write(
                f"{channel}: worker {worker['host']}:{worker['pid']} since {worker['started']}, "
                f"{worker['live']} running (cap {limits['max_processes']}, {limits['user_max'] or 'no'} per person), "
                f"{worker['pending']} pending, {worker['memory_mb']:,.0f} MB (stops idle ones over {limits['memory_high_mb']:,} MB), "
                f"idle stop after {limits['idle_minutes']:g} min"
            )
            if not worker["processes"]:
                write("  no execution processes")
            for process in worker["processes"]:
                name = names.get(process["notebook"], "?")
                if process.get("pending"):
                    write(f"  {process['notebook']}  {name!r}  pending  started by {process['user'] or '-'}")
                    continue
                state = "busy" if process["busy"] else f"idle {process['idle']:.0f} s"
                write(f"  {process['notebook']}  {name!r}  {state}  {process['rss_mb']:,.0f} MB  started by {process['user'] or '-'}  pid {process['pid']}")


def _json(workers):
    return json.dumps(workers, indent=2, sort_keys=True)
