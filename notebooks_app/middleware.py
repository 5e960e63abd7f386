"""ServiceUnavailableMiddleware: a view that cannot reach PostgreSQL or Redis answers 503.

During an outage every request gets a short page saying so (and `Retry-After`), logged as
one line, instead of a 500 with a traceback; the database rolled back whatever the view
had started (each operation is one transaction).
"""
import logging

from django.db import DatabaseError, InterfaceError, OperationalError
from django.http import HttpResponse
from redis.exceptions import ConnectionError as RedisConnectionError, TimeoutError as RedisTimeoutError

from .protocol import UNAVAILABLE, encode_error

logger = logging.getLogger(__name__)

# "Try again later": 1013 in RFC 6455's registry, but Daphne (autobahn) sends only 1000 and
# 3000-4999 and raises on any other code (the socket then ends 1011, with a traceback), so the
# private-use code 4013 says it.
CLOSE_TRY_AGAIN_LATER = 4013

RETRY_AFTER_SECONDS = 5
PAGE = (
    "<!doctype html><title>Temporarily unavailable</title>"
    "<h1>Temporarily unavailable</h1><p>The notebook server cannot reach its {what} right now. "
    "Nothing was changed; please retry in a few seconds.</p>"
)


def unavailable_response(what):
    response = HttpResponse(PAGE.format(what=what), status=503, content_type="text/html; charset=utf-8")
    response["Retry-After"] = str(RETRY_AFTER_SECONDS)
    return response


class ServiceUnavailableMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        return self.get_response(request)

    def process_exception(self, request, exception):
        if isinstance(exception, (OperationalError, InterfaceError)):
            what = "database"
        elif isinstance(exception, (RedisConnectionError, RedisTimeoutError)):
            what = "message broker (Redis)"
        else:
            return None
        logger.warning("%s %s: %s unavailable (%s: %s)", request.method, request.path, what, type(exception).__name__, str(exception)[:200])
        return unavailable_response(what)


class WebSocketUnavailableGuard:
    """ASGI wrapper: a WebSocket whose handshake fails on the database or Redis before the
    consumer runs (channels' session and user lookups) is accepted, told `unavailable` and
    closed with 4013 (try again later), instead of a 500 and a traceback."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        accepted = False

        async def tracking_send(message):
            nonlocal accepted
            if message["type"] == "websocket.accept":
                accepted = True
            await send(message)

        if scope["type"] == "websocket":
            # The server's own send, for the direct event path (notebooks_app/fanout.py).
            scope = {**scope, "notebooks.raw_send": send}
        try:
            return await self.app(scope, receive, tracking_send)
        except (DatabaseError, RedisConnectionError, RedisTimeoutError) as exc:
            if scope["type"] != "websocket" or accepted:
                raise
            what = "database" if isinstance(exc, DatabaseError) else "Redis"
            logger.warning("WebSocket %s refused: %s unavailable (%s: %s)", scope.get("path"), what, type(exc).__name__, str(exc)[:200])
            await send({"type": "websocket.accept"})
            await send({"type": "websocket.send", "text": encode_error(UNAVAILABLE, f"The server cannot reach its {what} right now; reconnecting shortly.")})
            await send({"type": "websocket.close", "code": CLOSE_TRY_AGAIN_LATER})
