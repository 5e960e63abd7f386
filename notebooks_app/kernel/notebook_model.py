"""One notebook's cells as the kernel knows them: the cells, their order, the dependency graph,
which ran successfully in the current execution process, which crashed it, which were unblocked
since they last ran, and what running some of them must run (the cascade plan).

Pure: no asyncio, no I/O, nothing announced.  It answers and records; statuses.py turns its
answers into statuses clients see, and the session decides when to ask.
"""
import bisect
import re
from dataclasses import dataclass

from ..constants import CELL_SQL, STATE_INLINE_OUTPUT_CELLS, STATUS_BLOCKED, STATUS_ERROR, STATUS_STALE
from .cell_state import TRANSIENT, CellState
from .graph import DependencyGraph


# Python's message for a name that is not bound (and the SQL and markdown cells' variants of it).
_NOT_DEFINED = re.compile(r"name '([A-Za-z_][A-Za-z0-9_]*)' is not defined")


@dataclass
class CascadePlan:
    run: set  # the cells to run, in one topological order
    stale: set  # other dependents of out-of-date ancestors: their inputs change


class NotebookModel:
    def __init__(self):
        self.gone = False  # the notebook no longer exists
        self.cells = {}
        self.order = []  # [(position, id)] sorted
        self.graph = DependencyGraph()
        self.ran_ok = set()  # cells run successfully in this execution process since their last change
        # Cells whose run killed the execution process: no cascade runs them again (nor what
        # depends on them) until their code changes or someone runs that very cell.
        self.crashed = set()
        self.unblocked = set()  # cells unblocked since they last ran: the next run includes them
        # The notebook files each cell opened on its last run (file_reads.py): edges from a file
        # to its readers, which rerun when it changes.
        self.files_read = {}  # cell id -> (paths, tick of the run's end)
        self.ticks = 0
        self.files = []  # the notebook's current files, as notebook_state describes them

    def files_opened(self, cell_id, paths):
        """`cell_id`'s run just ended having opened `paths`: noted, with when (a tick)."""
        self.ticks += 1
        self.files_read[cell_id] = (set(paths), self.ticks)

    def tick(self):
        self.ticks += 1
        return self.ticks

    def readers_of(self, paths, before=None):
        """Cells that opened any of `paths` on their last run and are still here (`before`: only
        runs that ended before that tick: a file a cell saved is read fresh by runs after it)."""
        paths = set(paths)
        return {
            cell_id
            for cell_id, (read, tick) in self.files_read.items()
            if read & paths and cell_id in self.cells and (before is None or tick < before)
        }

    # --- loading -----------------------------------------------------------------------
    def load(self, rows):
        """Replace everything with the stored `rows`; the ids of cells whose stored row is out of
        date (a run a stopped worker never finished, an analysis of other code)."""
        self.gone = False
        self.cells, self.order, self.graph = {}, [], DependencyGraph()
        self.ran_ok.clear()
        self.crashed.clear()
        self.unblocked.clear()
        outdated = set()
        for row in rows:
            cell = CellState.from_row(row)
            if cell.status in TRANSIENT:
                cell.status = STATUS_STALE  # a worker stopped mid-run: its result never arrived
                outdated.add(cell.id)
            # The stored analysis when it is of this code; otherwise analysed again, and stored.
            if not cell.restore_analysis(row):
                cell.analyse()
                outdated.add(cell.id)
            self.cells[cell.id] = cell
            if cell.status == STATUS_ERROR and (cell.error or {}).get("ename") == "KernelDied":
                self.crashed.add(cell.id)
        # Order and graph built in one pass each (10,000 cells: graph 0.5 s added one by one).
        self.order = sorted((cell.position, cell.id) for cell in self.cells.values())
        self.graph = DependencyGraph.from_cells((cell.id, cell.graph_reads, cell.writes, cell.position) for cell in self.cells.values())
        return outdated

    def clear(self):
        """The notebook is gone."""
        self.load(())
        self.gone = True

    # --- structure -----------------------------------------------------------------------
    def insert(self, cell):
        cell.analyse()
        self.cells[cell.id] = cell
        bisect.insort(self.order, (cell.position, cell.id))
        self.graph.add(cell.id, reads=cell.graph_reads, writes=cell.writes, position=cell.position)

    def remove(self, cell_id):
        cell = self.cells.pop(cell_id)
        del self.order[bisect.bisect_left(self.order, (cell.position, cell_id))]
        self.graph.remove(cell_id)
        for bookkeeping in (self.ran_ok, self.crashed, self.unblocked):
            bookkeeping.discard(cell_id)
        return cell

    def reposition(self, positions):
        for cell_id, position in positions.items():
            cell = self.cells.get(cell_id)
            if cell is not None and cell.position != position:
                cell.position = position
                self.graph.set_position(cell_id, position)
        self.order = sorted((c.position, c.id) for c in self.cells.values())

    def change_code(self, cell, code, result_variable):
        """New code: a new analysis and new edges; a cell that crashed may run again."""
        cell.code = code
        cell.result_variable = result_variable
        self.crashed.discard(cell.id)
        cell.analyse()
        self.graph.update(cell.id, reads=cell.graph_reads, writes=cell.writes)

    # --- questions -----------------------------------------------------------------------
    def index_of(self, cell_id):
        cell = self.cells[cell_id]
        return bisect.bisect_left(self.order, (cell.position, cell_id))

    def ordered_cells(self):
        return [self.cells[cell_id] for _, cell_id in self.order]

    def cell_messages(self, stdout_url, extra, outputs_url=None):
        """Every cell in order as a state carries it (one at a time), with `extra(cell)`'s fields
        (its shared text: cell_texts.fields); the outputs of cells after the first
        STATE_INLINE_OUTPUT_CELLS by reference (`outputs_url`, cell_state.to_message)."""
        for index, cell in enumerate(self.ordered_cells()):
            message = cell.to_message(stdout_url, outputs_url if index >= STATE_INLINE_OUTPUT_CELLS else None)
            message.update(extra(cell))
            yield message

    def in_order(self, cell_ids):
        """`cell_ids` in notebook order (unknown ones first)."""
        return sorted(cell_ids, key=lambda c: self.index_of(c) if c in self.cells else -1)

    def label(self, cell_id):
        cell = self.cells.get(cell_id)
        if cell is None:
            return "a deleted cell"
        first = next((line.strip() for line in cell.code.splitlines() if line.strip()), "")
        snippet = f" ({first[:40]})" if first else ""
        return f"cell {self.index_of(cell_id) + 1}{snippet}"

    def blocked_error(self, cell_id):
        details = self.graph.blocked_details(cell_id)
        parts, ename = [], "MultipleDefinitionError"
        for detail in details:
            if detail["kind"] == "cycle":
                ename = "CycleError"
                path = " → ".join(self.label(c) for c in detail["cells"])
                parts.append(f"this cell is on a cycle: {path}")
            else:
                others = ", ".join(self.label(c) for c in detail["cells"])
                parts.append(f"'{detail['name']}' is also defined by {others}")
        return {"ename": ename, "evalue": "; ".join(parts) or (self.graph.blocked_reason(cell_id) or "blocked"), "traceback": []}

    def explain_undefined(self, error):
        """`error` as a cell that failed should show it: a NameError for a name whose every
        definition is in a blocked cell says so (the execution process does not hold the
        blocked cells' names, and does not know why); any other error as it is."""
        if not error or error.get("ename") != "NameError":
            return error
        match = _NOT_DEFINED.search(error.get("evalue") or "")
        why = match and self.blocked_definition(match.group(1))
        if not why:
            return error
        traceback = [f"NameError: {why}" if _NOT_DEFINED.match(line, len("NameError: ")) else line for line in error.get("traceback") or ()]
        return {**error, "evalue": why, "traceback": traceback}

    def blocked_definition(self, name):
        """Why `name` has no value when only blocked cells assign it ("`x` is defined by a
        blocked cell: cell 3 and cell 5 both assign it", cells numbered as the page shows them);
        None when no cell assigns it, or one that is not blocked does."""
        writers = self.graph.definers(name)
        if not writers:
            return None
        numbers = sorted(self.index_of(c) + 1 for c in writers if c in self.cells)
        if len(numbers) == 2:  # a name with two definitions blocks both (graph.py)
            return f"`{name}` is defined by a blocked cell: cell {numbers[0]} and cell {numbers[1]} both assign it"
        if len(numbers) > 2:
            return f"`{name}` is defined by a blocked cell: cells {', '.join(map(str, numbers[:-1]))} and {numbers[-1]} all assign it"
        (writer,) = writers
        reasons = []
        for detail in self.graph.blocked_details(writer):
            cells = [f"cell {self.index_of(c) + 1}" if c in self.cells else "a deleted cell" for c in detail["cells"]]
            if detail["kind"] == "cycle":
                cut = " → …" if len(detail["cells"]) <= detail["length"] else ""
                reasons.append(f"it is on a cycle ({' → '.join(cells)}{cut})")
            else:
                reasons.append(f"it also assigns `{detail['name']}`, as {' and '.join(cells)} {'does' if len(cells) == 1 else 'do'}")
        if not reasons:
            return None
        return f"`{name}` is defined by a blocked cell: cell {numbers[0]}, blocked because " + "; ".join(reasons)

    def blocked_changes(self):
        """What the graph's blocked set changes: [(cell, its blocked error)] to block (or whose
        error changed), and the blocked cells the graph no longer blocks."""
        blocked = self.graph.blocked()
        block = []
        for cell_id in blocked:
            cell = self.cells[cell_id]
            error = self.blocked_error(cell_id)
            if cell.status != STATUS_BLOCKED or cell.error != error:
                block.append((cell, error))
        unblock = [cell for cell in self.cells.values() if cell.status == STATUS_BLOCKED and cell.id not in blocked]
        return block, unblock

    def plan_cascade(self, roots):
        """What running `roots` must run, in one topological order (`CascadePlan`); changes nothing.

        The roots and everything downstream of them, plus every ancestor of any of those
        that is out of date (changed or never run since the execution process started), so no
        cell runs on inputs the cascade did not bring up to date.  Cells whose run killed the
        process, and what depends on them, are left out (unless run themselves: run_cell).
        Other dependents of the out-of-date ancestors are `stale` in the plan: their inputs change.
        """
        graph, crashed = self.graph, self.crashed
        held_back = crashed | graph.descendants_of(crashed) if crashed else set()
        to_run = (set(roots) | graph.descendants_of(roots)) - held_back
        stale_upstream = {c for c in graph.ancestors_of(to_run) if c not in self.ran_ok} - held_back
        to_run |= stale_upstream
        stale = graph.descendants_of(stale_upstream) - to_run if stale_upstream else set()
        return CascadePlan(run=to_run, stale=stale)

    def runnable(self, cell_ids):
        """The cells of `cell_ids` that can run, in topological order (ties by position)."""
        cells = self.cells
        return [cells[c] for c in self.graph.topological(cell_ids) if c in cells and cells[c].status != STATUS_BLOCKED]

    def sql_dependents(self):
        """Every SQL cell and what depends on it: what a new database connection changes."""
        affected = set()
        for cell in self.cells.values():
            if cell.type == CELL_SQL:
                affected |= {cell.id} | self.graph.descendants(cell.id)
        return affected
