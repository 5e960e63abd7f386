"""The notebook WebSocket protocol: one schema per client message, and the server's messages.

Everything a client sends is parsed and validated here, and nowhere else; a bad
message becomes a ProtocolError whose code and text go back to its sender only.
docs/protocol.md documents every message and must match MESSAGE_SCHEMAS.
"""
import base64
import binascii
import json
import keyword
import re
import uuid
from dataclasses import dataclass
from urllib.parse import urlsplit

from django.conf import settings

from .packages import RequirementsError, parse_requirements
from .constants import CELL_TYPES, FRAME_BYTES_BUDGET, NOTEBOOK_NAME_MAX

# Error codes sent in {"type": "error", "code": ...}; docs/protocol.md lists ERROR_CODES (tests/test_docs.py).
INVALID_JSON = "invalid_json"
INVALID_MESSAGE = "invalid_message"
UNKNOWN_TYPE = "unknown_type"
INVALID_FIELD = "invalid_field"
UNKNOWN_CELL = "unknown_cell"
FORBIDDEN = "forbidden"
NOT_FOUND = "not_found"
RATE_LIMITED = "rate_limited"
TOO_LARGE = "too_large"
BUSY = "busy"
INTERNAL_ERROR = "internal_error"
UNAVAILABLE = "unavailable"
NOTHING_TO_UNDO = "nothing_to_undo"
CONFLICT = "conflict"
TOO_SLOW = "too_slow"
ERROR_CODES = [INVALID_JSON, INVALID_MESSAGE, UNKNOWN_TYPE, INVALID_FIELD, UNKNOWN_CELL, FORBIDDEN, NOT_FOUND, RATE_LIMITED, TOO_LARGE, BUSY, INTERNAL_ERROR, UNAVAILABLE, NOTHING_TO_UNDO, CONFLICT, TOO_SLOW]

MAX_REQUEST_ID = 100
MAX_SAFE_INTEGER = 2**53 - 1  # the largest integer requestId (JavaScript's Number.MAX_SAFE_INTEGER)
MAX_CONNECTION_STRING = 4096
CONNECTION_SCHEMES = ("postgresql://", "postgres://", "sqlite:///")
# A notebook's secrets (docs/protocol.md#secrets): environment variable names of the execution
# process, never one the sandbox sets itself (kernel/sandbox.py child_environment, the child's
# NOTEBOOK_* settings, the loader's LD_*), with values of at most 64 KiB.
SECRET_NAME = re.compile(r"[A-Z_][A-Z0-9_]*")
MAX_SECRET_NAME = 64
MAX_SECRET_VALUE_BYTES = 64 * 1024
RESERVED_SECRET_NAMES = frozenset({"PATH", "HOME", "TMPDIR", "LANG", "PYTHONPATH"})
RESERVED_SECRET_PREFIXES = ("PYTHON", "MPL", "NOTEBOOK_", "LD_", "LC_")


class ProtocolError(Exception):
    def __init__(self, code, message, request_id=None):
        super().__init__(message)
        self.code = code
        self.message = message
        self.request_id = request_id


@dataclass(frozen=True)
class Field:
    kind: str  # a key of CHECKS: "cell_id" | "code" | "cell_type" | "identifier" | "connection" | "secret_name" | ...
    required: bool = True
    nullable: bool = False


# One schema per client message type: the fields it may carry.
MESSAGE_SCHEMAS = {
    "create_cell": {
        "cellType": Field("cell_type", required=False),
        "afterCellId": Field("cell_id", required=False, nullable=True),
        "beforeCellId": Field("cell_id", required=False),
        "code": Field("code", required=False),
    },
    "move_cell": {"cellId": Field("cell_id"), "afterCellId": Field("cell_id", nullable=True)},
    "delete_cell": {"cellId": Field("cell_id")},
    "cell_update": {"cellId": Field("cell_id"), "code": Field("code", required=False), "resultVariable": Field("identifier", required=False)},
    "run_cell": {"cellId": Field("cell_id")},
    "run_all": {},
    "interrupt": {},
    "restart_kernel": {},
    "update_db_connection": {"connectionString": Field("connection")},
    # The notebook's files (docs/notebook-files.md; uploads go over HTTP).
    "delete_file": {"path": Field("file_path")},
    "restore_file": {"path": Field("file_path")},
    "rename_file": {"path": Field("file_path"), "newPath": Field("file_path")},
    # A notebook's secrets (docs/protocol.md#secrets): values are write-only, never sent back.
    "set_secret": {"name": Field("secret_name"), "value": Field("secret_value")},
    "delete_secret": {"name": Field("secret_name")},
    # The notebook's own packages (docs/packages.md): the whole new list of requirements.
    "set_packages": {"requirements": Field("requirements")},
    "sync": {},
    # Shared text (docs/protocol.md#shared-text): a Yjs update to one cell's document.
    "text_update": {"cellId": Field("cell_id"), "update": Field("yjs_update"), "generation": Field("generation")},
    # Inputs (docs/protocol.md#inputs): a new value for a cell's widget number `index` (default 0).
    "set_input": {"cellId": Field("cell_id"), "index": Field("widget_index", required=False), "value": Field("input_value")},
    # History (docs/history.md).
    "restore_cell": {"cellId": Field("cell_id")},
    "undo": {},
    "redo": {},
    "history": {"before": Field("event_id", required=False), "limit": Field("limit", required=False)},
    "save_version": {"name": Field("version_name")},
    "restore_version": {"versionId": Field("event_id")},
    # Completion and inspection at a cursor (docs/protocol.md#completion): answered to the sender alone.
    "complete": {"cellId": Field("cell_id"), "code": Field("code"), "cursor": Field("offset")},
    "inspect": {"cellId": Field("cell_id"), "code": Field("code"), "cursor": Field("offset")},
    # Where this person is: the cell they are in and their cursor there (relayed, never stored).
    "presence": {"cellId": Field("cell_id", required=False, nullable=True), "cursor": Field("cursor", required=False, nullable=True)},
}


@dataclass(frozen=True)
class ClientMessage:
    type: str
    fields: dict
    request_id: object = None


def _check_cell_id(name, value):
    if not isinstance(value, str):
        raise ValueError(f"'{name}' must be a cell id (a UUID string)")
    try:
        return str(uuid.UUID(value))
    except ValueError:
        raise ValueError(f"'{name}' is not a valid cell id: {value[:60]!r}") from None


def _check_text(name, value):
    """Strings that get stored: PostgreSQL text holds no NUL, and UTF-8 no lone surrogate."""
    if "\x00" in value:
        raise ValueError(f"'{name}' must not contain NUL characters")
    if not _encodable(value):
        raise ValueError(f"'{name}' must be valid Unicode (no lone surrogates)")
    return value


def _encodable(value):
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _check_code(name, value):
    if not isinstance(value, str):
        raise ValueError(f"'{name}' must be a string")
    _check_text(name, value)
    size = len(value.encode("utf-8"))
    if size > settings.MAX_CODE_BYTES:
        raise ProtocolError(TOO_LARGE, f"'{name}' is {size:,} bytes; the limit is {settings.MAX_CODE_BYTES:,} bytes")
    return value


def _check_cell_type(name, value):
    allowed = [t for t, _ in CELL_TYPES]
    if value not in allowed:
        raise ValueError(f"'{name}' must be one of {', '.join(allowed)}, not {value!r}"[:200])
    return value


def _check_identifier(name, value):
    if not isinstance(value, str) or not value.isidentifier() or keyword.iskeyword(value) or len(value) > 100:
        raise ValueError(f"'{name}' must be a Python identifier such as df_1, not {value!r}"[:200])
    return value


def validate_connection_string(value):
    """'' (no connection) or a postgresql:// / postgres:// / sqlite:/// URL; raises ValueError otherwise."""
    if not isinstance(value, str):
        raise ValueError("the connection string must be a string")
    value = value.strip()
    if not value:
        return ""
    if len(value) > MAX_CONNECTION_STRING:
        raise ValueError(f"the connection string is longer than {MAX_CONNECTION_STRING} characters")
    _check_text("connectionString", value)
    if not value.startswith(CONNECTION_SCHEMES):
        raise ValueError("the connection string must start with postgresql://, postgres:// or sqlite:///")
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError as exc:
        raise ValueError(f"the connection string cannot be parsed: {exc}") from None
    if parts.scheme.startswith("postgres") and not parts.hostname and "host=" not in parts.query:
        raise ValueError("a PostgreSQL connection string needs a host, e.g. postgresql://user:password@host:5432/dbname")
    if parts.scheme == "sqlite" and not parts.path.strip("/"):
        raise ValueError("a SQLite connection string needs a file path, e.g. sqlite:///data/example.db")
    return value


def _check_connection(name, value):
    return validate_connection_string(value)


def _check_file_path(name, value):
    """A notebook file's name: relative, no '..', no control characters (notebook_files.clean_path)."""
    from .notebook_files import FileError, clean_path

    try:
        return clean_path(value)
    except FileError as exc:
        raise ValueError(f"'{name}': {exc.message}") from None


def validate_secret_name(value):
    """An environment variable name the execution process may be given; ValueError otherwise."""
    if not isinstance(value, str) or not SECRET_NAME.fullmatch(value) or len(value) > MAX_SECRET_NAME:
        raise ValueError(f"a secret's name must be an environment variable name such as OPENAI_API_KEY: capital letters, digits and _, not starting with a digit, at most {MAX_SECRET_NAME} characters, not {str(value)[:70]!r}")
    if value in RESERVED_SECRET_NAMES or value.startswith(RESERVED_SECRET_PREFIXES):
        raise ValueError(f"{value} is set by the sandbox itself; choose another name (not {', '.join(sorted(RESERVED_SECRET_NAMES))}, nor one starting with {', '.join(RESERVED_SECRET_PREFIXES)})")
    return value


def _check_secret_name(name, value):
    return validate_secret_name(value)


def _check_secret_value(name, value):
    """Never quoted back: an error names the problem, not the value."""
    if not isinstance(value, str):
        raise ValueError(f"'{name}' must be a string")
    if not value:
        raise ValueError(f"'{name}' is empty; delete the secret instead")
    if "\x00" in value:
        raise ValueError(f"'{name}' must not contain NUL characters (an environment variable cannot hold them)")
    if not _encodable(value):
        raise ValueError(f"'{name}' must be valid Unicode (no lone surrogates)")
    size = len(value.encode("utf-8"))
    if size > MAX_SECRET_VALUE_BYTES:
        raise ProtocolError(TOO_LARGE, f"'{name}' is {size:,} bytes; the limit is {MAX_SECRET_VALUE_BYTES:,} bytes (64 KiB)")
    return value


def _check_requirements(name, value):
    """A list of PEP 508 requirements (packages.parse_requirements: names and versions only)."""
    if not isinstance(value, list):
        raise ValueError(f"'{name}' must be a list of requirements (strings such as \"seaborn>=0.13\")")
    try:
        return parse_requirements(value)
    except RequirementsError as exc:
        raise ValueError(f"'{name}': {exc}") from None


MAX_CURSOR_BYTES = 2048


def _check_yjs_update(name, value):
    """A base64 Yjs update, decoded; at most about twice the largest code (a paste plus its
    deletion), so one keystroke frame can never carry more."""
    if not isinstance(value, str):
        raise ValueError(f"'{name}' must be a base64 string")
    limit = 2 * settings.MAX_CODE_BYTES + 65536
    if len(value) > limit * 4 // 3 + 4:
        raise ProtocolError(TOO_LARGE, f"'{name}' is larger than {limit:,} bytes")
    try:
        data = base64.b64decode(value, validate=True)
    except (ValueError, binascii.Error):
        raise ValueError(f"'{name}' is not valid base64") from None
    if not data:
        raise ValueError(f"'{name}' is empty")
    return data





def _check_offset(name, value):
    """A position in a cell's code, in UTF-16 code units (as the page's editor counts); that it
    lies within the code is checked in parse()."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= settings.MAX_CODE_BYTES:
        raise ValueError(f"'{name}' must be a whole number from 0 to the length of 'code'")
    return value


def utf16_length(text):
    return len(text) + sum(1 for char in text if ord(char) > 0xFFFF) if not text.isascii() else len(text)


def _check_event_id(name, value):
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_SAFE_INTEGER:
        raise ValueError(f"'{name}' must be a whole number from 1 to {MAX_SAFE_INTEGER}")
    return value


def _check_limit(name, value):
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 100:
        raise ValueError(f"'{name}' must be a whole number from 1 to 100")
    return value


def _check_version_name(name, value):
    if not isinstance(value, str) or not value.strip() or len(value) > NOTEBOOK_NAME_MAX:
        raise ValueError(f"'{name}' must be a name of 1 to {NOTEBOOK_NAME_MAX} characters")
    return _check_text(name, value.strip())


def _check_widget_index(name, value):
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 1000:
        raise ValueError(f"'{name}' must be a whole number from 0 to 999")
    return value


def _check_input_value(name, value):
    """Any JSON value of modest size; the widget's own rules (kernel/ui.py) are checked later."""
    if len(json.dumps(value)) > 16384:
        raise ValueError(f"'{name}' is larger than 16 KiB")
    stack = [value]
    while stack:  # every string inside, keys too: stored as JSON, relayed through msgpack
        item = stack.pop()
        if isinstance(item, str):
            _check_text(name, item)
        elif isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
    return value


def _check_generation(name, value):
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 2**31:
        raise ValueError(f"'{name}' must be a whole number from 0 to {2**31}")
    return value


def _check_cursor(name, value):
    """Opaque to the server (the page's Yjs relative positions), but small JSON that the
    channel layer can carry (msgpack refuses lone surrogates, in keys as in values)."""
    if len(json.dumps(value)) > MAX_CURSOR_BYTES:
        raise ValueError(f"'{name}' is larger than {MAX_CURSOR_BYTES} bytes")
    if not _encodable(json.dumps(value, ensure_ascii=False)):
        raise ValueError(f"'{name}' must be valid Unicode (no lone surrogates)")
    return value


CHECKS = {
    "cell_id": _check_cell_id,
    "code": _check_code,
    "cell_type": _check_cell_type,
    "identifier": _check_identifier,
    "connection": _check_connection,
    "requirements": _check_requirements,
    "file_path": _check_file_path,
    "yjs_update": _check_yjs_update,
    "generation": _check_generation,
    "cursor": _check_cursor,
    "event_id": _check_event_id,
    "limit": _check_limit,
    "version_name": _check_version_name,
    "widget_index": _check_widget_index,
    "offset": _check_offset,
    "input_value": _check_input_value,
    "secret_name": _check_secret_name,
    "secret_value": _check_secret_value,
}


def _valid_request_id(value):
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        return False
    if isinstance(value, int):  # echoed through the channel layer (msgpack: 64 bits) and to JavaScript
        return abs(value) <= MAX_SAFE_INTEGER
    return len(value) <= MAX_REQUEST_ID and _encodable(value)


def parse(text):
    """Parse one client frame into a ClientMessage, or raise ProtocolError."""
    if text is None:
        raise ProtocolError(INVALID_MESSAGE, "Messages must be JSON text frames, not binary.")
    try:
        data = json.loads(text)
    except (ValueError, RecursionError):
        raise ProtocolError(INVALID_JSON, "The message is not valid JSON.") from None
    if not isinstance(data, dict):
        raise ProtocolError(INVALID_MESSAGE, "A message must be a JSON object with a 'type'.")
    request_id = data.get("requestId")
    if request_id is not None and not _valid_request_id(request_id):
        # Never echoed back: a lone surrogate could not even be sent.
        raise ProtocolError(INVALID_FIELD, f"'requestId' must be a string or integer of at most {MAX_REQUEST_ID} characters.")
    msg_type = data.get("type")
    if not isinstance(msg_type, str):
        raise ProtocolError(INVALID_MESSAGE, "A message must have a string 'type'.", request_id)
    schema = MESSAGE_SCHEMAS.get(msg_type)
    if schema is None:
        known = ", ".join(sorted(MESSAGE_SCHEMAS))
        raise ProtocolError(UNKNOWN_TYPE, f"Unknown message type {msg_type[:60]!r}; known types: {known}.", request_id)
    unknown = sorted(set(data) - set(schema) - {"type", "requestId"})
    if unknown:
        raise ProtocolError(INVALID_FIELD, f"Unexpected field(s) for {msg_type}: {', '.join(repr(u[:40]) for u in unknown[:5])}.", request_id)
    fields = {}
    for name, spec in schema.items():
        if name not in data:
            if spec.required:
                raise ProtocolError(INVALID_FIELD, f"{msg_type} needs '{name}'.", request_id)
            continue
        value = data[name]
        if value is None and spec.nullable:
            fields[name] = None
            continue
        try:
            fields[name] = CHECKS[spec.kind](name, value)
        except ProtocolError as exc:
            exc.request_id = request_id
            raise
        except ValueError as exc:
            raise ProtocolError(INVALID_FIELD, f"{msg_type}: {exc}.", request_id) from None
    if msg_type == "create_cell" and fields.get("afterCellId") and fields.get("beforeCellId"):
        raise ProtocolError(INVALID_FIELD, "create_cell takes 'afterCellId' or 'beforeCellId', not both.", request_id)
    if msg_type == "cell_update" and "code" not in fields and "resultVariable" not in fields:
        raise ProtocolError(INVALID_FIELD, "cell_update needs 'code' or 'resultVariable'.", request_id)
    if msg_type in ("complete", "inspect") and fields["cursor"] > utf16_length(fields["code"]):
        raise ProtocolError(INVALID_FIELD, f"{msg_type}: 'cursor' is past the end of 'code'.", request_id)
    return ClientMessage(msg_type, fields, request_id)


def encode_error(code, message, request_id=None):
    """An `error` frame's text, ASCII-escaped: whatever it quotes from the client, it can be sent."""
    return json.dumps(error_message(code, message, request_id), separators=(",", ":"))


def error_message(code, message, request_id=None):
    payload = {"type": "error", "code": code, "message": message}
    if request_id is not None:
        payload["requestId"] = request_id
    return payload


# One encoder for every event: json.dumps() with options builds a new encoder per call.
_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)


def dumps(payload):
    return _ENCODER.encode(payload)


def frame_groups(texts, budget=FRAME_BYTES_BUDGET):
    """Encoded events packed, in order, into groups whose `batch` frame stays within `budget`
    bytes (one event alone is never split: the worker keeps each under the frame limit)."""
    groups, current, size = [], [], 0
    for text in texts:
        length = len(text.encode("utf-8")) + 2  # and its ", " separator
        if current and size + length > budget:
            groups.append(current)
            current, size = [], 0
        current.append(text)
        size += length
    if current:
        groups.append(current)
    return groups


def peek_request_id(text):
    """The requestId of a frame that will not be handled, if it is a valid one (else None)."""
    if not text or len(text) > 65536:
        return None
    try:
        data = json.loads(text)
    except (ValueError, RecursionError):
        return None
    request_id = data.get("requestId") if isinstance(data, dict) else None
    return request_id if request_id is not None and _valid_request_id(request_id) else None
