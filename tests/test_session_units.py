"""The units a NotebookSession coordinates, each on its own: the cell state's one list of
persisted fields, the pure notebook model and its cascade plan, outputs, the event stream, and
the execution host's per-notebook settings. No store, no Django, no process started."""
import json

from notebooks_app.constants import OUTPUT_INLINE_LIMIT
from notebooks_app.kernel.cell_state import PERSISTED_FIELDS, CellState
from notebooks_app.kernel.event_stream import Encoded, EventStream
from notebooks_app.kernel.execution import ExecutionHost, RunnerConfig
from notebooks_app.kernel.notebook_model import NotebookModel
from notebooks_app.kernel.outputs import by_reference
from notebooks_app.kernel.runner import Runner


def row(cell_id, code, position, **fields):
    return {"id": cell_id, "type": "python", "code": code, "position": position, **fields}


def test_the_persisted_fields_are_one_list_the_row_and_the_saved_values_follow():
    from notebooks_app.kernel import worker

    cell = CellState.from_row(row("a", "a = 1", 1, status="success", stdout="hi", reads=["x"], writes=["a"]))
    assert cell.saved == cell.persisted_fields() == ("success", [], "hi", None, ["x"], ["a"], None)
    assert list(cell.to_row()) == [*PERSISTED_FIELDS, "id"]
    assert worker.PERSISTED_FIELDS is PERSISTED_FIELDS


def test_a_cascade_plan_is_a_question_that_changes_nothing():
    model = NotebookModel()
    model.load([row("a", "a = 1", 1), row("b", "b = a + 1", 2), row("c", "c = a + 2", 3)])
    model.ran_ok |= {"b", "c"}
    model.unblocked.add("c")
    plan = model.plan_cascade({"b"})
    assert plan.run == {"a", "b"}  # a never ran in this process: it runs first
    assert plan.stale == {"c"}  # c read the old a
    assert model.ran_ok == {"b", "c"} and model.unblocked == {"c"}


def test_a_crashed_cell_and_its_dependents_are_left_out_of_a_plan():
    model = NotebookModel()
    model.load([row("a", "a = 1", 1, status="error", error={"ename": "KernelDied"}), row("b", "b = a", 2), row("c", "c = 3", 3)])
    assert model.crashed == {"a"}
    assert model.plan_cascade(set(model.cells)).run == {"c"}


def test_large_outputs_become_references_to_blobs():
    big = "x" * (OUTPUT_INLINE_LIMIT + 1)
    kept, blobs = by_reference([{"mimeType": "text/plain", "data": "small"}, {"mimeType": "text/plain", "data": big}], lambda digest: f"/o/{digest}")
    assert kept[0] == {"mimeType": "text/plain", "data": "small"}
    assert kept[1]["url"] == f"/o/{blobs[0]['digest']}" and blobs[0]["data"] == big


async def test_events_and_template_statuses_share_one_seq_and_go_out_in_one_send():
    sent = []

    async def publish(target, events):
        sent.append((target, events))

    stream = EventStream(publish)
    cell = CellState.from_row(row("a", "a = 1", 1))
    stream.emit({"type": "cell_updated", "cellId": "a"})
    stream.emit_status(cell, "running", "bob")
    await stream.flush()
    [(target, events)] = sent
    assert target is None and [e["seq"] for e in events] == [1, 2]
    assert isinstance(events[1], Encoded) and json.loads(events[1].text) == dict(events[1])


async def test_a_closed_event_stream_publishes_nothing():
    sent = []

    async def publish(target, events):
        sent.append(events)

    stream = EventStream(publish)
    stream.emit({"type": "applied"})
    stream.close()
    stream.emit({"type": "applied"})
    stream.reply("socket", {"type": "applied"})
    await stream.flush()
    await stream.send("socket", [{"type": "applied"}])
    assert sent == []


async def test_the_runner_takes_the_notebooks_settings_where_it_is_made_and_live_ones_as_it_runs():
    made = []

    def factory():
        made.append(Runner())
        return made[-1]

    host = ExecutionHost("n", runner_factory=factory, on_gone=lambda reason, **_: None)
    await host.configure(RunnerConfig(db_connection="sqlite:///one.db"), reason="settings")
    runner = host.made()
    assert runner.database.connection_string == "sqlite:///one.db"
    await host.configure(RunnerConfig(db_connection="sqlite:///two.db", db_display="two"), reason="settings")
    assert host.made() is runner and runner.database.connection_string == "sqlite:///two.db"  # no restart
    assert RunnerConfig(db_connection="x", db_display="a") == RunnerConfig(db_connection="x", db_display="b")
    assert await host.stop("gone") is False  # made, never started: nothing to say
    await host.close()
    assert len(made) == 1


async def test_completion_of_an_unknown_cell_or_in_a_closing_session_is_refused_without_a_process():
    from notebooks_app.kernel.assists import Assists

    sent, made = [], []

    async def publish(target, events):
        sent.append((target, events))

    model = NotebookModel()
    model.load([row("a", "a = 1", 1)])
    host = ExecutionHost("n", runner_factory=lambda: made.append(1), on_gone=lambda reason, **_: None)
    assists = Assists(model=model, events=EventStream(publish), execution=host)
    message = {"type": "kernel.complete", "replyChannel": "socket", "requestId": "r", "cellId": "b", "code": "a", "cursor": 1}
    await assists.answer(message)
    await assists.answer({**message, "cellId": "a"}, closed=True)
    assert [(target, [e["code"] for e in events]) for target, events in sent] == [("socket", ["unknown_cell"])] * 2
    assert made == []


async def test_saving_typing_when_there_is_none_writes_nothing():
    from notebooks_app.kernel.cell_texts import CellTexts
    from notebooks_app.kernel.persister import Persister

    class Store:
        async def save_code(self, notebook_id, rows):
            raise AssertionError("nothing to save")

    model = NotebookModel()
    model.load([row("a", "a = 1", 1)])
    events = EventStream(lambda target, events: None)
    texts = CellTexts(model=model, events=events, queue_job=None, save_job=None, max_code_bytes=1000)
    persister = Persister("n", store=Store(), model=model, texts=texts, events=events)
    assert await persister.save_typing() == ({}, None)
