"""`manage.py runkernel`: the kernel worker, the same as `manage.py runworker kernel` (with the
KERNEL_FLEET name), kept as the command docs and supervisors name."""
from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError


class Command(BaseCommand):
    help = "Run a kernel worker of this project's fleet (any number of them share its notebooks)."

    def add_arguments(self, parser):
        parser.add_argument("--shards", default="", help=argparse_gone_help())

    def handle(self, *args, shards, **options):
        if shards:
            raise CommandError("--shards is gone: workers share the fleet's virtual shards through leases; start `runkernel` on any number of hosts")
        call_command("runworker", settings.KERNEL_FLEET)


def argparse_gone_help():
    return "gone: workers now take their share of the fleet's shards themselves (docs/operations.md)"
