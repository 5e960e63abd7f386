"""The API's rate limit: API_RATE_LIMIT requests per token (a browser's session: per user), counted
in the "api" cache (Redis when there is one: every server process counts together). Over it, 429
with Retry-After. Read at each request, so a changed setting (tests) applies at once. A cache
that cannot be reached lets the request through: an outage of Redis must not stop reads."""
import logging

from django.conf import settings
from django.core.cache import caches
from rest_framework.throttling import SimpleRateThrottle

from ..layers import REDIS_ERRORS
from ..models import ApiToken

logger = logging.getLogger(__name__)


class TokenRateThrottle(SimpleRateThrottle):
    scope = "api"

    def __init__(self):
        self.cache = caches["api"]
        super().__init__()  # made for each request: reads get_rate() then

    def get_rate(self):
        return settings.API_RATE_LIMIT

    def get_cache_key(self, request, view):
        token = request.auth
        if isinstance(token, ApiToken):
            # The token's shown characters: random, so never shared with another token (not
            # even one of another database on the same Redis).
            return f"throttle:token:{token.prefix}"
        if request.user and request.user.is_authenticated:
            return f"throttle:user:{request.user.pk}"
        return None  # the schema and docs pages, for anyone: nothing to count against

    def allow_request(self, request, view):
        try:
            return super().allow_request(request, view)
        except REDIS_ERRORS as exc:
            logger.warning("API rate limit not checked: its cache is unreachable (%s)", type(exc).__name__)
            return True
