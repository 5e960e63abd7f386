"""`manage.py runkernel [--shards 0,1]`: the kernel worker for some or all shards.

A thin wrapper over `runworker` that knows the shard channel names (kernel_client.
shard_channels) and refuses shard numbers outside KERNEL_SHARDS: `runworker kernel.5`
with KERNEL_SHARDS=2 would start, listen on a channel nobody sends to, and look healthy.
"""
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError

from notebooks_app.kernel_client import shard_channels


class Command(BaseCommand):
    help = "Run the kernel worker for the given shards (default: all KERNEL_SHARDS of them)."

    def add_arguments(self, parser):
        parser.add_argument("--shards", default="", help="comma-separated shard numbers, e.g. 0,1 (default: all)")

    def handle(self, *args, shards, **options):
        channels = shard_channels()
        if not shards:
            chosen = channels
        else:
            try:
                numbers = sorted({int(part) for part in shards.split(",") if part.strip()})
            except ValueError:
                raise CommandError(f"--shards takes comma-separated shard numbers, not {shards!r}") from None
            wrong = [n for n in numbers if not 0 <= n < len(channels)]
            if wrong or not numbers:
                raise CommandError(f"shard {wrong or shards} does not exist: KERNEL_SHARDS={len(channels)} gives shards 0..{len(channels) - 1}")
            chosen = [channels[n] for n in numbers]
        self.stderr.write(f"kernel worker for {', '.join(chosen)}")
        call_command("runworker", *chosen)
