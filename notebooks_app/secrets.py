"""Showing a database connection string without its password, everywhere."""
import re
from urllib.parse import unquote, urlsplit, urlunsplit

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
    """`text` (an error message, a log line) without the password of `connection_string`,
    raw or URL-decoded, nor any `password=...` pair.  No Django: the runner uses it too."""
    if not text or not connection_string:
        return text
    try:
        password = urlsplit(connection_string).password
    except ValueError:
        password = None
    if password:
        for form in {password, unquote(password)}:
            if form:
                text = text.replace(form, "****")
    return _PASSWORD_IN_KV.sub(r"\1****", text)
