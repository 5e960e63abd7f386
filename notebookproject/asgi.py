"""ASGI entry point: HTTP through Django and WebSockets through the notebook consumer.  The kernel
worker reads its channels itself (`manage.py runworker kernel`: notebooks_app/kernel/fleet.py)."""
import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "notebookproject.settings")
django_asgi_app = get_asgi_application()

from channels.auth import AuthMiddlewareStack  # noqa: E402  (needs Django set up first)
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator, OriginValidator  # noqa: E402

from notebooks_app.kernel_client import starting_embedded_worker  # noqa: E402
from notebooks_app.middleware import WebSocketUnavailableGuard  # noqa: E402
from notebooks_app.routing import websocket_urlpatterns  # noqa: E402


class _SameHostOrNoOrigin(OriginValidator):
    def valid_origin(self, parsed_origin):
        return parsed_origin is None or super().valid_origin(parsed_origin)


def same_host_or_no_origin(app):
    """AllowedHostsOriginValidator that also admits handshakes without an Origin header.

    Cross-site WebSocket hijacking needs a browser, and browsers always send Origin on a
    WebSocket handshake, so a foreign Origin is still refused; a script or CLI client
    (which may send none) goes on to session authentication like any other.
    """
    validator = AllowedHostsOriginValidator(app)
    return _SameHostOrNoOrigin(validator.application, validator.allowed_origins)


application = ProtocolTypeRouter(
    {
        "http": starting_embedded_worker(django_asgi_app, "/api/"),
        "websocket": WebSocketUnavailableGuard(same_host_or_no_origin(AuthMiddlewareStack(URLRouter(websocket_urlpatterns)))),
    }
)
