"""NotebookSession on its own: an in-memory store and publisher, a real runner, no Django,
no channel layer. What the session publishes and persists is what every client would see."""
import asyncio

import pytest

from notebooks_app.kernel.runner import Runner
from notebooks_app.kernel.session import NotebookSession
from notebooks_app.kernel.shared_text import code_key

NOTEBOOK = "00000000-0000-0000-0000-0000000000aa"
TIMEOUT = 20


class MemoryStore:
    """The store a session is given: a notebook snapshot to load, and the rows it persists."""

    def __init__(self, codes):
        self.revision = 1
        self.cells = [
            {"id": f"cell-{i}", "type": "python", "code": code, "result_variable": "", "position": (i + 1) * 1024, "status": "idle", "outputs": [], "stdout": "", "error": None, "reads": [], "writes": []}
            for i, code in enumerate(codes)
        ]
        self.persisted = {}
        self.blobs = {}  # cell id -> digest -> blob
        self.writes = []  # the name of every write, in order
        self.requirements, self.lock = [], ""  # the notebook's own packages (package_builds.py)

    async def load(self, notebook_id):
        return {
            "name": "in memory",
            "revision": self.revision,
            "db_connection": "",
            "db_display": "",
            "requirements": list(self.requirements),
            "requirements_lock": self.lock,
            "cells": [dict(c) for c in self.cells],
        }

    async def save_lock(self, notebook_id, requirements, lock):
        self.writes.append("save_lock")
        if requirements == self.requirements:
            self.lock = lock

    async def save_requirements(self, notebook_id, requirements, lock, user_id):
        self.writes.append("save_requirements")
        self.requirements, self.lock = list(requirements), lock
        self.revision += 1
        return self.revision

    async def load_connection(self, notebook_id):
        return "", ""

    async def persist(self, notebook_id, rows):
        self.writes.append("persist")
        for row in rows:
            self.persisted[row["id"]] = dict(row)

    async def save_blobs(self, notebook_id, cell_id, blobs):
        self.writes.append("save_blobs")
        self.blobs[cell_id] = {blob["digest"]: blob for blob in blobs}

    async def save_code(self, notebook_id, texts):
        self.writes.append("save_code")
        for cell in self.cells:
            if cell["id"] in texts:
                cell["code"], cell["ydoc"], cell["ydoc_generation"], _typists = texts[cell["id"]]
                cell["ydoc_key"] = code_key(cell["code"])
        self.revision += 1
        return self.revision

    async def save_text_states(self, notebook_id, texts):
        self.writes.append("save_text_states")
        for cell in self.cells:
            if cell["id"] in texts:
                cell["ydoc"], cell["ydoc_generation"], cell["ydoc_key"] = texts[cell["id"]]

    def output_url(self, notebook_id, digest):
        return f"/outputs/{digest}"

    def stdout_url(self, notebook_id, cell_id):
        return f"/stdout/{cell_id}"

    def outputs_url(self, notebook_id, cell_id):
        return f"/outputs-of/{cell_id}"


class Published:
    """The publish coroutine a session is given: records every event, lets a test await one."""

    def __init__(self):
        self.events = []
        self._arrived = asyncio.Event()

    async def __call__(self, target, events):
        self.events.extend(events)
        self._arrived.set()

    async def wait_for(self, predicate, what):
        async def scan():
            seen = 0
            while True:
                for event in self.events[seen:]:
                    if predicate(event):
                        return event
                seen = len(self.events)
                self._arrived.clear()
                await self._arrived.wait()

        try:
            return await asyncio.wait_for(scan(), TIMEOUT)
        except asyncio.TimeoutError:
            raise AssertionError(f"timed out waiting for {what}; saw {[(e['type'], e.get('cellId'), e.get('status')) for e in self.events][-15:]}") from None

    async def status(self, cell_id, *statuses, since=0):
        """The first status event of `cell_id` in `statuses`, among events from index `since` on."""
        fresh = {id(e) for e in self.events[:since]}
        return await self.wait_for(
            lambda e: e["type"] == "cell_status" and e["cellId"] == cell_id and e["status"] in statuses and id(e) not in fresh,
            f"{cell_id} {statuses}",
        )

    def of(self, kind, **fields):
        return [e for e in self.events if e["type"] == kind and all(e.get(k) == v for k, v in fields.items())]

    def running_order(self, since=0):
        return [e["cellId"] for e in self.events[since:] if e["type"] == "cell_status" and e["status"] == "running"]


@pytest.fixture
async def make_session():
    sessions = []

    async def make(*codes):
        store, published = MemoryStore(codes), Published()
        session = NotebookSession(NOTEBOOK, store=store, publish=published, runner_factory=lambda: Runner(time_limit=TIMEOUT))
        sessions.append(session)
        await session.ensure_loaded()
        return session, store, published

    yield make
    for session in sessions:
        await session.close()


def run(session, cell_id):
    session.submit({"type": "kernel.run_cell", "cellId": cell_id, "revision": session.revision})


def edit(session, kind, **fields):
    """A structural message as operations.py sends it: the next revision."""
    session.submit({"type": f"kernel.{kind}", "revision": session.revision + 1, **fields})


async def test_run_cell_queues_the_cascade_then_runs_ancestors_cell_and_descendants_in_order(make_session):
    session, store, published = await make_session("c = b + 1\nc", "a = 1\na", "b = a * 2\nb", "unrelated = 0")
    c, a, b, unrelated = (f"cell-{i}" for i in range(4))
    run(session, b)
    await published.status(c, "success", "error")
    queued = [e["cellId"] for e in published.of("cell_status", status="queued")]
    assert sorted(queued) == sorted([a, b, c])
    first_running = next(i for i, e in enumerate(published.events) if e.get("status") == "running")
    assert all(e.get("status") == "queued" for e in published.events[:first_running] if e["type"] == "cell_status")
    assert published.running_order() == [a, b, c]
    assert [published.of("cell_output", cellId=x)[-1]["outputs"][0]["data"] for x in (a, b, c)] == ["1", "2", "3"]
    assert not published.of("cell_status", cellId=unrelated)
    seqs = [e["seq"] for e in published.events]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))
    await session.flush()
    assert {x: store.persisted[x]["status"] for x in (a, b, c)} == {a: "success", b: "success", c: "success"}
    assert store.persisted[c]["reads"] == ["b"] and store.persisted[c]["writes"] == ["c"]


async def test_delete_announces_then_reruns_readers_with_name_error(make_session):
    session, store, published = await make_session("a = 1", "b = a + 1", "c = b + 1")
    a, b, c = (f"cell-{i}" for i in range(3))
    run(session, c)
    await published.status(c, "success")
    since = len(published.events)
    edit(session, "delete_cell", cellId=a)
    await published.status(c, "error")
    tail = [(e["type"], e.get("cellId"), e.get("status")) for e in published.events[since:]]
    assert tail.index(("cell_deleted", a, None)) < tail.index(("cell_status", b, "running")) < tail.index(("cell_status", c, "running"))
    assert published.of("cell_error", cellId=b)[-1]["error"]["ename"] == "NameError"
    assert published.of("cell_error", cellId=c)[-1]["error"]["ename"] == "NameError"
    assert [cell.id for cell in session.model.ordered_cells()] == [b, c]


async def test_two_definitions_block_both_never_run_and_unblock_when_fixed(make_session):
    session, _, published = await make_session("x = 1", "x = 2")
    first, second = "cell-0", "cell-1"
    assert [session.cells[c].status for c in (first, second)] == ["blocked", "blocked"]
    assert session.cells[first].error["ename"] == "MultipleDefinitionError" and "'x'" in session.cells[first].error["evalue"]
    run(session, first)
    edit(session, "update_cell", cellId=second, code="y = 2", resultVariable="")
    await published.status(first, "stale")
    assert not published.running_order()  # the run of a blocked cell ran nothing
    run(session, first)
    await published.status(first, "success")


async def test_interrupt_stops_the_running_cell_and_leaves_the_rest_of_the_cascade_stale(make_session):
    session, _, published = await make_session("spin = True\nwhile spin:\n    pass", "after = spin", "warm = 1")
    loop, after, warm = "cell-0", "cell-1", "cell-2"
    run(session, warm)  # the execution process is up: the interrupt below finds the cell running
    await published.status(warm, "success")
    run(session, loop)
    await published.status(loop, "running")
    await session.interrupt()
    await published.status(loop, "error")
    assert published.of("cell_error", cellId=loop)[-1]["error"]["ename"] == "KeyboardInterrupt"
    await published.status(after, "stale")
    assert published.running_order() == [warm, loop]


async def test_a_message_the_session_cannot_apply_is_a_kernel_error_and_the_session_goes_on(make_session):
    session, _, published = await make_session("a = 1\na")
    edit(session, "move_cell")  # no cellId: the handler fails
    error = await published.wait_for(lambda e: e["type"] == "kernel_error", "kernel_error")
    assert "kernel.move_cell" in error["message"] and "seq" in error
    run(session, "cell-0")
    await published.status("cell-0", "success")


def new_cell(cell_id, code, position):
    return {"cell": {"id": cell_id, "type": "python", "code": code, "status": "idle"}, "position": position}


async def test_a_cascade_first_runs_never_run_inputs_of_its_descendants(make_session):
    """Running `sales` reruns `over`, which also reads `limit`: a cell created and never run.
    `limit` runs first, so `over` never sees a NameError (the SQL-cell scenario of issue 13)."""
    session, _, published = await make_session("sales = 10", "limit = 4", "over = sales > limit\nover", "answer = int(over)\nanswer")
    sales, limit, over, answer = (f"cell-{i}" for i in range(4))
    run(session, sales)
    await published.status(answer, "success", "error")
    assert published.running_order() == [sales, limit, over, answer]
    assert [session.cells[c].status for c in (sales, limit, over, answer)] == ["success"] * 4
    assert published.of("cell_output", cellId=answer)[-1]["outputs"][0]["data"] == "1"


async def test_rerunning_an_out_of_date_ancestor_marks_its_other_dependents_stale(make_session):
    session, _, published = await make_session("a = 1", "b = a + 1", "c = a + 2")
    a, b, c = (f"cell-{i}" for i in range(3))
    session.submit({"type": "kernel.run_all"})
    await published.status(c, "success")
    edit(session, "update_cell", cellId=a, code="a = 10", resultVariable="")
    await published.status(c, "stale")
    run(session, b)  # reruns a (changed) and b; c read the old a
    await published.status(b, "success")
    assert session.cells[c].status == "stale"


async def test_a_never_run_cell_stays_idle_when_edited(make_session):
    session, _, published = await make_session("", "y = 1")
    edit(session, "update_cell", cellId="cell-0", code="x = 1", resultVariable="")
    await published.wait_for(lambda e: e["type"] == "cell_updated", "cell_updated")
    await session.flush()
    assert session.cells["cell-0"].status == "idle"
    assert not published.of("cell_status", cellId="cell-0")


async def test_a_blocked_cell_drops_its_results_and_reruns_once_the_culprit_is_fixed(make_session):
    session, _, published = await make_session("x = 1\nx", "z = 0")
    first, other = "cell-0", "cell-1"
    run(session, first)
    await published.status(first, "success")
    assert session.cells[first].outputs
    edit(session, "create_cell", **new_cell("dup", "x = 2", 5000))
    await published.status(first, "blocked")
    assert session.cells[first].outputs == [] and session.cells[first].stdout == ""
    edit(session, "update_cell", cellId="dup", code="y = 2", resultVariable="")
    await published.status(first, "stale")
    since = len(published.events)
    run(session, "dup")  # fixing and running the culprit reruns the cell it had blocked
    await published.status(first, "success", since=since)
    assert sorted(published.running_order(since)) == sorted(["dup", first])
    assert session.cells[first].outputs[0]["data"] == "1" and session.cells[other].status == "idle"


async def test_a_cell_that_kills_the_kernel_is_not_rerun_by_run_all(make_session):
    session, _, published = await make_session("b = 1", "import os\nos._exit(3)", "c = b + 1\nc", "d = 4")
    b, crash, c, d = (f"cell-{i}" for i in range(4))
    session.submit({"type": "kernel.run_all"})
    await published.status(crash, "error")
    assert published.of("cell_error", cellId=crash)[-1]["error"]["ename"] == "KernelDied"
    await session.flush()
    since = len(published.events)
    session.submit({"type": "kernel.run_all"})
    await published.status(d, "success", since=since)
    assert crash not in published.running_order(since)
    assert sorted(published.running_order(since)) == sorted([b, c, d])
    assert session.cells[crash].status == "error" and session.cells[crash].error["ename"] == "KernelDied"
    # Run on purpose, it runs (and crashes) again; edited, the next run_all includes it.
    since = len(published.events)
    run(session, crash)
    await published.status(crash, "error", since=since)
    edit(session, "update_cell", cellId=crash, code="fixed = True", resultVariable="")
    await published.wait_for(lambda e: e["type"] == "cell_updated" and e["cellId"] == crash, "edit")
    since = len(published.events)
    session.submit({"type": "kernel.run_all"})
    await published.status(crash, "success", since=since)


async def test_stop_while_the_execution_process_starts_stops_the_cell(make_session):
    """The first run of a notebook starts its process; a Stop pressed meanwhile is not lost."""
    session, _, published = await make_session("while True:\n    pass", "after = 1")
    spin, after = "cell-0", "cell-1"
    session.submit({"type": "kernel.run_all"})
    await published.status(spin, "running")
    await session.interrupt()
    await published.status(spin, "error")
    assert published.of("cell_error", cellId=spin)[-1]["error"]["ename"] == "KeyboardInterrupt"
    await published.status(after, "stale")  # the rest of the cascade did not run


async def test_a_change_a_reload_already_brought_still_answers_its_sender(make_session):
    """The message arrives after a reload that read its change from the database: nothing is
    applied twice, and its requestId still gets an answer (`applied`)."""
    session, _, published = await make_session("a = 1")
    await session.reload()
    session.submit({"type": "kernel.update_cell", "revision": session.revision, "cellId": "cell-0", "code": "a = 1", "requestId": "late"})
    answer = await published.wait_for(lambda e: e.get("requestId") == "late", "the late change's answer")
    assert answer["type"] == "applied" and "seq" in answer
    assert not published.of("cell_updated")


async def test_a_load_takes_the_stored_analysis_of_unchanged_cells_and_analyses_the_others(make_session, monkeypatch):
    """Cell.analysis: a worker loading a notebook analyses only cells whose code (type, result
    variable) changed since their analysis was stored; the graph is the same either way."""
    from notebooks_app.kernel.session import CellState

    codes = ("len = 3", "print(len)", "x = ", "y = x + 1")  # a builtin redefined, a syntax error
    session, store, _ = await make_session(*codes)
    await session.persist()
    for row in store.cells:  # what the worker stored after its first load
        persisted = store.persisted[row["id"]]
        row["reads"], row["writes"], row["analysis"] = persisted["reads"], persisted["writes"], persisted["analysis"]
        assert row["analysis"]["key"]
    first = {c.id: (c.reads, c.writes, c.graph_reads, c.tables, c.syntax_error) for c in session.model.ordered_cells()}
    first_edges = {c: session.model.graph.parents(c) for c in first}
    assert first_edges["cell-1"] == {"cell-0"}  # the builtin `len`, redefined: an edge
    first_blocked = set(session.model.graph.blocked())
    store.cells[3]["code"] = "y = x + 2"  # changed behind the worker's back: its stored analysis is old
    analysed = []
    original = CellState.analyse
    monkeypatch.setattr(CellState, "analyse", lambda self: (analysed.append(self.id), original(self))[1])
    again = NotebookSession(NOTEBOOK, store=store, publish=Published(), runner_factory=lambda: None)
    await again.ensure_loaded()
    assert analysed == ["cell-3"]
    assert again.persister.dirty == {"cell-3"}  # its new analysis gets stored
    assert {c.id: (c.reads, c.writes, c.graph_reads, c.tables, c.syntax_error) for c in again.model.ordered_cells()} == first
    assert set(again.model.graph.blocked()) == first_blocked
    assert {c: again.model.graph.parents(c) for c in first} == first_edges
    assert again.cells["cell-2"].syntax_error and "print" in again.cells["cell-1"].graph_reads


async def test_a_load_sends_stored_text_states_without_building_them_until_they_are_edited(make_session, monkeypatch):
    """Cell.ydoc_key: a stored Yjs state whose key is that of the cell's code goes into the
    state as stored (no document built); one whose code changed behind the worker's back is
    rebuilt as a new generation; a page's edit merges into a state sent as stored."""
    import base64

    from pycrdt import Doc, Text

    from notebooks_app.kernel import cell_texts

    session, store, _ = await make_session("a = 1", "b = a + 1", "c = b * 2")
    first = {cell["id"]: (cell["ydoc"], cell["ygen"]) for cell in session.state_messages()[0]["notebook"]["cells"]}
    await session.persist()  # the states, with their keys
    assert all(row["ydoc_key"] == code_key(row["code"]) for row in store.cells)
    store.cells[2]["code"] = "c = b * 3"  # changed behind the worker's back: its key no longer matches

    built = []
    original = cell_texts.CellText

    class Counting(original):
        def __init__(self, code="", **kwargs):
            built.append(code)
            super().__init__(code, **kwargs)

    monkeypatch.setattr(cell_texts, "CellText", Counting)
    published = Published()
    again = NotebookSession(NOTEBOOK, store=store, publish=published, runner_factory=lambda: None)
    await again.ensure_loaded()
    cells = {cell["id"]: (cell["ydoc"], cell["ygen"]) for cell in again.state_messages()[0]["notebook"]["cells"]}
    assert built == ["c = b * 3"]
    assert cells["cell-0"] == first["cell-0"] and cells["cell-1"] == first["cell-1"]
    assert cells["cell-2"][1] == first["cell-2"][1] + 1  # a new generation holding the new code

    page = Doc()
    page.apply_update(base64.b64decode(cells["cell-1"][0]))
    text = page.get("code", type=Text)
    base = page.get_state()
    text.insert(len("b = a + 1"), "0")
    again.text_update({"cellId": "cell-1", "generation": cells["cell-1"][1], "update": base64.b64encode(page.get_update(base)).decode()})
    assert str(again.texts["cell-1"]) == "b = a + 10" and built == ["c = b * 3", "b = a + 1"]
    await published.wait_for(lambda e: e["type"] == "text_update" and e["cellId"] == "cell-1", "the edit relayed")
    await again.close()


async def test_loads_and_states_pause_the_garbage_collector_and_always_restart_it(make_session, monkeypatch):
    """gc_paused: off while a notebook loads or its state is encoded (a full collection per
    ~700 allocations walked the whole heap again and again: 0.3 - 0.5 s of a 10,000-cell cold
    open), on again afterwards: also when a load fails, and only when the last of overlapping
    pauses (two notebooks loading at once) ends."""
    import gc

    from notebooks_app.kernel.session import gc_paused

    assert gc.isenabled()
    session, store, _ = await make_session("a = 1", "b = a + 1")
    seen, release = [], asyncio.Event()
    loading = store.load

    async def held_load(notebook_id):
        seen.append(gc.isenabled())
        if len(seen) == 1:
            await release.wait()
        return await loading(notebook_id)

    monkeypatch.setattr(store, "load", held_load)
    other = NotebookSession(NOTEBOOK, store=store, publish=Published(), runner_factory=lambda: None)
    first = asyncio.ensure_future(session.reload())
    await asyncio.sleep(0.01)
    await other.ensure_loaded()  # ends while the first load is still held: the collector stays off
    assert not gc.isenabled()
    release.set()
    await first
    assert seen == [False, False] and gc.isenabled()
    with gc_paused():
        session.state_messages()
        assert not gc.isenabled()
    assert gc.isenabled()

    async def broken_load(notebook_id):
        raise RuntimeError("the database went away")

    monkeypatch.setattr(store, "load", broken_load)
    with pytest.raises(RuntimeError):
        await NotebookSession(NOTEBOOK, store=store, publish=Published(), runner_factory=lambda: None).ensure_loaded()
    assert gc.isenabled()


def typed(session, cell_id, edit):
    """A page's text_update of `cell_id` as the page sends it: `edit(text)` on its copy of the
    cell's shared text (from the state the page got), sent as a Yjs update; the page's text."""
    import base64

    from pycrdt import Doc, Text

    cell = next(c for c in session.state_messages()[0]["notebook"]["cells"] if c["id"] == cell_id)
    page = Doc()
    page.apply_update(base64.b64decode(cell["ydoc"]))
    base = page.get_state()
    edit(page.get("code", type=Text))
    update = base64.b64encode(page.get_update(base)).decode()
    session.text_update({"cellId": cell_id, "generation": cell["ygen"], "update": update, "by": "alice", "byId": 1})
    return str(page.get("code", type=Text))


async def test_closing_saves_typing_not_saved_yet_and_then_never_writes_or_publishes_again(make_session, monkeypatch):
    """close(): a save and a compaction still due are cancelled, the typing is saved and the
    states persisted now; afterwards no timer, message or keystroke writes or publishes."""
    from notebooks_app.kernel import cell_texts

    monkeypatch.setattr(cell_texts, "COMPACT_IDLE", 0.4)  # due soon after the close below
    session, store, published = await make_session("a = 1")

    def churn(text):  # keystrokes and deletes all over: the history outgrows the text
        for i in range(1500):
            text.insert(0 if i % 2 else len(str(text)), str(i % 10))
            if i % 3 == 0:
                del text[0:1]

    first = typed(session, "cell-0", churn)
    await published.wait_for(lambda e: e["type"] == "cell_updated" and e["code"] == first, "the save after SAVE_DELAY")
    assert session.texts.compactions_due == {"cell-0"}  # a compaction is due COMPACT_IDLE after that save
    second = typed(session, "cell-0", lambda text: text.insert(0, "# "))  # its save is due in SAVE_DELAY
    await session.close()
    assert store.cells[0]["code"] == second  # saved by close, not by its timer
    assert published.of("cell_updated")[-1]["code"] == second
    events, writes, revision = len(published.events), list(store.writes), store.revision

    run(session, "cell-0")
    session.input_set({"widgetId": "cell-0:0", "cellId": "cell-0", "value": 3})
    typed(session, "cell-0", lambda text: text.insert(0, "# "))
    await asyncio.sleep(max(cell_texts.SAVE_DELAY, cell_texts.COMPACT_IDLE) + 0.3)  # past every timer's deadline
    assert (len(published.events), store.writes, store.revision) == (events, writes, revision)
    assert session.runner is None


async def test_stopping_the_execution_process_says_so_and_leaves_every_result_stale(make_session):
    """stop(reason): no cell crashed, yet the namespace is gone: clients hear kernel_restarted with
    the reason, results turn stale, and the next run starts a fresh process."""
    session, _, published = await make_session("a = 1\na", "b = a + 1\nb")
    a, b = "cell-0", "cell-1"
    run(session, b)
    await published.status(b, "success")
    old = session.runner
    since = len(published.events)
    session.stop_execution("idle for an hour")
    restarted = await published.wait_for(lambda e: e["type"] == "kernel_restarted", "kernel_restarted")
    assert restarted["reason"] == "idle for an hour" and "seq" in restarted
    await published.status(a, "stale", since=since)
    await published.status(b, "stale", since=since)
    assert not old.alive and session.runner is None
    assert not session.model.crashed and not published.of("cell_error")
    since = len(published.events)
    run(session, b)
    await published.status(b, "success", since=since)
    assert published.running_order(since) == [a, b] and session.runner is not old
