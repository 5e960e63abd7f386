"""Showing a database connection string without its password, everywhere."""
import re
from urllib.parse import urlsplit, urlunsplit

_PASSWORD_IN_KV = re.compile(r"(password\s*=\s*)('[^']*'|\S+)", re.IGNORECASE)


def mask_connection_string(value):
    """Return `value` with any password replaced by '****' ('' stays '')."""
    if not value:
        return ""
    try:
        parts = urlsplit(value)
    except ValueError:
        return "****"
    if parts.scheme and parts.netloc and "@" in parts.netloc:
        userinfo, _, hostport = parts.netloc.rpartition("@")
        user, sep, _password = userinfo.partition(":")
        netloc = f"{user}:****@{hostport}" if sep else f"{user}@{hostport}"
        return urlunsplit(parts._replace(netloc=netloc))
    # libpq key=value strings ("host=... password=...")
    return _PASSWORD_IN_KV.sub(r"\1****", value)


def scrub(text, connection_string):
    """Remove the password of `connection_string` from an arbitrary message."""
    if not text or not connection_string:
        return text
    try:
        password = urlsplit(connection_string).password
    except ValueError:
        password = None
    if password:
        text = text.replace(password, "****")
    return _PASSWORD_IN_KV.sub(r"\1****", text)
