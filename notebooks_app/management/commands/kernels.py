"""`manage.py kernels`: the execution processes every kernel worker runs, per worker and notebook
(who started it, idle time, memory, busy or pending), and `--stop NOTEBOOK` to stop one
(docs/operations.md#kernel-lifecycle).

It reads what every worker of the fleet said of itself at its last lease renewal (a third of
KERNEL_LEASE_SECONDS ago at most: models.KernelWorkerRecord), wherever it runs; the embedded
default has no worker to ask from here.
"""
import json
import uuid

from asgiref.sync import async_to_sync
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from notebooks_app import kernel_client
from notebooks_app.health import fleet_summary
from notebooks_app.models import Notebook


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
        status = fleet_summary()
        if json:
            self.stdout.write(_json(status))
            return
        self._print(status)

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

    def _print(self, status):
        workers = status["workers"]
        ids = {p["notebook"] for worker in workers for p in (worker["state"] or {}).get("processes", ())}
        names = {str(key): value for key, value in Notebook.objects.filter(pk__in=ids).values_list("id", "name")}
        write = self.stdout.write
        fleet = settings.KERNEL_FLEET
        uncovered = status["uncovered"]
        write(f"fleet {fleet}: {settings.KERNEL_VSHARDS} shards, {sum(w['live'] for w in workers)} live worker(s)" + (f", {len(uncovered)} shard(s) with no live worker: {', '.join(map(str, uncovered))}" if uncovered else ""))
        for worker in workers:
            state = worker["state"] or {}
            limits = state.get("limits") or {}
            alive = "live" if worker["live"] else "NOT RENEWING"
            write(
                f"{worker['name']} ({alive}{', draining' if worker['draining'] else ''}): renewed {worker['heartbeat_at']:%H:%M:%S}, "
                f"{len(worker['shards'])} shard(s), {state.get('live', 0)} running (cap {limits.get('max_processes', '?')}, "
                f"{limits.get('user_max') or 'no'} per person), {state.get('pending', 0)} pending, {state.get('memory_mb', 0):,.0f} MB"
            )
            if not worker["live"]:
                continue
            for process in state.get("processes") or ():
                name = names.get(process["notebook"], "?")
                if process.get("pending"):
                    write(f"  {process['notebook']}  {name!r}  pending  started by {process['user'] or '-'}")
                    continue
                busy = "busy" if process["busy"] else f"idle {process['idle']:.0f} s"
                write(f"  {process['notebook']}  {name!r}  {busy}  {process['rss_mb']:,.0f} MB  started by {process['user'] or '-'}  pid {process['pid']}")


def _json(status):
    return json.dumps(status, indent=2, sort_keys=True, default=str)
