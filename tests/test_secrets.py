"""A notebook's secrets (docs/protocol.md#secrets, docs/security.md#secrets): editors set them,
cells read them from their environment, and the value reaches no stored row, frame, page,
export, history entry, admin page or log line; a printed value shows as `[secret NAME]`."""
import json
import secrets as random_tokens

import pytest
from channels.db import database_sync_to_async
from cryptography.fernet import Fernet
from django.db import connection
from django.test import Client

from notebooks_app import protocol, vault
from notebooks_app.kernel.outputs import Redactor
from notebooks_app.models import EVENT_SECRET_SET, Notebook, NotebookEvent, NotebookSecret
from tests.conftest import create, run_and_wait, text_output

NAME = "OPENAI_API_KEY"


def fresh_value():
    """A value no test run has seen: found anywhere, it leaked from this test."""
    return "sk-test-" + random_tokens.token_hex(16)


def recording(client):
    """Every frame `client` receives from now on, as text (the socket's raw JSON, decoded)."""
    frames, receive = [], client.receive_frame

    async def receive_frame(timeout=None):
        frame = await receive(timeout)
        frames.append(json.dumps(frame, ensure_ascii=False))
        return frame

    client.receive_frame = receive_frame
    return frames


@database_sync_to_async
def database_text():
    """Every row of every table as PostgreSQL prints it (bytea as hex), in one string."""
    texts = []
    with connection.cursor() as cursor:
        for table in connection.introspection.table_names():
            quoted = connection.ops.quote_name(table)
            cursor.execute(f"SELECT t::text FROM {quoted} t")
            texts.extend(row[0] for row in cursor.fetchall())
    return "\n".join(texts)


def leaked(value, text):
    return value in text or value.encode().hex() in text


async def set_secret(client, name, value):
    reply = await client.request(type="set_secret", name=name, value=value)
    assert reply["type"] == "secrets_updated", reply
    return reply


# --- names, values and the vault, without a kernel ---------------------------------------------
@pytest.mark.parametrize(
    "name, says",
    [
        ("openai_key", "environment variable name"),
        ("1KEY", "environment variable name"),
        ("MY-KEY", "environment variable name"),
        ("", "environment variable name"),
        ("K" * 65, "at most 64"),
        ("PATH", "set by the sandbox"),
        ("HOME", "set by the sandbox"),
        ("PYTHONSTARTUP", "set by the sandbox"),
        ("MPLBACKEND", "set by the sandbox"),
        ("NOTEBOOK_OUTPUT_CAP", "set by the sandbox"),
        ("LD_PRELOAD", "set by the sandbox"),
    ],
)
def test_a_name_must_be_an_environment_variable_the_sandbox_does_not_set(name, says):
    with pytest.raises(protocol.ProtocolError) as caught:
        protocol.parse(json.dumps({"type": "set_secret", "name": name, "value": "v"}))
    assert caught.value.code == protocol.INVALID_FIELD and says in caught.value.message


@pytest.mark.parametrize(
    "value, code",
    [("", protocol.INVALID_FIELD), ("a\x00b", protocol.INVALID_FIELD), ("x" * (64 * 1024 + 1), protocol.TOO_LARGE), (42, protocol.INVALID_FIELD)],
)
def test_a_bad_value_is_refused_without_quoting_it(value, code):
    with pytest.raises(protocol.ProtocolError) as caught:
        protocol.parse(json.dumps({"type": "set_secret", "name": NAME, "value": value}))
    assert caught.value.code == code
    assert not (isinstance(value, str) and len(value) > 2 and value in caught.value.message)


def test_the_vault_encrypts_with_its_own_key_and_rotates(settings):
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    settings.SECRETS_KEY = old
    token = vault.encrypt("sk-rotate-me")
    assert b"sk-rotate-me" not in token and vault.decrypt(token) == "sk-rotate-me"
    settings.SECRETS_KEY = f"{new},{old}"  # rotating: the new key first, the old one still opens
    assert vault.decrypt(token) == "sk-rotate-me"
    rotated = vault.rotate(token)
    settings.SECRETS_KEY = new
    assert vault.decrypt(rotated) == "sk-rotate-me"
    with pytest.raises(vault.Unreadable):
        vault.decrypt(token)
    assert settings.SECRETS_KEY != settings.SECRET_KEY


def test_redaction_catches_a_value_split_across_writes_and_its_escaped_forms():
    redactor = Redactor([(NAME, "sk-abc<def>"), ("SHORT", "abc")])
    stream = redactor.stream()
    printed = "".join([stream.feed("key: sk-ab"), stream.feed("c<de"), stream.feed("f> done s"), stream.flush()])
    assert printed == f"key: [secret {NAME}] done s"
    assert redactor.text("<td>sk-abc&lt;def&gt;</td>") == f"<td>[secret {NAME}]</td>"
    assert redactor.value({"data": ["'sk-abc<def>'"]}) == {"data": [f"'[secret {NAME}]'"]}
    assert redactor.text("abc") == "abc"  # under 4 characters: too common to redact


@pytest.mark.django_db
def test_the_migration_encrypts_connections_stored_in_clear(notebook):
    Notebook.objects.filter(pk=notebook.pk).update(db_connection="postgresql://ann:hunter2@db/sales")
    assert vault.encrypt_clear_connections(Notebook) == 1
    notebook.refresh_from_db()
    assert notebook.db_connection.startswith(vault.TOKEN_PREFIX) and "hunter2" not in notebook.db_connection
    assert notebook.connection_string == "postgresql://ann:hunter2@db/sales"
    assert notebook.db_connection_display == "postgresql://ann:****@db/sales"
    assert vault.encrypt_clear_connections(Notebook) == 0  # run twice, encrypted once
    vault.decrypt_connections(Notebook)  # the migration's reverse
    notebook.refresh_from_db()
    assert notebook.db_connection == "postgresql://ann:hunter2@db/sales"


# --- the real worker -------------------------------------------------------------------------------
@pytest.mark.django_db(transaction=True)
async def test_a_cell_reads_its_secret_and_the_value_leaks_nowhere(ws, live_kernel, notebook, users, admin_user, caplog):
    value, password = fresh_value(), "pw-" + random_tokens.token_hex(8)
    alice, bob, carol = await ws(users["alice"], notebook), await ws(users["bob"], notebook), await ws(users["carol"], notebook)
    frames = [recording(client) for client in (alice, bob, carol)]
    reply = await set_secret(alice, NAME, value)
    assert [secret["name"] for secret in reply["secrets"]] == [NAME] and reply["secrets"][0]["by"] == "alice"
    assert (await alice.request(type="update_db_connection", connectionString=f"postgresql://ann:{password}@127.0.0.1:5999/sales"))["connected"]

    cell = await create(alice, f'import os\nkey = os.environ["{NAME}"]\nprint("the key is", key)\n(len(key), key)')
    assert (await run_and_wait(alice, cell))[-1]["status"] == "success", alice.state[cell]
    assert alice.state[cell]["stdout"] == f"the key is [secret {NAME}]\n"
    assert text_output(alice, cell) == f"({len(value)}, '[secret {NAME}]')"  # the real value, redacted
    failing = await create(alice, 'raise ValueError("bad key " + key)')
    assert (await run_and_wait(alice, failing))[-1]["status"] == "error"
    assert alice.state[failing]["error"]["evalue"] == f"bad key [secret {NAME}]"
    for client in (bob, carol):  # everyone sees the redacted result
        await client.wait_for(lambda e: e["type"] == "cell_status" and e["cellId"] == failing and e["status"] == "error")
        assert client.state[cell]["stdout"] == f"the key is [secret {NAME}]\n"
    state = await carol.request(type="sync")
    assert state["notebook"]["secrets"][0]["name"] == NAME and "value" not in state["notebook"]["secrets"][0]
    history = await alice.request(type="history")
    assert any(event["kind"] == EVENT_SECRET_SET for event in history["events"]), history
    assert not leaked(value, json.dumps(history))

    # Frames, the database, the pages, the exports, the admin and the logs.
    for received in frames:
        text = "\n".join(received)
        assert received and NAME in text and not leaked(value, text) and password not in text
    dump = await database_text()
    assert NAME in dump and not leaked(value, dump) and password not in dump

    def pages():
        seen = []
        for user in (users["alice"], users["carol"]):
            browser = Client()
            browser.force_login(user)
            seen.append(browser.get(f"/notebooks/{notebook.pk}/").content.decode())
            seen += [browser.get(f"/notebooks/{notebook.pk}/export/{fmt}/").content.decode() for fmt in ("ipynb", "py", "html")]
            seen.append(browser.get(f"/notebooks/{notebook.pk}/cells/{cell}/stdout/").content.decode())
        admin = Client()
        admin.force_login(admin_user)
        secret = NotebookSecret.objects.get(notebook=notebook, name=NAME)
        for url in ("/admin/notebooks_app/notebooksecret/", f"/admin/notebooks_app/notebooksecret/{secret.pk}/change/", f"/admin/notebooks_app/notebook/{notebook.pk}/change/"):
            response = admin.get(url)
            assert response.status_code == 200, url
            seen.append(response.content.decode())
        return seen

    seen = await database_sync_to_async(pages)()
    assert NAME in seen[0] and "[secret OPENAI_API_KEY]" in seen[1] and NAME in seen[-2]
    for page in seen:
        assert not leaked(value, page) and password not in page
    logs = live_kernel.log_path.read_text(errors="replace") + caplog.text  # the worker's, and this process's (Daphne's part)
    assert "notebook" in logs and not leaked(value, logs) and password not in logs


@pytest.mark.django_db(transaction=True)
async def test_changing_a_secret_restarts_the_kernel_with_the_new_value(ws, notebook, users):
    alice, bob = await ws(users["alice"], notebook), await ws(users["bob"], notebook)
    first, second = fresh_value(), fresh_value() + "-longer"
    await set_secret(alice, NAME, first)
    cell = await create(alice, f'import os\nlen(os.environ.get("{NAME}", ""))')
    await run_and_wait(alice, cell)
    assert text_output(alice, cell) == str(len(first))

    await set_secret(bob, NAME, second)  # an editor replaces it
    restarted = await alice.wait_for(lambda e: e["type"] == "kernel_restarted")
    assert "secrets" in restarted[-1]["reason"]
    await alice.wait_status(cell, "stale")
    await run_and_wait(alice, cell)
    assert text_output(alice, cell) == str(len(second))

    reply = await alice.request(type="delete_secret", name=NAME)
    assert reply["type"] == "secrets_updated" and reply["secrets"] == []
    await alice.wait_for(lambda e: e["type"] == "kernel_restarted")
    await run_and_wait(alice, cell)
    assert text_output(alice, cell) == "0"
    kinds = await database_sync_to_async(lambda: list(NotebookEvent.objects.filter(notebook=notebook, kind__startswith="secret").order_by("id").values_list("kind", "before", "after")))()
    assert kinds == [("secret_set", None, {"name": NAME}), ("secret_set", {"name": NAME}, {"name": NAME}), ("secret_deleted", {"name": NAME}, None)]


@pytest.mark.django_db(transaction=True)
async def test_viewers_see_names_only_and_bad_input_changes_nothing(ws, notebook, users):
    alice, carol = await ws(users["alice"], notebook), await ws(users["carol"], notebook)
    await set_secret(alice, NAME, fresh_value())
    before = await database_sync_to_async(lambda: Notebook.objects.get(pk=notebook.pk).revision)()
    for client, message, code in [
        (carol, {"type": "set_secret", "name": "MINE", "value": "sk-viewer"}, "forbidden"),
        (carol, {"type": "delete_secret", "name": NAME}, "forbidden"),
        (alice, {"type": "set_secret", "name": "openai-key", "value": "sk-x"}, "invalid_field"),
        (alice, {"type": "set_secret", "name": "LD_PRELOAD", "value": "/tmp/evil.so"}, "invalid_field"),
        (alice, {"type": "set_secret", "name": "BIG", "value": "x" * (64 * 1024 + 1)}, "too_large"),
        (alice, {"type": "delete_secret", "name": "NEVER_SET"}, "invalid_field"),
    ]:
        reply = await client.request(**message)
        assert reply["type"] == "error" and reply["code"] == code, (message["name"], reply)
    rows = await database_sync_to_async(lambda: list(NotebookSecret.objects.filter(notebook=notebook).values_list("name", flat=True)))()
    assert rows == [NAME]
    assert await database_sync_to_async(lambda: Notebook.objects.get(pk=notebook.pk).revision)() == before

    def viewer_page():
        browser = Client()
        browser.force_login(users["carol"])
        return browser.get(f"/notebooks/{notebook.pk}/").content.decode()

    page = await database_sync_to_async(viewer_page)()
    assert f'<code class="secret-name">{NAME}</code>' in page and 'data-can-edit="false"' in page
