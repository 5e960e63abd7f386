"""A token's scopes: each API view names the scope each of its methods needs (`scopes`), and a
request made with a token lacking it is refused (403). A browser's session has every scope. The
owner's role on the notebook is checked by operations.py, as for the WebSocket, never here."""
from rest_framework.permissions import BasePermission

from ..models import ApiToken


class TokenScope(BasePermission):
    def has_permission(self, request, view):
        token = request.auth
        if not isinstance(token, ApiToken):
            return True
        method = "GET" if request.method in ("HEAD", "OPTIONS") else request.method
        scope = view.scopes.get(method)
        if scope is None or token.allows(scope):  # None: a method the view lacks (405 follows)
            return True
        self.message = f"This token does not have the “{scope}” scope; make one that does at /accounts/tokens/."
        return False
