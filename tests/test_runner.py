"""The execution subprocess on its own: outputs, errors, streams, interrupts, limits, deaths."""
import asyncio
import base64

import pytest

from notebooks_app.kernel.runner import Runner, RunnerDied


@pytest.fixture
async def runner():
    runner = Runner(time_limit=5, output_cap=2000, memory_limit_mb=2048)
    await runner.start()
    yield runner
    await runner.close()


async def test_final_expression_is_the_output_and_names_persist(runner):
    result = await runner.run("a", "x = 20\nx + 1", writes=["x"])
    assert result.status == "success" and result.outputs == [{"mimeType": "text/plain", "data": "21"}]
    assert (await runner.run("b", "x * 2")).outputs[0]["data"] == "40"


async def test_statement_cells_and_none_produce_no_output(runner):
    assert (await runner.run("a", "y = 1")).outputs == []
    assert (await runner.run("b", "None")).outputs == []


async def test_error_traceback_is_trimmed_to_the_cell_with_its_line_numbers(runner):
    result = await runner.run("a", "def f():\n    return missing\n\n\nf()")
    assert result.status == "error"
    error = result.error
    assert error["ename"] == "NameError" and "missing" in error["evalue"]
    text = "\n".join(error["traceback"])
    assert 'File "<cell a>", line 5' in text and 'File "<cell a>", line 2, in f' in text
    assert "_child.py" not in text and "runner.py" not in text


async def test_stdout_and_stderr_stream_in_order_before_the_result(runner):
    chunks = []
    code = "import os, sys\nprint('one')\nsys.stderr.write('two\\n')\nos.write(1, b'three\\n')\n'done'"
    result = await runner.run("a", code, on_stdout=chunks.append)
    assert "".join(chunks) == "one\ntwo\nthree\n"
    assert result.outputs[0]["data"] == "'done'"


async def until(condition, timeout=10):
    """Wait for `condition()` to hold (polling the event loop), instead of a fixed sleep."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


async def test_stdout_arrives_while_the_cell_is_still_running(runner):
    chunks = []
    code = "import time\nprint('early', flush=True)\nwhile True:\n    time.sleep(0.01)"
    task = asyncio.create_task(runner.run("a", code, on_stdout=chunks.append))
    await until(lambda: chunks)
    assert "".join(chunks) == "early\n" and not task.done()  # seen while the cell still runs
    await runner.interrupt()
    assert (await task).error["ename"] == "KeyboardInterrupt"


async def test_every_run_gets_exactly_its_own_output_quiet_or_not(runner):
    """Quiet cells skip the end-of-output marker; printing ones (Python or C level) use it."""
    for i in range(150):
        chunks = []
        code = ["x = 1", f"print({i})", f"import os; os.write(1, b'{i}')", f"import sys; sys.stderr.write('{i}')"][i % 4]
        await runner.run("a", code, on_stdout=chunks.append)
        assert "".join(chunks) == ("" if i % 4 == 0 else f"{i}\n" if i % 4 == 1 else f"{i}")


async def test_long_stdout_and_outputs_are_truncated_with_a_note(runner):
    chunks = []
    result = await runner.run("a", "for i in range(20000): print(i)\n'z' * 5000", on_stdout=chunks.append)
    text = "".join(chunks)
    assert len(text) < 2200 and "[output truncated:" in text
    assert result.outputs[0]["data"].startswith("'zzz") and "[output truncated: 5,002 characters" in result.outputs[0]["data"]


async def test_rerunning_a_cell_removes_its_previous_names(runner):
    await runner.run("a", "old = 1", writes=["old"])
    await runner.run("a", "new = 2", writes=["new"])
    result = await runner.run("b", "old")
    assert result.error["ename"] == "NameError"


async def test_forget_removes_names_but_not_names_another_cell_took_over(runner):
    await runner.run("a", "shared = 1\n_private = 3", writes=["shared"])
    await runner.run("b", "shared = 2", writes=["shared"])
    await runner.forget("a")
    assert (await runner.run("c", "shared")).outputs[0]["data"] == "2"
    assert (await runner.run("d", "_private")).error["ename"] == "NameError"


async def test_html_repr_and_matplotlib_figures():
    runner = Runner(output_cap=1_000_000)
    try:
        await _html_and_figures(runner)
    finally:
        await runner.close()


async def _html_and_figures(runner):
    result = await runner.run("a", "class T:\n    def _repr_html_(self):\n        return '<b>t</b>'\nT()")
    assert [o["mimeType"] for o in result.outputs] == ["text/plain", "text/html"]
    assert result.outputs[1]["data"] == "<b>t</b>"
    result = await runner.run("b", "import matplotlib.pyplot as plt\nplt.plot([1, 2, 3])\nNone")
    assert [o["mimeType"] for o in result.outputs] == ["image/png"]
    assert base64.b64decode(result.outputs[0]["data"]).startswith(b"\x89PNG")


async def test_interrupt_stops_the_cell_and_keeps_the_namespace(runner):
    await runner.run("a", "kept = 7", writes=["kept"])
    chunks = []
    task = asyncio.create_task(runner.run("b", "print('spinning', flush=True)\nwhile True:\n    pass", on_stdout=chunks.append))
    await until(lambda: chunks)  # the loop has started
    assert await runner.interrupt()
    result = await task
    assert result.error["ename"] == "KeyboardInterrupt"
    assert 'File "<cell b>", line' in "\n".join(result.error["traceback"])
    assert (await runner.run("c", "kept")).outputs[0]["data"] == "7"
    assert not await runner.interrupt()  # nothing running


async def test_interrupt_wakes_a_sleeping_cell(runner):
    chunks = []
    task = asyncio.create_task(runner.run("a", "import time\nprint('sleeping', flush=True)\ntime.sleep(60)", on_stdout=chunks.append))
    await until(lambda: chunks)
    await runner.interrupt()
    assert (await asyncio.wait_for(task, 5)).error["ename"] == "KeyboardInterrupt"


async def test_time_limit_interrupts_with_a_clear_error():
    runner = Runner(time_limit=1, output_cap=1000)
    try:
        await runner.run("a", "survivor = 1", writes=["survivor"])
        result = await runner.run("b", "while True:\n    pass")
        assert result.error["ename"] == "TimeoutError" and "1 s time limit" in result.error["evalue"]
        assert (await runner.run("c", "survivor")).outputs[0]["data"] == "1"
    finally:
        await runner.close()


async def test_a_cell_that_ignores_interrupts_is_killed_and_the_runner_restarts():
    runner = Runner(time_limit=1, output_cap=1000)
    try:
        code = "import signal, time\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\nwhile True:\n    time.sleep(0.01)"
        with pytest.raises(RunnerDied, match="did not stop"):
            await runner.run("a", code)
        assert not runner.alive
        await runner.start()
        assert (await runner.run("b", "1 + 1")).outputs[0]["data"] == "2"
    finally:
        await runner.close()


@pytest.mark.parametrize(
    "code, reason",
    [
        ("import os\nos._exit(3)", "exited with code 3"),
        ("import ctypes\nctypes.string_at(0)", "SIGSEGV"),
        ("import os, signal\nos.kill(os.getpid(), signal.SIGKILL)", "SIGKILL"),
    ],
)
async def test_death_is_reported_and_a_new_process_starts_empty(runner, code, reason):
    await runner.run("a", "before = 1", writes=["before"])
    first = runner.pid
    with pytest.raises(RunnerDied) as died:
        await runner.run("b", code)
    assert reason in died.value.reason and not runner.alive
    await runner.start()
    assert runner.pid != first
    assert (await runner.run("c", "before")).error["ename"] == "NameError"


async def test_memory_limit_makes_huge_allocations_fail_not_the_worker(runner):
    result = await runner.run("a", "blob = bytearray(3 * 1024 ** 3)")
    assert result.error["ename"] == "MemoryError"
    assert (await runner.run("b", "2 + 2")).outputs[0]["data"] == "4"


async def test_input_gets_eof_instead_of_reading_the_protocol(runner):
    result = await runner.run("a", "input()")
    assert result.error["ename"] == "EOFError"
    assert (await runner.run("b", "3")).outputs[0]["data"] == "3"


async def test_top_level_await(runner):
    result = await runner.run("a", "import asyncio\nawait asyncio.sleep(0.01)\n'awaited'")
    assert result.outputs[0]["data"] == "'awaited'"


async def test_child_exits_when_the_runner_closes(runner):
    pid = runner.pid
    await runner.close()
    assert runner.process.returncode is not None
    with pytest.raises(ProcessLookupError):
        import os

        os.kill(pid, 0)


async def collect_batch(runner, codes, **kwargs):
    stdout = {}
    cells = [{"cell": f"c{i}", "code": code, "writes": [], "inputs": {}} for i, code in enumerate(codes)]
    results = [r async for r in runner.run_batch(cells, on_stdout=lambda index, text: stdout.setdefault(index, []).append(text), **kwargs)]
    return results, {index: "".join(texts) for index, texts in stdout.items()}


async def test_a_batch_answers_each_cell_in_order_with_its_own_stdout(runner):
    results, stdout = await collect_batch(runner, ["a = 1\nprint('one')", "b = a + 1\nprint('two')\nb", "1 / 0", "print('four')\nb * 2"])
    assert [r.status for r in results] == ["success", "success", "error", "success"]
    assert results[1].outputs == [{"mimeType": "text/plain", "data": "2"}] and results[3].outputs[0]["data"] == "4"
    assert results[2].error["ename"] == "ZeroDivisionError"
    assert stdout == {0: "one\n", 1: "two\n", 3: "four\n"}
    assert (await runner.run("after", "a + b")).outputs[0]["data"] == "3"  # one namespace throughout


async def test_the_time_limit_stops_only_its_own_cell_of_a_batch():
    runner = Runner(time_limit=1, output_cap=1000)
    try:
        results, _ = await collect_batch(runner, ["x = 1", "import time\nwhile True:\n    time.sleep(0.01)", "x + 1"])
        assert [r.status for r in results] == ["success", "error", "success"]
        assert results[1].error["ename"] == "TimeoutError" and results[2].outputs[0]["data"] == "2"
    finally:
        await runner.close()


async def test_a_death_in_a_batch_yields_the_results_before_it_then_raises(runner):
    cells = [{"cell": f"c{i}", "code": code} for i, code in enumerate(["a = 1\na", "import os\nos._exit(5)", "a"])]
    seen = []
    with pytest.raises(RunnerDied, match="exited with code 5"):
        async for result in runner.run_batch(cells):
            seen.append(result.outputs[0]["data"])
    assert seen == ["1"] and not runner.alive
