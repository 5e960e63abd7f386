"""Template context every page needs: whether user code runs outside the sandbox."""
from django.conf import settings


def sandbox(request):
    """`sandbox_off`: KERNEL_SANDBOX=off, so notebook pages warn that code runs with the server's privileges."""
    return {"sandbox_off": not settings.KERNEL_SANDBOX}
