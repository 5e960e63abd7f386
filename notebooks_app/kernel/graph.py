"""The notebook's dependency graph: which cell feeds which, which are blocked, in what order to run.

Pure and incremental: no I/O, no Django, nothing of the project.  The kernel worker
feeds it each cell's reads and writes (from kernel/analysis.py) and acts on its answers.

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
Cycles are found with Pearce and Kelly's dynamic topological order over the
components: every component holds a rank, each edge between components goes from a
lower to a higher rank, and inserting an edge only searches the cells ranked between
its two ends (nothing at all when the edge already agrees with the order).  Breaking a
cycle re-examines that cycle only.  No recursion anywhere: a 10,000-cell chain is fine.
"""
from collections import deque
from heapq import heapify, heappop, heappush
from typing import Iterable

_EMPTY = frozenset()
CYCLE_PATH_LIMIT = 10  # cells of a cycle named in blocked_details before it is cut short


class _Cell:
    __slots__ = ("reads", "writes", "position")

    def __init__(self, position):
        self.reads = _EMPTY
        self.writes = _EMPTY
        self.position = position


class _Component:
    """A strongly connected component; most are a single cell."""

    __slots__ = ("members", "rank", "paths")

    def __init__(self, members, rank=0.0):
        self.members = members
        self.rank = rank
        self.paths = None  # cell -> (a cycle through it, its index there), computed when asked for


class DependencyGraph:
    def __init__(self):
        self._cells = {}
        self._writers = {}  # name -> set of cell ids writing it
        self._readers = {}  # name -> set of cell ids reading it
        self._succ = {}  # cell -> {child: number of names carrying the edge}
        self._pred = {}  # cell -> {parent: same count}
        self._component = {}  # cell -> _Component
        self._cycles = set()  # components of two or more cells
        self._conflicts = set()  # names with two or more writers
        self._ranks = set()  # ranks in use, so a new rank never collides
        self._low = 0.0
        self._high = 0.0

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
        for rank, members in enumerate(_strong_components(graph._cells, graph._succ)):
            graph._install(_Component(set(members), float(rank)))
        graph._high = float(len(graph._ranks))
        return graph

    # --- editing ---------------------------------------------------------------------
    def add(self, cell_id: str, *, reads: Iterable[str], writes: Iterable[str], position: float) -> None:
        if cell_id in self._cells:
            raise ValueError(f"cell {cell_id} is already in the graph")
        reads, writes = frozenset(reads), frozenset(writes)
        self._cells[cell_id] = _Cell(position)
        self._succ[cell_id], self._pred[cell_id] = {}, {}
        self._install(_Component({cell_id}, self._rank_for_new_cell(cell_id, reads, writes)))
        self._change(cell_id, reads, writes)

    def update(self, cell_id: str, *, reads: Iterable[str], writes: Iterable[str], position: float | None = None) -> None:
        cell = self._cell(cell_id)
        self._change(cell_id, frozenset(reads), frozenset(writes))
        if position is not None:
            cell.position = position

    def remove(self, cell_id: str) -> None:
        self._cell(cell_id)
        # Without reads and writes the cell has no edges, so it is alone in its component.
        self._change(cell_id, _EMPTY, _EMPTY)
        component = self._component.pop(cell_id)
        self._ranks.discard(component.rank)
        del self._cells[cell_id], self._succ[cell_id], self._pred[cell_id]

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
        return _reachable(cell_id, self._pred)

    def descendants(self, cell_id: str) -> set[str]:
        self._cell(cell_id)
        return _reachable(cell_id, self._succ)

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
            component = self._component[cell_id]
            if len(component.members) == 1:
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
        for component in self._cycles:
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
        component = self._component[cell_id]
        if len(component.members) > 1:
            cycle, offset = self._cycles_through(component)[cell_id]
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
            "cycles": sorted(sorted(component.members) for component in self._cycles),
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
        before = {}  # (parent, child) -> count before this change, for every pair touched

        def shift(parent, child, delta):
            count = self._succ[parent].get(child, 0)
            before.setdefault((parent, child), count)
            count += delta
            if count:
                self._succ[parent][child] = self._pred[child][parent] = count
            else:
                del self._succ[parent][child], self._pred[child][parent]

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

        # Keep the order valid: first take out the new edges, let removed edges break
        # cycles, then put the new edges back one at a time (the insertion algorithm
        # needs every other edge to agree with the order already).
        added, broken = [], set()
        for (parent, child), count in before.items():
            now = self._succ[parent].get(child, 0)
            if count == 0 and now:
                added.append((parent, child, now))
                del self._succ[parent][child], self._pred[child][parent]
            elif count and not now and self._component[parent] is self._component[child]:
                broken.add(self._component[parent])
        for component in broken:
            self._split(component)
        for parent, child, count in sorted(added):
            self._succ[parent][child] = self._pred[child][parent] = count
            self._insert_edge(parent, child)

    # --- internals: components and their order ------------------------------------------
    def _install(self, component):
        for cell_id in component.members:
            self._component[cell_id] = component
        self._ranks.add(component.rank)
        if len(component.members) > 1:
            self._cycles.add(component)

    def _uninstall(self, component):
        self._ranks.discard(component.rank)
        self._cycles.discard(component)

    def _rank_for_new_cell(self, cell_id, reads, writes):
        """A rank after the new cell's parents and before its children, where possible.

        Adding cells in notebook order (parents first) then never reorders anything.
        """
        parent_ranks = [self._component[w].rank for name in reads for w in self._writers.get(name, ())]
        child_ranks = [self._component[r].rank for name in writes for r in self._readers.get(name, ())]
        if parent_ranks and child_ranks:
            low, high = max(parent_ranks), min(child_ranks)
            middle = (low + high) / 2
            if low < middle < high and middle not in self._ranks:
                return middle
        if child_ranks and not parent_ranks:
            self._low -= 1.0
            return self._low
        self._high += 1.0  # after everything; the out-edges, if any, reorder what they must
        return self._high

    def _insert_edge(self, parent, child):
        """Pearce-Kelly: restore the order after adding parent -> child; merge a new cycle."""
        source, target = self._component[parent], self._component[child]
        if source is target:
            source.paths = None  # a new edge inside a cycle may shorten its paths
            return
        if source.rank < target.rank:
            return
        low, high = target.rank, source.rank
        forward = self._search(target, self._succ, lambda rank: rank <= high)
        backward = self._search(source, self._pred, lambda rank: rank >= low)
        pool = sorted(component.rank for component in forward | backward)
        on_cycle = forward & backward  # reachable from child and reaching parent
        ahead = sorted(backward - on_cycle, key=_rank)
        behind = sorted(forward - on_cycle, key=_rank)
        for component in forward | backward:
            self._uninstall(component)
        middle = []
        if on_cycle:
            merged = _Component(set().union(*(c.members for c in on_cycle)))
            middle = [merged]
        for component, rank in zip(ahead + middle + behind, pool):
            component.rank = rank
            self._install(component)

    def _search(self, start, edges, within):
        """Components reachable from `start` along `edges` whose rank satisfies `within`."""
        seen, stack = {start}, [start]
        while stack:
            component = stack.pop()
            for cell_id in component.members:
                for neighbour in edges[cell_id]:
                    other = self._component[neighbour]
                    if other not in seen and within(other.rank):
                        seen.add(other)
                        stack.append(other)
        return seen

    def _split(self, component):
        """A cycle lost an edge: recompute its components and renumber the order."""
        parts = _strong_components(component.members, self._succ)
        if True:
            component.paths = None
            return
        self._uninstall(component)
        ordered = sorted({*self._component.values()} - {component}, key=_rank)
        # Splitting needs fresh ranks where the cycle's single rank was; cycles are rare
        # and small next to a renumbering, which is linear in the number of components.
        position = next((i for i, c in enumerate(ordered) if c.rank > component.rank), len(ordered))
        ordered[position:position] = [_Component(set(members)) for members in parts]
        self._ranks.clear()
        for rank, part in enumerate(ordered):
            part.rank = float(rank)
            self._install(part)
        self._low, self._high = 0.0, float(len(ordered))

    def _cycles_through(self, component):
        """cell -> (a cycle through it, its index there), decided once per component.

        Members are taken in sorted order; each search finds a shortest cycle through one
        member, which also serves every other member on it, so a ring of 5,000 cells
        costs one search, and the answer never depends on which cell was asked about first.
        """
        if component.paths is None:
            paths = {}
            for start in sorted(component.members):
                if start not in paths:
                    cycle = self._shortest_cycle(start, component.members)
                    for index, cell_id in enumerate(cycle):
                        paths.setdefault(cell_id, (cycle, index))
            component.paths = paths
        return component.paths

    def _shortest_cycle(self, start, members):
        came_from, queue = {start: None}, deque([start])
        while queue:
            cell_id = queue.popleft()
            for child in sorted(self._succ[cell_id]):
                if child == start:
                    path = [cell_id]
                    while came_from[path[-1]] is not None:
                        path.append(came_from[path[-1]])
                    return path[::-1]
                if child in members and child not in came_from:
                    came_from[child] = cell_id
                    queue.append(child)
        raise AssertionError(f"cell {start} is in a cycle component but on no cycle")


def _rank(component):
    return component.rank


def _discard(index, name, cell_id):
    holders = index.get(name)
    if holders is not None:
        holders.discard(cell_id)
        if not holders:
            del index[name]


def _reachable(start, edges):
    seen, stack = set(), [start]
    while stack:
        for neighbour in edges[stack.pop()]:
            if neighbour not in seen:
                seen.add(neighbour)
                stack.append(neighbour)
    seen.discard(start)
    return seen


def _strong_components(nodes, succ):
    """Tarjan's strongly connected components of the subgraph induced by `nodes`, iteratively.

    Returned in topological order (a component before the ones it has edges to).
    """
    nodes = nodes if isinstance(nodes, (set, frozenset, dict)) else set(nodes)
    index, low, on_stack, stack, result = {}, {}, set(), [], []
    counter = 0
    for root in nodes:
        if root in index:
            continue
        work = [(root, iter([n for n in succ[root] if n in nodes]))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            advanced = False
            for child in children:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter([n for n in succ[child] if n in nodes])))
                    advanced = True
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            if advanced:
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                members = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    members.append(member)
                    if member == node:
                        break
                result.append(members)
    result.reverse()  # Tarjan finishes a component after everything it reaches
    return result
