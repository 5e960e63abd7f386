"""Secrets at rest: notebooks' secrets and database connections encrypted with SECRETS_KEY.

Fernet (AES-128-CBC with an HMAC-SHA256, from `cryptography`) under settings.SECRETS_KEY, which
is never SECRET_KEY. SECRETS_KEY may list several keys while rotating: the first encrypts, every
one decrypts, and `rotate_all` re-encrypts every stored value under the first (docs/operations.md).
This module only turns clear text into tokens and back; it never logs, shows or sends a value.
Not notebooks_app/secrets.py, which runs inside the sandbox and knows nothing of Django.
"""
import logging

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings

logger = logging.getLogger(__name__)

# Every Fernet token starts with its version byte 0x80, base64: "gAAAAA".
TOKEN_PREFIX = "gAAAAA"


class Unreadable(Exception):
    """A stored value no key of SECRETS_KEY opens (a key dropped too soon, or not a token)."""


_cipher = None
_cipher_keys = None


def cipher():
    """The MultiFernet of SECRETS_KEY, made again when the setting changes (tests override it)."""
    global _cipher, _cipher_keys
    if _cipher_keys != settings.SECRETS_KEY:
        keys = [key.strip() for key in settings.SECRETS_KEY.split(",") if key.strip()]
        _cipher, _cipher_keys = MultiFernet([Fernet(key) for key in keys]), settings.SECRETS_KEY
    return _cipher


def encrypt(text):
    """`text` (a str) as a token (bytes) under the current key."""
    return cipher().encrypt(text.encode("utf-8"))


def _as_bytes(token):
    """A stored token as bytes: a BinaryField reads as memoryview, db_connection as str."""
    if isinstance(token, memoryview):
        return token.tobytes()
    if isinstance(token, str):
        return token.encode("ascii", "replace")
    return token


def decrypt(token):
    """The clear text of a token (bytes, memoryview or str); Unreadable if no key opens it."""
    try:
        return cipher().decrypt(_as_bytes(token)).decode("utf-8")
    except InvalidToken:
        raise Unreadable("a stored secret cannot be decrypted with SECRETS_KEY (was a key removed before rotate_all ran?)") from None


def rotate(token):
    """`token` encrypted again under the current key (its clear text never leaves this call)."""
    try:
        return cipher().rotate(_as_bytes(token))
    except InvalidToken:
        raise Unreadable("a stored secret cannot be decrypted with SECRETS_KEY") from None


def encrypt_connection(connection_string):
    """What Notebook.db_connection stores: '' for none, else the token as text."""
    return encrypt(connection_string).decode("ascii") if connection_string else ""


def decrypt_connection(stored):
    """The clear connection string of Notebook.db_connection ('' for none)."""
    return decrypt(stored) if stored else ""


def encrypt_clear_connections(notebook_model):
    """Migration 0012: every database connection still stored in clear, encrypted in place
    (`notebook_model`: the migration's historical Notebook, or the real one). Returns how many."""
    rows = notebook_model.objects.exclude(db_connection="").exclude(db_connection__startswith=TOKEN_PREFIX)
    count = 0
    for pk, clear in rows.values_list("pk", "db_connection"):
        notebook_model.objects.filter(pk=pk).update(db_connection=encrypt_connection(clear))
        count += 1
    return count


def decrypt_connections(notebook_model):
    """Migration 0012 reversed: every database connection back in clear."""
    for pk, stored in notebook_model.objects.filter(db_connection__startswith=TOKEN_PREFIX).values_list("pk", "db_connection"):
        notebook_model.objects.filter(pk=pk).update(db_connection=decrypt_connection(stored))


def rotate_all():
    """Every secret and every database connection re-encrypted under SECRETS_KEY's first key, in
    one transaction; returns how many values were rewritten. Run it after putting a new key
    first, before removing the old one (docs/operations.md)."""
    from django.db import transaction

    from .models import Notebook, NotebookSecret

    count = 0
    with transaction.atomic():
        for secret in NotebookSecret.objects.select_for_update().only("pk", "value"):
            NotebookSecret.objects.filter(pk=secret.pk).update(value=rotate(secret.value))
            count += 1
        for pk, stored in Notebook.objects.select_for_update().exclude(db_connection="").values_list("pk", "db_connection"):
            Notebook.objects.filter(pk=pk).update(db_connection=rotate(stored).decode("ascii"))
            count += 1
    logger.info("re-encrypted %s stored secrets under the current SECRETS_KEY", count)
    return count
