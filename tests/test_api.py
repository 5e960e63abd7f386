"""The REST API under /api/v1/ (docs/api.md): tokens, scopes and roles, the one edit path it shares
with the WebSocket (same rows, same history, live events on open pages), runs on the real kernel
worker, bad input, the rate limit, and the OpenAPI document."""
import json
import re
from datetime import timedelta
from pathlib import Path

import pytest
from channels.db import database_sync_to_async
from django.test import Client
from django.utils import timezone

from notebooks_app.api.errors import ERROR_CODES
from notebooks_app.models import ApiToken, Cell, Notebook, NotebookEvent
from tests.conftest import create
from tests.waiting import eventually

DOCS = Path(__file__).resolve().parent.parent / "docs" / "api.md"


def issue(user, scopes=("read", "run", "edit"), **options):
    return ApiToken.objects.issue(user, name=f"t{ApiToken.objects.count()}", scopes=list(scopes), **options)[1]


def bearer(token):
    return {"Authorization": f"Bearer {token}"}


def call(method, path, token=None, body=None, *, raw=None, client=None):
    client = client or Client()
    headers = bearer(token) if token else {}
    data = raw if raw is not None else (json.dumps(body) if body is not None else None)
    kwargs = {"content_type": "application/json", "headers": headers}
    if data is not None:
        kwargs["data"] = data
    return getattr(client, method)(path, **kwargs)


def error_of(response):
    return response.json()["error"]["code"]


def text_plain(shown):
    return next((o["data"] for o in shown["outputs"] if o["mimeType"] == "text/plain"), None)


def cell(notebook, position, code, **fields):
    return Cell.objects.create(notebook=notebook, position=position, code=code, **fields)


def snapshot(notebook):
    """What a refused request must leave as it was."""
    rows = list(Cell.objects.filter(notebook=notebook).order_by("position").values_list("id", "position", "type", "code", "status"))
    return rows, Notebook.objects.get(pk=notebook.pk).revision, NotebookEvent.objects.filter(notebook=notebook).count()


# --- authentication, scopes, roles ----------------------------------------------------------------


@pytest.mark.django_db
class TestWhoMayDoWhat:
    def test_no_token_is_401_with_a_bearer_challenge(self, notebook):
        response = call("get", f"/api/v1/notebooks/{notebook.pk}")
        assert response.status_code == 401 and error_of(response) == "unauthenticated"
        assert response["WWW-Authenticate"].startswith("Bearer")

    @pytest.mark.parametrize("header", ["Bearer nbk_not-a-real-token", "Bearer", "Bearer two words", "Bearer ünï"])
    def test_an_unknown_or_malformed_token_is_401(self, notebook, header):
        response = Client().get(f"/api/v1/notebooks/{notebook.pk}", headers={"Authorization": header})
        assert response.status_code == 401 and error_of(response) == "unauthenticated"

    def test_revoked_and_expired_tokens_are_401(self, users, notebook):
        revoked = issue(users["alice"])
        ApiToken.objects.filter(owner=users["alice"]).update(revoked_at=timezone.now())
        expired = issue(users["alice"], expires_in_days=1)
        ApiToken.objects.filter(revoked_at__isnull=True).update(expires_at=timezone.now() - timedelta(seconds=1))
        for token, message in [(revoked, "revoked"), (expired, "expired")]:
            response = call("get", f"/api/v1/notebooks/{notebook.pk}", token)
            assert response.status_code == 401 and message in response.json()["error"]["message"]

    def test_a_token_of_an_inactive_user_is_401(self, users, notebook):
        token = issue(users["alice"])
        users["alice"].is_active = False
        users["alice"].save()
        assert call("get", "/api/v1/notebooks", token).status_code == 401

    @pytest.mark.parametrize(
        "scopes, method, path, body",
        [
            (["read"], "post", "/cells", {"code": "x = 1"}),
            (["read", "edit"], "post", "/run", None),
            (["run"], "get", "", None),
            (["run", "read"], "patch", "/cells/{cell}", {"code": "x = 2"}),
        ],
    )
    def test_a_token_without_the_scope_is_403(self, users, notebook, scopes, method, path, body):
        first = cell(notebook, 1, "x = 1")
        before = snapshot(notebook)
        response = call(method, f"/api/v1/notebooks/{notebook.pk}{path.format(cell=first.pk)}", issue(users["alice"], scopes), body)
        assert response.status_code == 403 and error_of(response) == "forbidden"
        assert "scope" in response.json()["error"]["message"]
        assert snapshot(notebook) == before

    @pytest.mark.parametrize("target", ["theirs", "unknown", "not-an-id"])
    def test_a_notebook_the_owner_cannot_see_is_404_like_an_unknown_one(self, users, notebook, target):
        notebook_id = {"theirs": notebook.pk, "unknown": "00000000-0000-0000-0000-000000000000", "not-an-id": "not-an-id"}[target]
        token = issue(users["dave"])
        for method, path, body in [("get", "", None), ("post", "/cells", {"code": "x = 1"}), ("post", "/run", None)]:
            response = call(method, f"/api/v1/notebooks/{notebook_id}{path}", token, body)
            assert response.status_code == 404 and error_of(response) == "not_found", (method, path)
        assert not Cell.objects.exists()

    def test_a_viewer_token_reads_but_cannot_edit_or_run(self, users, notebook):
        first = cell(notebook, 1, "x = 1")
        token = issue(users["carol"])  # carol views; her token has every scope
        assert call("get", f"/api/v1/notebooks/{notebook.pk}", token).json()["role"] == "viewer"
        before = snapshot(notebook)
        for method, path, body in [
            ("post", "/cells", {"code": "y = 2"}),
            ("patch", f"/cells/{first.pk}", {"code": "x = 2"}),
            ("delete", f"/cells/{first.pk}", None),
            ("post", f"/cells/{first.pk}/move", {"after": None}),
            ("post", f"/cells/{first.pk}/run", None),
            ("post", "/run", None),
        ]:
            response = call(method, f"/api/v1/notebooks/{notebook.pk}{path}", token, body)
            assert response.status_code == 403 and error_of(response) == "forbidden", (method, path)
            assert response.json()["error"]["message"] == "You may view this notebook but not change it."
        assert snapshot(notebook) == before

    def test_an_editor_token_edits(self, users, notebook):
        response = call("post", f"/api/v1/notebooks/{notebook.pk}/cells", issue(users["bob"]), {"code": "z = 3"})
        assert response.status_code == 201
        assert Cell.objects.get(notebook=notebook).code == "z = 3"
        assert NotebookEvent.objects.get(notebook=notebook).user == users["bob"]

    def test_a_logged_in_browser_uses_the_api_with_the_csrf_token(self, users, notebook):
        browser = Client(enforce_csrf_checks=True)
        browser.force_login(users["alice"])
        assert browser.get(f"/api/v1/notebooks/{notebook.pk}").status_code == 200
        path = f"/api/v1/notebooks/{notebook.pk}/cells"
        refused = browser.post(path, data=json.dumps({"code": "a = 1"}), content_type="application/json")
        assert refused.status_code == 403 and "CSRF" in refused.json()["error"]["message"]
        browser.get("/accounts/tokens/")  # any page sets the CSRF cookie
        csrf = browser.cookies["csrftoken"].value
        accepted = browser.post(path, data=json.dumps({"code": "a = 1"}), content_type="application/json", headers={"X-CSRFToken": csrf})
        assert accepted.status_code == 201


# --- reading ----------------------------------------------------------------------------------------


@pytest.mark.django_db
class TestReading:
    def test_the_list_holds_what_the_owner_may_read_with_role_and_cell_count(self, users, notebook):
        Notebook.objects.create(name="Dave's own", owner=users["dave"])
        cell(notebook, 1, "a = 1")
        cell(notebook, 2, "b = 2")
        listing = call("get", "/api/v1/notebooks", issue(users["carol"])).json()
        assert listing["count"] == 1
        (only,) = listing["results"]
        assert (only["id"], only["name"], only["role"], only["owner"], only["cellCount"]) == (str(notebook.pk), "Shared analysis", "viewer", "alice", 2)
        assert only["updatedAt"]

    def test_the_list_is_paginated(self, users):
        for index in range(3):
            Notebook.objects.create(name=f"n{index}", owner=users["dave"])
        token = issue(users["dave"])
        first = call("get", "/api/v1/notebooks?pageSize=2", token).json()
        assert first["count"] == 3 and len(first["results"]) == 2 and first["next"]
        second = Client().get(first["next"], headers=bearer(token)).json()
        assert len(second["results"]) == 1 and second["next"] is None
        assert {n["name"] for n in first["results"] + second["results"]} == {"n0", "n1", "n2"}

    def test_a_notebook_reads_as_its_cells_in_order_with_outputs_and_inputs(self, users, notebook):
        slider = {"mimeType": "application/vnd.notebook.ui+json", "data": {"id": "X:0", "kind": "slider", "label": "T", "props": {"start": 0, "stop": 9, "step": 1}, "value": 2}}
        second = cell(notebook, 2, "b = a + 1\nb", status="success", outputs=[{"mimeType": "text/plain", "data": "2"}], reads=["a"], writes=["b"], stdout="hi\n")
        first = cell(notebook, 1, "from reactive_notebook import ui\na = ui.slider(0, 9)", status="success", writes=["a"])
        slider["data"]["id"] = f"{first.pk}:0"
        first.outputs, first.inputs = [slider], {f"{first.pk}:0": 7}
        first.save()
        body = call("get", f"/api/v1/notebooks/{notebook.pk}", issue(users["bob"], ["read"])).json()
        assert (body["id"], body["name"], body["role"], body["revision"]) == (str(notebook.pk), "Shared analysis", "editor", 0)
        assert [c["id"] for c in body["cells"]] == [str(first.pk), str(second.pk)]
        b = body["cells"][1]
        assert (b["type"], b["code"], b["status"], b["outputs"], b["stdout"], b["reads"], b["writes"], b["stdoutRef"]) == ("python", "b = a + 1\nb", "success", [{"mimeType": "text/plain", "data": "2"}], "hi\n", ["a"], ["b"], None)
        assert body["cells"][0]["inputs"] == [{"id": f"{first.pk}:0", "kind": "slider", "label": "T", "props": {"start": 0, "stop": 9, "step": 1}, "value": 7}]

    def test_large_outputs_and_long_stdout_come_by_url_readable_with_the_token(self, users, notebook):
        from notebooks_app.constants import STATE_STDOUT_LIMIT
        from notebooks_app.models import OutputBlob

        digest = "ab" * 32
        big = cell(notebook, 1, "big", outputs=[{"mimeType": "text/plain", "ref": digest, "size": 70000, "url": f"/notebooks/{notebook.pk}/outputs/{digest}/"}], stdout="x" * STATE_STDOUT_LIMIT + "tail")
        OutputBlob.objects.create(cell=big, digest=digest, mime_type="text/plain", data="y" * 70000)
        token = issue(users["carol"], ["read"])
        (shown,) = call("get", f"/api/v1/notebooks/{notebook.pk}", token).json()["cells"]
        assert shown["outputs"][0]["url"] == f"/notebooks/{notebook.pk}/outputs/{digest}/"  # as stored, for the page
        assert Client().get(shown["outputs"][0]["apiUrl"], headers=bearer(token)).content == b"y" * 70000
        assert len(shown["stdout"]) == STATE_STDOUT_LIMIT and shown["stdout"].endswith("tail")
        assert shown["stdoutRef"]["size"] == STATE_STDOUT_LIMIT + 4
        assert Client().get(shown["stdoutRef"]["apiUrl"], headers=bearer(token)).content.decode() == "x" * STATE_STDOUT_LIMIT + "tail"
        stranger = issue(users["dave"], ["read"])
        assert Client().get(shown["outputs"][0]["apiUrl"], headers=bearer(stranger)).status_code == 404

    def test_an_unknown_endpoint_is_a_json_404(self, users):
        response = call("get", "/api/v1/nothing/here", issue(users["alice"]))
        assert response.status_code == 404 and error_of(response) == "not_found"


# --- bad input -------------------------------------------------------------------------------------


@pytest.mark.django_db
class TestBadInput:
    @pytest.fixture
    def first(self, notebook):
        return cell(notebook, 1, "x = 1")

    @pytest.mark.parametrize(
        "method, path, body, raw, status, code",
        [
            ("patch", "/cells/00000000-0000-0000-0000-000000000000", {"code": "y"}, None, 404, "unknown_cell"),
            ("patch", "/cells/not-a-cell", {"code": "y"}, None, 404, "unknown_cell"),
            ("delete", "/cells/00000000-0000-0000-0000-000000000000", None, None, 404, "unknown_cell"),
            ("post", "/cells/00000000-0000-0000-0000-000000000000/run", None, None, 404, "unknown_cell"),
            ("post", "/cells/{first}/move", {"after": "00000000-0000-0000-0000-000000000000"}, None, 404, "unknown_cell"),
            ("post", "/cells/{first}/move", {"after": "{first}"}, None, 400, "invalid_field"),
            ("post", "/cells/{first}/move", {}, None, 400, "invalid_field"),
            ("post", "/cells", {"type": "cobol", "code": "x"}, None, 400, "invalid_field"),
            ("post", "/cells", {"code": 5}, None, 400, "invalid_field"),
            ("post", "/cells", {"code": "a\x00b"}, None, 400, "invalid_field"),
            ("post", "/cells", {"code": "x" * (256 * 1024 + 1)}, None, 400, "too_large"),
            ("post", "/cells", {"after": "{first}", "before": "{first}"}, None, 400, "invalid_field"),
            ("post", "/cells", {"after": "nope"}, None, 400, "invalid_field"),
            ("post", "/cells", {"Code": "x = 2"}, None, 400, "invalid_field"),
            ("post", "/cells", None, "{not json", 400, "invalid_json"),
            ("post", "/cells", None, "[1, 2]", 400, "invalid_field"),
            ("patch", "/cells/{first}", {}, None, 400, "invalid_field"),
            ("patch", "/cells/{first}", {"resultVariable": "df"}, None, 400, "invalid_field"),  # not a SQL cell
            ("patch", "/cells/{first}", {"resultVariable": "not an identifier"}, None, 400, "invalid_field"),
            ("post", "/run", {"parameters": {"a": 1}}, None, 400, "invalid_field"),
            ("put", "/cells/{first}", {"code": "y"}, None, 405, "method_not_allowed"),
        ],
    )
    def test_is_refused_with_a_json_error_and_changes_nothing(self, users, notebook, first, method, path, body, raw, status, code):
        def fill(value):
            return json.loads(json.dumps(value).replace("{first}", str(first.pk))) if value is not None else None

        before = snapshot(notebook)
        response = call(method, f"/api/v1/notebooks/{notebook.pk}{path.format(first=first.pk)}", issue(users["alice"]), fill(body), raw=raw)
        assert (response.status_code, error_of(response)) == (status, code), response.content[:300]
        assert response.json()["error"]["message"]
        assert snapshot(notebook) == before

    def test_code_over_the_limit_says_the_limit(self, users, notebook):
        response = call("post", f"/api/v1/notebooks/{notebook.pk}/cells", issue(users["alice"]), {"code": "é" * 140000})
        assert response.status_code == 400 and "the limit is 262,144 bytes" in response.json()["error"]["message"]

    def test_a_form_body_is_415(self, users, notebook):
        response = Client().post(f"/api/v1/notebooks/{notebook.pk}/cells", {"code": "x"}, headers=bearer(issue(users["alice"])))
        assert response.status_code == 415 and error_of(response) == "unsupported_media_type"


# --- the rate limit -------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_over_the_rate_limit_is_429_with_retry_after_per_token(users, notebook, settings):
    settings.API_RATE_LIMIT = "3/min"
    token, other = issue(users["alice"]), issue(users["alice"])
    statuses = [call("get", "/api/v1/notebooks", token).status_code for _ in range(3)]
    refused = call("get", "/api/v1/notebooks", token)
    assert statuses == [200, 200, 200]
    assert refused.status_code == 429 and error_of(refused) == "rate_limited"
    assert 1 <= int(refused["Retry-After"]) <= 60
    assert call("get", "/api/v1/notebooks", other).status_code == 200  # each token its own count


# --- the OpenAPI document and its page ---------------------------------------------------------------------


@pytest.mark.django_db
def test_the_schema_is_a_valid_openapi_3_document_of_every_endpoint():
    from openapi_spec_validator import validate

    response = Client().get("/api/v1/schema?format=json")
    assert response.status_code == 200
    document = response.json()
    validate(document)
    assert document["openapi"].startswith("3.")
    assert set(document["paths"]) == {
        "/api/v1/notebooks",
        "/api/v1/notebooks/{notebook_id}",
        "/api/v1/notebooks/{notebook_id}/run",
        "/api/v1/notebooks/{notebook_id}/cells",
        "/api/v1/notebooks/{notebook_id}/cells/{cell_id}",
        "/api/v1/notebooks/{notebook_id}/cells/{cell_id}/move",
        "/api/v1/notebooks/{notebook_id}/cells/{cell_id}/run",
        "/api/v1/notebooks/{notebook_id}/cells/{cell_id}/stdout",
        "/api/v1/notebooks/{notebook_id}/outputs/{digest}",
        "/api/v1/notebooks/{notebook_id}/runs",
        "/api/v1/runs/{run_id}",
        "/api/v1/runs/{run_id}/cancel",
        "/api/v1/notebooks/{notebook_id}/schedules",
        "/api/v1/schedules/{schedule_id}",
    }
    scheme = document["components"]["securitySchemes"]["apiToken"]
    assert (scheme["type"], scheme["scheme"]) == ("http", "bearer")


@pytest.mark.django_db
def test_the_docs_page_loads_only_this_sites_scripts_under_the_csp():
    page = Client().get("/api/v1/docs")
    assert page.status_code == 200
    html = page.content.decode()
    scripts = re.findall(r"<script([^>]*)>(.*?)</script>", html, flags=re.S)
    sources = [re.search(r'src="([^"]+)"', attributes).group(1) for attributes, _ in scripts]
    assert len(sources) == 3 and all(body.strip() == "" for _, body in scripts)  # no inline script
    assert all(src.startswith("/static/drf_spectacular_sidecar/") or src.startswith("/api/v1/docs?") for src in sources)
    assert "script-src 'self'" in page["Content-Security-Policy"]
    assert "https://" not in html and "http://" not in html
    start = Client().get(sources[-1].replace("&amp;", "&"))
    assert start.status_code == 200 and start["Content-Type"].startswith("application/javascript") and "/api/v1/schema" in start.content.decode()


def test_docs_list_exactly_the_error_codes_the_api_answers():
    section = DOCS.read_text().split("## Errors", 1)[1]
    documented = re.findall(r"^\| `([a-z_]+)` \|", section, flags=re.MULTILINE)
    assert sorted(documented) == sorted(ERROR_CODES)


# --- one edit path with the WebSocket, live events, runs on the real worker -----------------------------------------


async def api(method, path, token, body=None):
    """`call` from async tests, on the ORM thread as the consumer's calls run (whose connection
    database_sync_to_async gives back afterwards)."""
    return await database_sync_to_async(call)(method, path, token, body)


def labelled_outcome(notebook_id, labels):
    """The notebook's rows and history with every id replaced by its label."""
    names = {cell_id: label for label, cell_id in labels.items()}

    def relabel(value):
        if isinstance(value, dict):
            return {key: relabel(item) for key, item in value.items()}
        if isinstance(value, (list, tuple)):
            return [relabel(item) for item in value]
        return names.get(str(value), value)

    rows = Cell.objects.filter(notebook_id=notebook_id).order_by("position").values_list("id", "position", "type", "code", "result_variable", "status", "reads", "writes")
    events = NotebookEvent.objects.filter(notebook_id=notebook_id).order_by("id").values_list("kind", "cell_id", "user__username", "before", "after", "is_undo", "reverted")
    return {"rows": relabel(list(rows)), "events": relabel(list(events)), "revision": Notebook.objects.get(pk=notebook_id).revision}


@pytest.mark.django_db(transaction=True)
async def test_the_same_edits_through_the_api_and_the_socket_leave_the_same_rows_and_history(ws, users):
    make = database_sync_to_async(Notebook.objects.create)
    by_api, by_socket = await make(name="api", owner=users["alice"]), await make(name="socket", owner=users["alice"])
    token = await database_sync_to_async(issue)(users["alice"])
    page = await ws(users["alice"], by_api)  # a page open on the notebook the API edits
    editor = await ws(users["alice"], by_socket)
    api_ids, socket_ids = {}, {}
    base = f"/api/v1/notebooks/{by_api.pk}"

    async def through_api(method, path, body, event):
        response = await api(method, base + path, token, body)
        assert response.status_code in (200, 201, 204), response.content[:300]
        request_id = response["X-Request-Id"]
        seen = await page.wait_for(lambda e: e.get("requestId") == request_id and e["type"] == event, what=f"{event} for the API's {request_id}")
        return response.json() if response.status_code != 204 else seen[-1]

    # 1-4: create (at the end, after a cell, above a cell, a SQL cell); 5 edit; 6 move to the top; 7 delete.
    api_ids["a"] = (await through_api("post", "/cells", {"code": "a = 1"}, "cell_created"))["cell"]["id"]
    api_ids["b"] = (await through_api("post", "/cells", {"code": "b = a + 1", "after": api_ids["a"]}, "cell_created"))["cell"]["id"]
    api_ids["m"] = (await through_api("post", "/cells", {"type": "markdown", "code": "# b is {b}", "before": api_ids["b"]}, "cell_created"))["cell"]["id"]
    api_ids["q"] = (await through_api("post", "/cells", {"type": "sql", "code": "SELECT 1 AS one"}, "cell_created"))["cell"]["id"]
    assert (await through_api("patch", f"/cells/{api_ids['a']}", {"code": "a = 2"}, "cell_updated"))["cell"]["code"] == "a = 2"
    await through_api("post", f"/cells/{api_ids['q']}/move", {"after": None}, "cell_moved")
    await through_api("delete", f"/cells/{api_ids['m']}", None, "cell_deleted")

    socket_ids["a"] = await create(editor, "a = 1")
    socket_ids["b"] = await create(editor, "b = a + 1", afterCellId=socket_ids["a"])
    socket_ids["m"] = await create(editor, "# b is {b}", cellType="markdown", beforeCellId=socket_ids["b"])
    socket_ids["q"] = await create(editor, "SELECT 1 AS one", cellType="sql")
    assert (await editor.request(type="cell_update", cellId=socket_ids["a"], code="a = 2"))["type"] == "cell_updated"
    assert (await editor.request(type="move_cell", cellId=socket_ids["q"], afterCellId=None))["type"] == "cell_moved"
    assert (await editor.request(type="delete_cell", cellId=socket_ids["m"]))["type"] == "cell_deleted"

    assert [page.state[c]["code"] for c in page.order] == ["SELECT 1 AS one", "a = 2", "b = a + 1"]  # the page followed live
    outcome = database_sync_to_async(labelled_outcome)

    async def settled():
        """Both notebooks once the kernel worker has stored every cell's analysis and status
        (it stores them after announcing the change), when they agree."""
        pair = await outcome(by_api.pk, api_ids), await outcome(by_socket.pk, socket_ids)
        return pair if all(row[7] for side in pair for row in side["rows"]) and pair[0] == pair[1] else None

    try:
        api_side, socket_side = await eventually(settled, timeout=10, what="the same rows and history")
    except AssertionError:
        assert await outcome(by_api.pk, api_ids) == await outcome(by_socket.pk, socket_ids)  # shows how they differ
        raise
    assert [row[0] for row in api_side["rows"]] == ["q", "a", "b"] and api_side["revision"] == 7
    assert [(kind, label, who) for kind, label, who, *_ in api_side["events"]] == [
        ("created", "a", "alice"), ("created", "b", "alice"), ("created", "m", "alice"), ("created", "q", "alice"),
        ("edited", "a", "alice"), ("moved", "q", "alice"), ("deleted", "m", "alice"),
    ]
    assert api_side["rows"][0][4] == "df_1" and api_side["rows"][2][6] == ["a"]


@pytest.mark.django_db(transaction=True)
async def test_a_cell_run_through_the_api_shows_its_result_through_the_api(live_kernel, users, notebook):
    token = await database_sync_to_async(issue)(users["bob"])
    base = f"/api/v1/notebooks/{notebook.pk}"
    made = (await api("post", f"{base}/cells", token, {"code": "x = 6 * 7\nprint('ran')\nx"})).json()["cell"]
    queued = await api("post", f"{base}/cells/{made['id']}/run", token)
    assert queued.status_code == 202
    body = queued.json()
    run_id = body.pop("runId")  # a run on the shared kernel has a row too (test_api_runs.py)
    assert body == {
        "queued": "run_cell", "notebookId": str(notebook.pk), "cellId": made["id"], "requestId": queued["X-Request-Id"], "revision": 1,
        "status": "queued", "url": f"/api/v1/runs/{run_id}", "pageUrl": f"/notebooks/{notebook.pk}/runs/{run_id}/",
    }

    async def finished():
        cells = (await api("get", base, token)).json()["cells"]
        return cells[0] if cells[0]["status"] in ("success", "error") else None

    shown = await eventually(finished, what="the cell's result in the database")
    assert shown["status"] == "success", shown
    assert text_plain(shown) == "42" and shown["stdout"] == "ran\n" and shown["writes"] == ["x"]


@pytest.mark.django_db(transaction=True)
async def test_run_all_through_the_api_runs_every_cell_in_dependency_order(live_kernel, users, notebook):
    token = await database_sync_to_async(issue)(users["alice"], ["read", "edit", "run"])
    base = f"/api/v1/notebooks/{notebook.pk}"
    later = (await api("post", f"{base}/cells", token, {"code": "y = x + 1\ny"})).json()["cell"]["id"]
    await api("post", f"{base}/cells", token, {"code": "x = 1", "before": later})
    queued = await api("post", f"{base}/run", token)
    assert queued.status_code == 202 and queued.json()["queued"] == "run_all" and queued.json()["cellId"] is None

    async def all_done():
        cells = (await api("get", base, token)).json()["cells"]
        return cells if all(c["status"] == "success" for c in cells) else None

    cells = await eventually(all_done, what="every cell run")
    assert [c["code"] for c in cells] == ["x = 1", "y = x + 1\ny"] and text_plain(cells[1]) == "2"


@pytest.mark.parametrize("embedded, path, starts", [(True, "/api/v1/notebooks", True), (True, "/notebooks/", False), (False, "/api/v1/notebooks", False)])
async def test_in_the_embedded_default_an_api_request_starts_the_kernel_worker(monkeypatch, settings, embedded, path, starts):
    """With no page open, nothing else would start it: the API's runs and edits would wait."""
    from notebooks_app import kernel_client

    settings.KERNEL_EMBEDDED = embedded
    started, served = [], []
    monkeypatch.setattr(kernel_client, "ensure_embedded_worker", lambda: started.append(True))

    async def app(scope, receive, send):
        served.append(scope["path"])

    await kernel_client.starting_embedded_worker(app, "/api/")({"type": "http", "path": path}, None, None)
    assert (bool(started), served) == (starts, [path])
