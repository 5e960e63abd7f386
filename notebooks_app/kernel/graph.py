"""The notebook's dependency graph: which cell feeds which, which are blocked, in what order to run.

Pure and incremental: no I/O, no Django, nothing of the project but cycles.py (which keeps
its cycles).  The kernel worker feeds it each cell's reads and writes (from
kernel/analysis.py) and acts on its answers.

Semantics:

* B is a child of A when B reads a name A writes.  A cell reading a name it writes
  itself has no self edge.
* A name written by two or more cells blocks every one of them ("multiple definitions").
* Every cell on a cycle (a strongly connected component of two or more cells) is blocked.
  Fixing or removing a culprit unblocks the rest.
* `ancestors` and `descendants` never include the cell itself, even on a cycle.
* `topological` orders any subset by the edges among it, ties by position; the cells of
  one cycle come together, by position.

Cost: edges are counted per (writer, reader) pair through name -> writers and
name -> readers indexes, so a change costs time proportional to the names it changes.
Every edge a change adds or removes touches the changed cell, so only cycles through
that cell can appear or break: the graph re-examines the cell's old cycle (if any) and
searches for a new one only when the cell has both parents and children (its
descendants, then its ancestors).  Appending a cell to a notebook, or editing a
cell nobody reads, never walks the graph.  No recursion anywhere: a 10,000-cell chain
is fine.
"""
from heapq import heapify, heappop, heappush
from typing import Iterable

from .cycles import Cycles, reachable, reachable_from

_EMPTY = frozenset()
CYCLE_PATH_LIMIT = 10  # cells of a cycle named in blocked_details before it is cut short


class _Cell:
    __slots__ = ("reads", "writes", "position")

    def __init__(self, position):
        self.reads = _EMPTY
        self.writes = _EMPTY
        self.position = position


class DependencyGraph:
    def __init__(self):
        self._cells = {}
        self._writers = {}  # name -> set of cell ids writing it
        self._readers = {}  # name -> set of cell ids reading it
        self._succ = {}  # cell -> {child: number of names carrying the edge}
        self._pred = {}  # cell -> {parent: same count}
        self._cycles = Cycles(self._succ, self._pred)  # every cycle, and the cycle each cell is on
        self._conflicts = set()  # names with two or more writers
        # A topological number per cell (every edge goes from a lower to a higher one),
        # kept while the graph has no cycle (None otherwise): a new edge that agrees with it
        # cannot close a cycle, so most edits need no search at all (Pearce and Kelly).
        self._ord = {}
        self._next_ord = 0

    @classmethod
    def from_cells(cls, cells: Iterable[tuple]) -> "DependencyGraph":
        """Build from scratch from (cell_id, reads, writes, position) tuples.

        A separate path from the incremental one (one strongly-connected-components pass
        over everything), which the tests hold the incremental updates against.
        """
        graph = cls()
        for cell_id, reads, writes, position in cells:
            if cell_id in graph._cells:
                raise ValueError(f"cell {cell_id} is listed twice")
            cell = graph._cells[cell_id] = _Cell(position)
            cell.reads, cell.writes = frozenset(reads), frozenset(writes)
            graph._succ[cell_id], graph._pred[cell_id] = {}, {}
            for name in cell.reads:
                graph._readers.setdefault(name, set()).add(cell_id)
            for name in cell.writes:
                graph._writers.setdefault(name, set()).add(cell_id)
        for name, writers in graph._writers.items():
            if len(writers) > 1:
                graph._conflicts.add(name)
            for reader in graph._readers.get(name, ()):
                for writer in writers:
                    if writer != reader:
                        graph._succ[writer][reader] = graph._succ[writer].get(reader, 0) + 1
                        graph._pred[reader][writer] = graph._pred[reader].get(writer, 0) + 1
        graph._cycles.find_all(graph._cells)
        graph._renumber()
        return graph

    # --- editing ---------------------------------------------------------------------
    def add(self, cell_id: str, *, reads: Iterable[str], writes: Iterable[str], position: float) -> None:
        if cell_id in self._cells:
            raise ValueError(f"cell {cell_id} is already in the graph")
        reads, writes = frozenset(reads), frozenset(writes)
        self._cells[cell_id] = _Cell(position)
        self._succ[cell_id], self._pred[cell_id] = {}, {}
        if self._ord is not None:
            self._ord[cell_id] = self._next_ord  # after everything: its edges reorder what they must
            self._next_ord += 1
        self._change(cell_id, reads, writes)

    def update(self, cell_id: str, *, reads: Iterable[str], writes: Iterable[str], position: float | None = None) -> None:
        cell = self._cell(cell_id)
        self._change(cell_id, frozenset(reads), frozenset(writes))
        if position is not None:
            cell.position = position

    def remove(self, cell_id: str) -> None:
        self._cell(cell_id)
        # Without reads and writes the cell has no edges, so it is on no cycle.
        self._change(cell_id, _EMPTY, _EMPTY)
        del self._cells[cell_id], self._succ[cell_id], self._pred[cell_id]
        if self._ord is not None:
            del self._ord[cell_id]

    def set_position(self, cell_id: str, position: float) -> None:
        self._cell(cell_id).position = position

    # --- questions -------------------------------------------------------------------
    def __contains__(self, cell_id) -> bool:
        return cell_id in self._cells

    def __len__(self) -> int:
        return len(self._cells)

    def cell_ids(self) -> list[str]:
        """Every cell, in position order (ties by id)."""
        return sorted(self._cells, key=self._order_key)

    def reads(self, cell_id: str) -> frozenset:
        return self._cell(cell_id).reads

    def writes(self, cell_id: str) -> frozenset:
        return self._cell(cell_id).writes

    def position(self, cell_id: str) -> float:
        return self._cell(cell_id).position

    def definers(self, name: str) -> set[str]:
        return set(self._writers.get(name, ()))

    def parents(self, cell_id: str) -> set[str]:
        self._cell(cell_id)
        return set(self._pred[cell_id])

    def children(self, cell_id: str) -> set[str]:
        self._cell(cell_id)
        return set(self._succ[cell_id])

    def ancestors(self, cell_id: str) -> set[str]:
        self._cell(cell_id)
        return reachable(cell_id, self._pred)

    def descendants(self, cell_id: str) -> set[str]:
        self._cell(cell_id)
        return reachable(cell_id, self._succ)

    def ancestors_of(self, cell_ids: Iterable[str]) -> set[str]:
        """Every cell that some cell of `cell_ids` depends on, in one traversal: O(cells + edges)
        however many cells are asked about (members are included only as ancestors of others)."""
        return reachable_from(cell_ids, self._pred)

    def descendants_of(self, cell_ids: Iterable[str]) -> set[str]:
        """Every cell that depends on some cell of `cell_ids`, in one traversal."""
        return reachable_from(cell_ids, self._succ)

    def topological(self, cell_ids: Iterable[str]) -> list[str]:
        """`cell_ids` in an order that respects the edges among them, ties by position.

        Unknown ids are left out.  The cells of one cycle are one unit, placed (and
        ordered inside) by position.  Paths through cells outside the subset are not
        considered.
        """
        key = {cell_id: (self._cells[cell_id].position, cell_id) for cell_id in cell_ids if cell_id in self._cells}
        # Each unit is named by its first cell; a cell alone in its component is its own unit.
        unit_of, members_of, groups = {}, {}, {}
        for cell_id in key:
            component = self._cycles.of.get(cell_id)
            if component is None:
                unit_of[cell_id] = cell_id
                members_of[cell_id] = (cell_id,)
            else:
                groups.setdefault(component, []).append(cell_id)
        for members in groups.values():
            members.sort(key=key.__getitem__)
            for cell_id in members:
                unit_of[cell_id] = members[0]
            members_of[members[0]] = members
        indegree = dict.fromkeys(members_of, 0)
        successors = {unit: set() for unit in members_of}
        for cell_id, unit in unit_of.items():
            for child in self._succ[cell_id]:
                other = unit_of.get(child)
                if other is not None and other != unit and other not in successors[unit]:
                    successors[unit].add(other)
                    indegree[other] += 1
        ready = [key[unit] for unit, count in indegree.items() if count == 0]
        heapify(ready)
        order = []
        while ready:
            unit = heappop(ready)[1]
            order.extend(members_of[unit])
            for other in successors[unit]:
                indegree[other] -= 1
                if indegree[other] == 0:
                    heappush(ready, key[other])
        return order

    def blocked(self) -> dict[str, str]:
        """cell id -> message, for every blocked cell, in position order."""
        cells = set()
        for name in self._conflicts:
            cells |= self._writers[name]
        for component in self._cycles.components:
            cells |= component.members
        return {cell_id: self.blocked_reason(cell_id) for cell_id in sorted(cells, key=self._order_key)}

    def blocked_reason(self, cell_id: str) -> str | None:
        parts = []
        for detail in self.blocked_details(cell_id):
            if detail["kind"] == "cycle":
                shown = " -> ".join(detail["cells"])
                if len(detail["cells"]) <= detail["length"]:  # cut short: the path does not close
                    shown += f" -> ... ({detail['length']} cells)"
                parts.append("cycle: " + shown)
            else:
                others = detail["cells"]
                noun = "cell" if len(others) == 1 else "cells"
                parts.append(f"'{detail['name']}' is also defined by {noun} {', '.join(others)}")
        return "; ".join(parts) or None

    def blocked_details(self, cell_id: str) -> list[dict]:
        """Why a cell is blocked, as data (the worker names cells its own way).

        `{"kind": "multiple_definitions", "name": n, "cells": [other writers]}` per name,
        then `{"kind": "cycle", "cells": [this cell, ..., this cell], "length": n}`: a
        cycle of n cells through this one (a shortest one when the cell is where the search
        started), as a path that starts and ends with it.  Past CYCLE_PATH_LIMIT cells the
        path is cut short (it does not return to the cell), so that a cycle of thousands
        of cells does not cost thousands of ids for each of them.
        """
        cell = self._cell(cell_id)
        details = []
        for name in sorted(cell.writes):
            writers = self._writers[name]
            if len(writers) > 1:
                details.append({"kind": "multiple_definitions", "name": name, "cells": sorted(writers - {cell_id})})
        found = self._cycles.cycle_through(cell_id)
        if found is not None:
            cycle, offset = found
            length = len(cycle)
            if length < CYCLE_PATH_LIMIT:
                path = cycle[offset:] + cycle[:offset] + [cell_id]
            else:
                path = [cycle[(offset + step) % length] for step in range(CYCLE_PATH_LIMIT)]
            details.append({"kind": "cycle", "cells": path, "length": length})
        return details

    def snapshot(self) -> dict:
        """Everything observable, in a canonical form: equal graphs give equal snapshots."""
        blocked = self.blocked()
        return {
            "cells": {
                cell_id: {"reads": sorted(cell.reads), "writes": sorted(cell.writes), "position": cell.position}
                for cell_id, cell in sorted(self._cells.items())
            },
            "edges": sorted((parent, child) for parent, children in self._succ.items() for child in children),
            "cycles": sorted(sorted(component.members) for component in self._cycles.components),
            "blocked": blocked,
            "details": {cell_id: self.blocked_details(cell_id) for cell_id in blocked},
            "order": self.topological(self._cells),
        }

    # --- internals: cells and edges ----------------------------------------------------
    def _cell(self, cell_id):
        try:
            return self._cells[cell_id]
        except KeyError:
            raise KeyError(f"cell {cell_id} is not in the graph") from None

    def _order_key(self, cell_id):
        return (self._cells[cell_id].position, cell_id)

    def _change(self, cell_id, reads, writes):
        """Give a cell new reads and writes, keeping indexes, edges and components exact."""
        cell = self._cells[cell_id]
        old_reads, old_writes = cell.reads, cell.writes
        if reads == old_reads and writes == old_writes:
            return
        appeared, vanished = [], False

        def shift(parent, child, delta):
            nonlocal vanished
            count = self._succ[parent].get(child, 0) + delta
            if count:
                self._succ[parent][child] = self._pred[child][parent] = count
            else:
                del self._succ[parent][child], self._pred[child][parent]
            if delta > 0 and count == 1:
                appeared.append((parent, child))
            vanished = vanished or count == 0

        for name in reads - old_reads:
            self._readers.setdefault(name, set()).add(cell_id)
            for writer in self._writers.get(name, ()):
                if writer != cell_id:
                    shift(writer, cell_id, +1)
        for name in old_reads - reads:
            _discard(self._readers, name, cell_id)
            for writer in self._writers.get(name, ()):
                if writer != cell_id:
                    shift(writer, cell_id, -1)
        for name in writes - old_writes:
            writers = self._writers.setdefault(name, set())
            writers.add(cell_id)
            if len(writers) > 1:
                self._conflicts.add(name)
            for reader in self._readers.get(name, ()):
                if reader != cell_id:
                    shift(cell_id, reader, +1)
        for name in old_writes - writes:
            _discard(self._writers, name, cell_id)
            if len(self._writers.get(name, ())) < 2:
                self._conflicts.discard(name)
            for reader in self._readers.get(name, ()):
                if reader != cell_id:
                    shift(cell_id, reader, -1)
        cell.reads, cell.writes = reads, writes
        if self._ord is not None:
            # Acyclic before this change, and losing edges never makes a cycle: only a new
            # edge the order disagrees with can, and the order tells where to look.
            if all(self._order_edge(parent, child) for parent, child in appeared):
                return
            self._ord = None  # a cycle formed: find it the general way below
        if appeared or vanished:
            self._cycles.recompute(cell_id, search=bool(appeared))
            if not self._cycles.components:
                self._renumber()

    # --- internals: the topological numbering of an acyclic graph ------------------------
    def _order_edge(self, parent, child):
        """Pearce-Kelly: restore `ord` after adding parent -> child; False if that closed a cycle.

        Searches only the cells numbered between the two ends: forward from the child, back
        from the parent, then hands the union of their numbers out again, the parent's side
        first.  Both searches are bounded on both sides: a change that adds several edges
        puts them all in place before ordering them one by one, so an edge still waiting its
        turn can lead outside the window, and a cell from there would bring its number into
        the pool (and, given it, break an edge already ordered).
        """
        order = self._ord
        if order[parent] < order[child]:
            return True
        low, high = order[child], order[parent]
        forward = reachable(child, self._succ, lambda cell: low < order[cell] <= high) | {child}
        if parent in forward:
            return False
        backward = reachable(parent, self._pred, lambda cell: low < order[cell] < high) | {parent}
        cells = sorted(backward, key=order.__getitem__) + sorted(forward, key=order.__getitem__)
        for cell_id, number in zip(cells, sorted(order[c] for c in cells)):
            order[cell_id] = number
        return True

    def _renumber(self):
        """Number an acyclic graph from scratch (Kahn's algorithm); None while it has cycles."""
        if self._cycles.components:
            self._ord = None
            return
        indegree = {cell_id: len(parents) for cell_id, parents in self._pred.items()}
        ready = [cell_id for cell_id, count in indegree.items() if count == 0]
        order = {}
        while ready:
            cell_id = ready.pop()
            order[cell_id] = len(order)
            for child in self._succ[cell_id]:
                indegree[child] -= 1
                if indegree[child] == 0:
                    ready.append(child)
        self._ord, self._next_ord = order, len(order)


def _discard(index, name, cell_id):
    holders = index.get(name)
    if holders is not None:
        holders.discard(cell_id)
        if not holders:
            del index[name]
