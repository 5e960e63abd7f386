"""`Authorization: Bearer <token>`: a personal API token (models.ApiToken) as its owner.

A request with no Authorization header falls through to the session (a browser logged in, with
DRF's CSRF check); one with a Bearer token that is unknown, revoked or expired is refused with
401 whatever else it carries. `request.auth` is the token, which api/permissions.py checks the
view's scope against. What the owner may do on a notebook stays operations.py's question.
"""
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import authentication, exceptions

from ..models import ApiToken

KEYWORD = "Bearer"


class BearerTokenAuthentication(authentication.BaseAuthentication):
    def authenticate(self, request):
        words = authentication.get_authorization_header(request).split()
        if not words or words[0].lower() != KEYWORD.lower().encode():
            return None
        if len(words) != 2:
            raise exceptions.AuthenticationFailed("Send the token as `Authorization: Bearer <token>`, with no spaces in the token.")
        try:
            secret = words[1].decode("ascii")
        except UnicodeDecodeError:
            raise exceptions.AuthenticationFailed("This is not an API token.") from None
        token = ApiToken.objects.find(secret)
        if token is None or not token.owner.is_active:
            raise exceptions.AuthenticationFailed("This API token is not valid.")
        refusal = token.refusal()
        if refusal:
            raise exceptions.AuthenticationFailed(refusal)
        token.touch()
        return token.owner, token

    def authenticate_header(self, request):
        # Makes DRF answer 401 (with this challenge) rather than 403 to a request without credentials.
        return f'{KEYWORD} realm="api"'


class BearerTokenScheme(OpenApiAuthenticationExtension):
    """The scheme as the OpenAPI document names it (drf-spectacular)."""

    target_class = BearerTokenAuthentication
    name = "apiToken"

    def get_security_definition(self, auto_schema):
        return {"type": "http", "scheme": "bearer", "description": "A personal API token (nbk_…), made at /accounts/tokens/ or with `manage.py api_token`."}
