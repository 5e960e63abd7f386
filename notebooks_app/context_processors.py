"""Template context every page needs: whether user code runs outside the sandbox, whether sign-up is on."""
from django.conf import settings


def sandbox(request):
    """`sandbox_off`: KERNEL_SANDBOX=off, so notebook pages warn that code runs with the server's privileges;
    `signup_enabled`: the login page offers sign-up (SIGNUP_ENABLED)."""
    return {"sandbox_off": not settings.KERNEL_SANDBOX, "signup_enabled": settings.SIGNUP_ENABLED}
