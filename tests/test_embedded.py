"""The embedded default (no DATABASE_URL, no REDIS_URL): SQLite, in-memory layer, in-process kernel."""
import os
import subprocess
import sys

import pytest

from tests.client import NotebookClient
from tests.live import ROOT, free_port, login, start_daphne, stop

pytestmark = pytest.mark.slow


@pytest.fixture
def embedded_server(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    env.update(SQLITE_PATH=str(tmp_path / "db.sqlite3"), DEBUG="0")
    for command in (["migrate", "--noinput"], ["demo"]):
        subprocess.run([sys.executable, "manage.py", *command], cwd=ROOT, env=env, check=True, capture_output=True)
    port = free_port()
    proc = start_daphne(port, env, tmp_path / "server.log")
    yield f"http://127.0.0.1:{port}", tmp_path
    stop(proc)


async def test_embedded_default_runs_a_notebook_end_to_end(embedded_server):
    base_url, tmp_path = embedded_server
    import sqlite3

    with sqlite3.connect(tmp_path / "db.sqlite3") as db:
        notebook_id = db.execute("select id from notebooks_app_notebook").fetchone()[0]
        assert db.execute("pragma journal_mode").fetchone()[0] == "wal"
    notebook_id = str(notebook_id)
    if "-" not in notebook_id:  # SQLite stores UUIDs as 32 hex digits
        import uuid

        notebook_id = str(uuid.UUID(notebook_id))
    cookie = login(base_url, "demo", "demo-notebook")
    client = await NotebookClient(notebook_id, cookie, server=base_url, timeout=30).connect()
    assert len(client.order) == 4
    last = client.order[2]
    await client.send(type="run_cell", cellId=last, requestId="run")
    seen = await client.wait_for(lambda e: e.get("cellId") == last and e["type"] == "cell_status" and e["status"] in ("success", "error"))
    outputs = [e for e in seen if e["type"] == "cell_output" and e["cellId"] == last]
    assert seen[-1]["status"] == "success", seen
    assert outputs[-1]["outputs"][0]["data"] == "1628.89"
    await client.close()
