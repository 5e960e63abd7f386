"""Every error of the API as `{"error": {"code", "message"}}` with its HTTP status: the codes are
the WebSocket protocol's (protocol.py, operations.OperationError's), plus the few only HTTP has
(UNAUTHENTICATED, METHOD_NOT_ALLOWED, ...). docs/api.md lists them (tests/test_api.py checks)."""
import logging

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.db import DatabaseError, InterfaceError, OperationalError
from django.http import Http404
from rest_framework import exceptions
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from .. import protocol
from ..consumers import database_down
from ..kernel_client import KernelUnreachable
from ..layers import REDIS_ERRORS
from ..middleware import RETRY_AFTER_SECONDS
from ..operations import OperationError

logger = logging.getLogger(__name__)

# Only HTTP has these.
UNAUTHENTICATED = "unauthenticated"
METHOD_NOT_ALLOWED = "method_not_allowed"
UNSUPPORTED_MEDIA_TYPE = "unsupported_media_type"
NOT_ACCEPTABLE = "not_acceptable"

# Each code's HTTP status.
STATUS = {
    protocol.INVALID_JSON: 400,
    protocol.INVALID_FIELD: 400,
    protocol.TOO_LARGE: 400,
    UNAUTHENTICATED: 401,
    protocol.FORBIDDEN: 403,
    protocol.NOT_FOUND: 404,
    protocol.UNKNOWN_CELL: 404,
    METHOD_NOT_ALLOWED: 405,
    NOT_ACCEPTABLE: 406,
    UNSUPPORTED_MEDIA_TYPE: 415,
    protocol.RATE_LIMITED: 429,
    protocol.INTERNAL_ERROR: 500,
    protocol.BUSY: 503,
    protocol.UNAVAILABLE: 503,
}
ERROR_CODES = list(STATUS)


class ApiError(exceptions.APIException):
    """An error with one of ERROR_CODES, raised by the API's own code."""

    def __init__(self, code, message):
        super().__init__(message, code)
        self.status_code = STATUS[code]
        self.error_code = code


def error_response(code, message, *, headers=None, fields=None):
    body = {"code": code, "message": message}
    if fields:
        body["fields"] = fields
    return Response({"error": body}, status=STATUS.get(code, 400), headers=headers)


def _validation_code(exc):
    """too_large when any field was too large, else invalid_field."""
    stack = [exc.get_codes()]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
        elif item == protocol.TOO_LARGE:
            return protocol.TOO_LARGE
    return protocol.INVALID_FIELD


def _validation_message(detail):
    if isinstance(detail, dict):
        return " ".join(f"{name}: {' '.join(str(m) for m in (errors if isinstance(errors, list) else [errors]))}" for name, errors in detail.items())
    return " ".join(str(m) for m in detail) if isinstance(detail, list) else str(detail)


def _code_of(exc):
    """The error code of one of DRF's exceptions."""
    if isinstance(exc, ApiError):
        return exc.error_code
    if isinstance(exc, exceptions.ParseError):
        return protocol.INVALID_JSON
    if isinstance(exc, (exceptions.NotAuthenticated, exceptions.AuthenticationFailed)):
        return UNAUTHENTICATED
    if isinstance(exc, exceptions.PermissionDenied):
        return protocol.FORBIDDEN
    if isinstance(exc, exceptions.NotFound):
        return protocol.NOT_FOUND
    if isinstance(exc, exceptions.MethodNotAllowed):
        return METHOD_NOT_ALLOWED
    if isinstance(exc, exceptions.UnsupportedMediaType):
        return UNSUPPORTED_MEDIA_TYPE
    if isinstance(exc, exceptions.NotAcceptable):
        return NOT_ACCEPTABLE
    if isinstance(exc, exceptions.Throttled):
        return protocol.RATE_LIMITED
    return protocol.INVALID_FIELD


def exception_handler(exc, context):
    """DRF's handler (its headers: WWW-Authenticate, Retry-After), with our body; and the
    operations' and infrastructure's errors as the consumer answers them."""
    if isinstance(exc, OperationError):
        return error_response(exc.code, exc.message)
    if isinstance(exc, KernelUnreachable):
        return error_response(protocol.UNAVAILABLE, "Your change was saved, but the kernel cannot be reached right now; it will show when the connection is back.", headers={"Retry-After": str(RETRY_AFTER_SECONDS)})
    if isinstance(exc, REDIS_ERRORS):
        logger.warning("API request refused: Redis unavailable (%s)", type(exc).__name__)
        return error_response(protocol.UNAVAILABLE, "The server cannot reach the kernel right now; nothing was changed. Retry in a moment.", headers={"Retry-After": str(RETRY_AFTER_SECONDS)})
    if isinstance(exc, (OperationalError, InterfaceError)):
        if database_down(exc):
            logger.warning("API request refused: database unavailable (%s: %s)", type(exc).__name__, str(exc)[:200])
            return error_response(protocol.UNAVAILABLE, "The database cannot be reached right now; nothing was changed. Retry in a moment.", headers={"Retry-After": str(RETRY_AFTER_SECONDS)})
        return error_response(protocol.BUSY, "The notebook is busy; nothing was changed. Please retry.", headers={"Retry-After": "1"})
    if isinstance(exc, DatabaseError):
        logger.exception("database error in an API request")
        return error_response(protocol.INTERNAL_ERROR, "The change could not be saved; nothing was changed.")
    if isinstance(exc, Http404):
        exc = exceptions.NotFound(str(exc) or "Not found.")
    elif isinstance(exc, DjangoPermissionDenied):
        exc = exceptions.PermissionDenied(str(exc) or None)
    response = drf_exception_handler(exc, context)
    if response is None:
        logger.exception("unexpected error in an API request", exc_info=exc)
        return error_response(protocol.INTERNAL_ERROR, "Something went wrong on the server; nothing was changed.")
    code = _code_of(exc)
    fields = None
    if isinstance(exc, exceptions.ValidationError):
        code = _validation_code(exc)
        message = _validation_message(exc.detail)
        fields = exc.detail if isinstance(exc.detail, dict) else None
    else:
        message = str(exc.detail)
    headers = {name: value for name, value in response.items() if name in ("WWW-Authenticate", "Retry-After")}
    return error_response(code, message, headers=headers, fields=fields)
