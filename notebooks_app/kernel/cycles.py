"""The cycles of the dependency graph, kept exact as its edges change, and the walks under them.

`Cycles` holds every strongly connected component of two or more cells of the graph whose
edges it is given (it reads them, never changes them): found from scratch once, then redone
only around the one cell whose edges changed, and a shortest cycle through any of its cells
for the blocked report.  `reachable`, `reachable_from` and `strong_components` are the
walks it and graph.py use.  Pure: no I/O, no recursion (a 10,000-cell chain is fine); the
semantics of cycles (which cells they block) are graph.py's.
"""
from collections import deque


class Component:
    """A strongly connected component of two or more cells: a cycle."""

    __slots__ = ("members", "paths")

    def __init__(self, members):
        self.members = members
        self.paths = None  # cell -> (a cycle through it, its index there), computed when asked for


class Cycles:
    def __init__(self, succ, pred):
        self._succ = succ  # the graph's edges: cell -> {child: count}, and the same backwards
        self._pred = pred
        self.of = {}  # cell -> the Component of the cycle it is on (cells on no cycle are absent)
        self.components = set()  # every cycle component

    def find_all(self, cells):
        """Every cycle among `cells`, from scratch (one Tarjan pass)."""
        for members in strong_components(cells, self._succ):
            if len(members) > 1:
                self._install(Component(set(members)))

    def recompute(self, cell_id, search=True):
        """The edges of `cell_id` changed: redo the cycles that can have changed.

        Every added or removed edge has `cell_id` at one end, so a cycle not through it
        is untouched.  Its old cycle may have broken into smaller ones (found among the
        other members, with their unchanged edges), and a new cycle through it is the
        set of cells that are both its descendants and its ancestors.  Losing edges never
        makes a cycle, so a cell that gained no edge and was on no cycle needs no search.
        """
        old = self.of.get(cell_id)
        if old is not None:
            self._uninstall(old)
            for members in strong_components(old.members - {cell_id}, self._succ):
                if len(members) > 1:
                    self._install(Component(set(members)))
        parents, children = self._pred[cell_id], self._succ[cell_id]
        if not parents or not children or not (search or old is not None):
            return
        below = reachable(cell_id, self._succ)
        if below.isdisjoint(parents):
            return
        members = (below & reachable(cell_id, self._pred)) | {cell_id}
        for member in members:
            absorbed = self.of.get(member)
            if absorbed is not None:
                self._uninstall(absorbed)
        self._install(Component(members))

    def cycle_through(self, cell_id):
        """(a cycle through `cell_id` as a list of cells, the cell's index in it), or None.

        Decided once per component: members are taken in sorted order; each search finds a
        shortest cycle through one member, which also serves every other member on it, so a
        ring of 5,000 cells costs one search, and the answer never depends on which cell was
        asked about first.
        """
        component = self.of.get(cell_id)
        if component is None:
            return None
        if component.paths is None:
            paths = {}
            for start in sorted(component.members):
                if start not in paths:
                    cycle = self._shortest_cycle(start, component.members)
                    for index, member in enumerate(cycle):
                        paths.setdefault(member, (cycle, index))
            component.paths = paths
        return component.paths[cell_id]

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

    def _install(self, component):
        for cell_id in component.members:
            self.of[cell_id] = component
        self.components.add(component)

    def _uninstall(self, component):
        for cell_id in component.members:
            del self.of[cell_id]
        self.components.discard(component)


def reachable(start, edges, within=None):
    """Cells reachable from `start` along `edges` (not `start` itself), only through cells
    `within` accepts when it is given."""
    seen, stack = set(), [start]
    while stack:
        for neighbour in edges[stack.pop()]:
            if neighbour not in seen and (within is None or within(neighbour)):
                seen.add(neighbour)
                stack.append(neighbour)
    seen.discard(start)
    return seen


def reachable_from(starts, edges):
    """Cells reachable along `edges` from any of `starts` (a start only if another reaches it)."""
    seen, stack = set(), list(starts)
    while stack:
        for neighbour in edges[stack.pop()]:
            if neighbour not in seen:
                seen.add(neighbour)
                stack.append(neighbour)
    return seen


def strong_components(nodes, succ):
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
