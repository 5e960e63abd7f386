"""Cascades in one round trip: a cascade's consecutive Python cells go to the execution process
as one `run_batch` request and their results stream back cell by cell.  Driven as in
test_session.py (in-memory store and publisher, a real runner); what the session publishes is
what every client would see."""
import json

import pytest

from notebooks_app.kernel.runner import Runner
from notebooks_app.kernel.session import Encoded, NotebookSession

from .test_session import NOTEBOOK, TIMEOUT, MemoryStore, Published, run

FINAL = ("success", "error")


class CountingRunner(Runner):
    """A real runner that counts how cells reach the execution process."""

    def __init__(self, **options):
        super().__init__(**options)
        self.batches, self.single_runs = [], 0

    async def run(self, *args, **kwargs):
        self.single_runs += 1
        return await super().run(*args, **kwargs)

    async def run_batch(self, cells, **kwargs):
        self.batches.append([cell["cell"] for cell in cells])
        async for result in super().run_batch(cells, **kwargs):
            yield result


class CallsPublished(Published):
    """Also remembers which publish call (group message) carried each event."""

    def __init__(self):
        super().__init__()
        self.call_of = {}
        self.calls = 0

    async def __call__(self, target, events):
        self.calls += 1
        for event in events:
            self.call_of[id(event)] = self.calls
        await super().__call__(target, events)


@pytest.fixture
async def notebook():
    """notebook(*cells): a loaded session over cells given as code, or (type, code[, result variable])."""
    sessions = []

    async def make(*cells):
        cells = [(cell,) if isinstance(cell, str) else cell for cell in cells]
        store = MemoryStore([cell[-1] if len(cell) == 1 else cell[1] for cell in cells])
        for row, cell in zip(store.cells, cells):
            if len(cell) > 1:
                row["type"] = cell[0]
                row["result_variable"] = cell[2] if len(cell) > 2 else ""
        published, runners = CallsPublished(), []

        def factory():
            runners.append(CountingRunner(time_limit=TIMEOUT))
            return runners[-1]

        session = NotebookSession(NOTEBOOK, store=store, publish=published, runner_factory=factory)
        sessions.append(session)
        await session.ensure_loaded()
        return session, published, runners

    yield make
    for session in sessions:
        await session.close()


def statuses(published, cell_id):
    return [e["status"] for e in published.of("cell_status", cellId=cell_id)]


def position(published, kind, cell_id, status=None):
    """Index of the first event of `kind` (and `status`) for `cell_id`."""
    return next(i for i, e in enumerate(published.events) if e["type"] == kind and e.get("cellId") == cell_id and (status is None or e.get("status") == status))


async def test_a_chain_runs_as_one_batch_and_statuses_stream_in_order(notebook):
    session, published, runners = await notebook("x0 = 0", "x1 = x0 + 1", "import time\ntime.sleep(0.3)\nx2 = x1 + 1", "x3 = x2 + 1", "x4 = x3 + 1\nx4")
    cells = [f"cell-{i}" for i in range(5)]
    run(session, cells[0])
    await published.status(cells[4], *FINAL)
    assert runners[0].batches == [cells] and runners[0].single_runs == 0
    assert published.running_order() == cells
    assert all(statuses(published, c) == ["queued", "running", "success"] for c in cells)
    for before, after in zip(cells, cells[1:]):  # each cell finishes before the next one shows running
        assert position(published, "cell_status", before, "success") < position(published, "cell_status", after, "running")
    # Progressive: the cells before the slow one reached clients in an earlier group message
    # than the slow one's result, and the slow one was shown running before it finished.
    slow_done = published.call_of[id(published.events[position(published, "cell_status", cells[2], "success")])]
    assert published.call_of[id(published.events[position(published, "cell_status", cells[1], "success")])] < slow_done
    assert published.call_of[id(published.events[position(published, "cell_status", cells[2], "running")])] < slow_done
    assert published.of("cell_output", cellId=cells[4])[-1]["outputs"] == [{"mimeType": "text/plain", "data": "4"}]
    seqs = [e["seq"] for e in published.events]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))


async def test_statuses_encoded_from_a_template_say_what_their_event_says(notebook):
    session, published, _ = await notebook("a = 1", 'b = a + 1\nprint("\\"quoted\\"")', "c = b / 0")
    session.submit({"type": "kernel.run_all", "by": 'Zoë "the" tester'})
    await published.status("cell-2", *FINAL)
    encoded = [e for e in published.events if isinstance(e, Encoded)]
    assert {e["status"] for e in encoded} == {"queued", "running", "success", "error"}
    assert all(json.loads(e.text) == dict(e) for e in encoded)
    assert all(e["by"] == 'Zoë "the" tester' for e in encoded if e["status"] in ("queued", "running"))


async def test_an_error_in_the_middle_fails_its_dependents_and_independent_cells_still_run(notebook):
    session, published, runners = await notebook("a = 1", "b = a / 0", "c = b + 1", "d = a + 1\nd", "e = c + d")
    a, b, c, d, e = (f"cell-{i}" for i in range(5))
    session.submit({"type": "kernel.run_all"})
    await published.status(e, *FINAL)
    assert len(runners[0].batches) == 1
    assert published.running_order() == [a, b, c, d, e]
    assert [session.cells[x].status for x in (a, b, c, d, e)] == ["success", "error", "error", "success", "error"]
    assert published.of("cell_error", cellId=b)[-1]["error"]["ename"] == "ZeroDivisionError"
    assert published.of("cell_error", cellId=c)[-1]["error"]["ename"] == "NameError"
    assert published.of("cell_error", cellId=e)[-1]["error"]["ename"] == "NameError"
    assert published.of("cell_output", cellId=d)[-1]["outputs"][0]["data"] == "2"
    await session.flush()
    assert session.store.persisted[b]["error"]["ename"] == "ZeroDivisionError" and session.store.persisted[d]["status"] == "success"


async def test_interrupt_mid_batch_stops_the_running_cell_and_leaves_the_rest_stale(notebook):
    session, published, runners = await notebook("a = 1", "b = a\nwhile True:\n    pass", "c = b + 1", "d = c + 1")
    a, b, c, d = (f"cell-{i}" for i in range(4))
    run(session, a)
    await published.status(b, "running")
    assert session.cells[a].status == "success"
    await session.interrupt()
    await published.status(d, "stale")
    assert published.of("cell_error", cellId=b)[-1]["error"]["ename"] == "KeyboardInterrupt"
    assert [session.cells[x].status for x in (a, b, c, d)] == ["success", "error", "stale", "stale"]
    assert published.running_order() == [a, b]
    assert runners[0].batches == [[a, b, c, d]]
    # The process lives on with its namespace; the cells stopped before they started run now.
    since = len(published.events)
    session.submit({"type": "kernel.update_cell", "revision": session.revision + 1, "cellId": b, "code": "b = a", "resultVariable": ""})
    run(session, b)
    await published.status(d, "success", since=since)
    assert len(runners) == 1 and [session.cells[x].status for x in (a, b, c, d)] == ["success"] * 4


async def test_a_runner_killed_mid_batch_fails_its_cell_leaves_the_rest_stale_and_restarts(notebook):
    session, published, runners = await notebook("a = 1", "b = a\nimport os\nos._exit(3)", "c = b + 1", "d = 4")
    a, b, crash, d = "cell-0", "cell-1", "cell-1", "cell-3"
    c = "cell-2"
    session.submit({"type": "kernel.run_all"})
    await published.status(d, "stale")
    first_pid = runners[0].pid
    error = published.of("cell_error", cellId=crash)[-1]["error"]
    assert error["ename"] == "KernelDied" and "exited with code 3" in error["evalue"]
    assert published.of("kernel_restarted")
    assert published.running_order() == [a, b]
    assert [session.cells[x].status for x in (a, b, c, d)] == ["stale", "error", "stale", "stale"]
    assert position(published, "cell_status", b, "error") < position(published, "kernel_restarted", None)
    # The next run starts a fresh process; the crashed cell and its dependents are held back.
    since = len(published.events)
    session.submit({"type": "kernel.run_all"})
    await published.status(d, "success", since=since)
    assert sorted(published.running_order(since)) == sorted([a, d])
    assert session.runner.alive and session.runner.pid != first_pid


async def test_stdout_of_each_cell_of_a_batch_goes_to_that_cell(notebook):
    session, published, _ = await notebook(
        "a = 1\nprint('from a')",
        "b = a\nimport sys\nfor i in range(200):\n    print('b', i)\nprint('err b', file=sys.stderr)",
        "c = b\nimport os\nos.write(1, b'raw c\\n')",
        "d = c",
        "e = d\nprint('from e')",
    )
    a, b, c, d, e = (f"cell-{i}" for i in range(5))
    run(session, a)
    await published.status(e, *FINAL)
    await session.flush()
    expected = {a: "from a\n", b: "".join(f"b {i}\n" for i in range(200)) + "err b\n", c: "raw c\n", d: "", e: "from e\n"}
    assert {x: session.cells[x].stdout for x in expected} == expected
    assert {x: "".join(ev["text"] for ev in published.of("cell_stdout", cellId=x)) for x in expected} == expected
    for x in (a, b, c, e):  # every client sees running, then the cell's stdout, then its result
        first_text = position(published, "cell_stdout", x)
        assert position(published, "cell_status", x, "running") < first_text < position(published, "cell_status", x, "success")
    assert session.store.persisted[b]["stdout"] == expected[b]


async def test_sql_and_markdown_cells_in_the_middle_of_a_python_cascade(notebook):
    session, published, runners = await notebook(
        "x0 = 1",
        "x1 = x0 + 1",
        ("sql", "SELECT {x1} + 1 AS y", "q"),
        "x2 = int(q['y'][0])",
        ("markdown", "x2 is **{x2}**"),
        "x3 = x2 + 1",
        "x4 = x3 + 1\nx4",
    )
    cells = [f"cell-{i}" for i in range(7)]
    run(session, cells[0])
    await published.status(cells[6], *FINAL)
    assert published.running_order() == cells
    assert [session.cells[c].status for c in cells] == ["success"] * 7, [session.cells[c].error for c in cells]
    assert runners[0].batches == [cells[0:2], cells[5:7]]  # one Python cell alone runs by itself
    assert runners[0].single_runs == 1
    assert "<strong>3</strong>" in published.of("cell_output", cellId=cells[4])[-1]["outputs"][0]["data"]
    assert published.of("cell_output", cellId=cells[6])[-1]["outputs"][0]["data"] == "5"


async def test_a_cell_with_a_syntax_error_in_a_cascade_fails_alone_and_splits_the_batch(notebook):
    session, published, runners = await notebook("a = 1", "b = a + 1", "c = (b", "d = b + 1", "e = d + 1\ne")
    cells = [f"cell-{i}" for i in range(5)]
    session.submit({"type": "kernel.run_all"})
    await published.status(cells[4], *FINAL)
    assert [session.cells[c].status for c in cells] == ["success", "success", "error", "success", "success"]
    assert published.of("cell_error", cellId=cells[2])[-1]["error"]["ename"] == "SyntaxError"
    assert runners[0].batches == [cells[0:2], cells[3:5]]


async def test_a_rerun_whose_cells_end_as_stored_writes_nothing_and_a_changed_one_is_written(notebook):
    session, published, _ = await notebook("a = 1", "b = a + 1\nb", "c = b + 1")
    a, b, c = (f"cell-{i}" for i in range(3))
    written = []
    original = session.store.persist

    async def persist(notebook_id, rows):
        written.append(sorted(row["id"] for row in rows))
        await original(notebook_id, rows)

    session.store.persist = persist
    run(session, a)
    await published.status(c, *FINAL)
    await session.flush()
    assert sorted(x for rows in written for x in rows) == [a, b, c]  # idle -> success
    written.clear()
    since = len(published.events)
    run(session, a)
    await published.status(c, *FINAL, since=since)
    await session.flush()
    assert written == []  # every cell ended as the database has it
    since = len(published.events)
    session.submit({"type": "kernel.update_cell", "revision": session.revision + 1, "cellId": a, "code": "a = 5", "resultVariable": ""})
    run(session, a)
    await published.status(c, *FINAL, since=since)
    await session.flush()
    # New code of a, new output of b; c ends as stored (its stale mark, bookkeeping of the edit,
    # waited for the run queued behind the edit, whose write found c as the database has it).
    assert sorted(set(x for rows in written for x in rows)) == [a, b]
    assert session.store.persisted[b]["outputs"][0]["data"] == "6"


async def test_an_edited_cell_is_written_even_when_its_state_did_not_change(notebook):
    """update_cell's transaction marks the row stale itself: the session writes what it holds
    (here `idle`, a never-run cell keeps it) even though nothing else about the cell changed."""
    session, published, _ = await notebook("x = 1", "y = 2")
    session.submit({"type": "kernel.update_cell", "revision": session.revision + 1, "cellId": "cell-0", "code": "x = 3", "resultVariable": ""})
    await published.wait_for(lambda e: e["type"] == "cell_updated", "cell_updated")
    await session.flush()
    await session.persist()
    assert session.store.persisted["cell-0"]["status"] == "idle"
