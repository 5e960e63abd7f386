"""The dependency graph: edges, blocked cells, orders, and incremental edits equal to a rebuild.

Pure: no database, no kernel.
"""
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from notebooks_app.kernel.graph import CYCLE_PATH_LIMIT, DependencyGraph


def build(*cells):
    """cells: (id, reads, writes) with space-separated names; positions follow the order given."""
    graph = DependencyGraph()
    for position, (cell_id, reads, writes) in enumerate(cells):
        graph.add(cell_id, reads=reads.split(), writes=writes.split(), position=position)
    return graph


def chain(length):
    """c00000 -> c00001 -> ...: each cell reads the previous one's name."""
    graph = DependencyGraph()
    for i in range(length):
        graph.add(f"c{i:05}", reads=[f"v{i - 1}"] if i else [], writes=[f"v{i}"], position=i)
    return graph


def rebuilt(graph):
    return DependencyGraph.from_cells((c, graph.reads(c), graph.writes(c), graph.position(c)) for c in graph.cell_ids())


# --- edges -------------------------------------------------------------------------


def test_reader_is_child_of_writer():
    graph = build(("a", "", "x"), ("b", "x", "y"))
    assert graph.children("a") == {"b"}
    assert graph.parents("b") == {"a"}


def test_no_edge_for_a_name_nobody_writes():
    graph = build(("a", "missing", "x"))
    assert graph.parents("a") == set()


def test_reading_own_name_is_not_a_self_edge():
    graph = build(("a", "x", "x"))
    assert graph.parents("a") == graph.children("a") == set()
    assert graph.blocked() == {}


def test_builtin_read_becomes_edge_once_a_cell_defines_it():
    graph = build(("user", "print", ""))
    assert graph.parents("user") == set()
    graph.add("shadow", reads=[], writes=["print"], position=5)
    assert graph.parents("user") == {"shadow"}


def test_edge_carried_by_two_names_survives_losing_one():
    graph = build(("a", "", "x y"), ("b", "x y", ""))
    graph.update("b", reads=["y"], writes=[])
    assert graph.parents("b") == {"a"}
    graph.update("a", reads=[], writes=["x"])
    assert graph.parents("b") == set()


def test_update_rewires_edges():
    graph = build(("a", "", "x"), ("b", "", "y"), ("c", "x", ""))
    graph.update("c", reads=["y"], writes=[])
    assert graph.parents("c") == {"b"}
    assert graph.children("a") == set()


def test_definers_lists_every_writer():
    graph = build(("a", "", "x"), ("b", "", "x y"))
    assert graph.definers("x") == {"a", "b"}
    assert graph.definers("nothing") == set()


# --- multiple definitions ------------------------------------------------------------


def test_multiple_definitions_block_both_cells():
    graph = build(("a", "", "x"), ("b", "", "x"), ("c", "x", ""))
    assert graph.blocked() == {"a": "'x' is also defined by cell b", "b": "'x' is also defined by cell a"}
    assert graph.blocked_details("a") == [{"kind": "multiple_definitions", "name": "x", "cells": ["b"]}]
    assert graph.blocked_reason("c") is None


def test_multiple_definitions_message_names_every_other_cell():
    graph = build(("a", "", "x"), ("b", "", "x"), ("c", "", "x"))
    assert graph.blocked_reason("a") == "'x' is also defined by cells b, c"


def test_each_duplicated_name_is_reported():
    graph = build(("a", "", "x y"), ("b", "", "x"), ("c", "", "y"))
    assert [d["name"] for d in graph.blocked_details("a")] == ["x", "y"]
    assert graph.blocked_reason("a") == "'x' is also defined by cell b; 'y' is also defined by cell c"


def test_fixing_culprit_unblocks():
    graph = build(("a", "", "x"), ("b", "", "x"))
    graph.update("b", reads=[], writes=["z"])
    assert graph.blocked() == {}


def test_removing_culprit_unblocks():
    graph = build(("a", "", "x"), ("b", "", "x"), ("c", "", "x"))
    graph.remove("c")
    assert set(graph.blocked()) == {"a", "b"}
    graph.remove("b")
    assert graph.blocked() == {}


# --- cycles ----------------------------------------------------------------------------


def test_cycle_blocks_every_cell_on_it():
    graph = build(("a", "z", "x"), ("b", "x", "y"), ("c", "y", "z"), ("d", "z", ""))
    assert graph.blocked() == {
        "a": "cycle: a -> b -> c -> a",
        "b": "cycle: b -> c -> a -> b",
        "c": "cycle: c -> a -> b -> c",
    }
    assert graph.blocked_details("b") == [{"kind": "cycle", "cells": ["b", "c", "a", "b"], "length": 3}]


def test_cells_downstream_of_a_cycle_are_not_blocked():
    graph = build(("a", "y", "x"), ("b", "x", "y"), ("after", "y", "w"))
    assert "after" not in graph.blocked()


def test_removing_cycle_member_unblocks_rest():
    graph = build(("a", "z", "x"), ("b", "x", "y"), ("c", "y", "z"))
    graph.remove("b")
    assert graph.blocked() == {}


def test_updating_cycle_member_unblocks_rest():
    graph = build(("a", "y", "x"), ("b", "x", "y"))
    graph.update("a", reads=[], writes=["x"])
    assert graph.blocked() == {}
    assert graph.children("a") == {"b"}


def test_breaking_one_of_two_cycles_keeps_the_other():
    # a <-> b and b <-> c share b; cutting a's read leaves b <-> c.
    graph = build(("a", "y", "x"), ("b", "x z", "y"), ("c", "y", "z"))
    assert set(graph.blocked()) == {"a", "b", "c"}
    graph.update("a", reads=[], writes=["x"])
    assert set(graph.blocked()) == {"b", "c"}
    assert graph.blocked_reason("c") == "cycle: c -> b -> c"


def test_closing_a_cycle_with_a_new_cell():
    graph = build(("a", "z", "x"), ("b", "x", "y"))
    graph.add("c", reads=["y"], writes=["z"], position=10)
    assert set(graph.blocked()) == {"a", "b", "c"}


def test_cell_both_duplicated_and_on_a_cycle_reports_both():
    graph = build(("a", "y", "x"), ("b", "x", "y"), ("c", "", "x"))
    assert [d["kind"] for d in graph.blocked_details("a")] == ["multiple_definitions", "cycle"]
    assert graph.blocked_reason("a") == "'x' is also defined by cell c; cycle: a -> b -> a"


def test_long_cycle_path_is_cut_short():
    length = CYCLE_PATH_LIMIT + 5
    cells = [(f"c{i:02}", f"v{(i - 1) % length}", f"v{i}") for i in range(length)]
    graph = build(*cells)
    detail = graph.blocked_details("c03")[0]
    assert detail["length"] == length
    assert detail["cells"] == [f"c{i:02}" for i in range(3, 3 + CYCLE_PATH_LIMIT)]
    assert graph.blocked_reason("c03").endswith(f"-> ... ({length} cells)")


# --- orders and reachability -----------------------------------------------------------


def test_topological_breaks_ties_by_position():
    graph = build(("c", "", "z"), ("a", "", "x"), ("b", "", "y"))
    assert graph.topological(["a", "b", "c"]) == ["c", "a", "b"]


def test_topological_puts_parents_first_whatever_their_position():
    graph = build(("uses", "x", "y"), ("other", "", "o"), ("defines", "", "x"))
    assert graph.topological(["uses", "other", "defines"]) == ["other", "defines", "uses"]


def test_topological_places_cycle_cells_by_position():
    graph = build(("first", "", "w"), ("a", "y", "x"), ("b", "x", "y"), ("after", "y w", ""))
    assert graph.topological(["after", "b", "a", "first"]) == ["first", "a", "b", "after"]


def test_topological_ignores_unknown_ids():
    graph = build(("a", "", "x"))
    assert graph.topological(["ghost", "a"]) == ["a"]


def test_descendants_of_chain():
    graph = chain(5)
    assert graph.descendants("c00002") == {"c00003", "c00004"}
    assert graph.descendants("c00004") == set()


def test_ancestors_of_chain():
    graph = chain(5)
    assert graph.ancestors("c00002") == {"c00000", "c00001"}


def test_descendants_exclude_the_cell_even_on_a_cycle():
    graph = build(("a", "y", "x"), ("b", "x", "y"))
    assert graph.descendants("a") == {"b"}
    assert graph.ancestors("a") == {"b"}


def test_inserting_a_cell_between_parent_and_child():
    graph = build(("top", "", "x"), ("bottom", "y", ""))
    graph.add("middle", reads=["x"], writes=["y"], position=0.5)
    assert graph.topological(graph.cell_ids()) == ["top", "middle", "bottom"]
    assert graph.descendants("top") == {"middle", "bottom"}


def test_adding_children_before_parents():
    graph = DependencyGraph()
    graph.add("c", reads=["y"], writes=[], position=2)
    graph.add("b", reads=["x"], writes=["y"], position=1)
    graph.add("a", reads=[], writes=["x"], position=0)
    assert graph.topological(["c", "b", "a"]) == ["a", "b", "c"]
    assert graph.blocked() == {}


# --- bookkeeping ------------------------------------------------------------------------


def test_cell_ids_in_position_order():
    graph = DependencyGraph()
    graph.add("late", reads=[], writes=[], position=2.0)
    graph.add("early", reads=[], writes=[], position=1.0)
    assert graph.cell_ids() == ["early", "late"]
    assert len(graph) == 2 and "late" in graph and "ghost" not in graph


def test_set_position_reorders_ties():
    graph = build(("a", "", "x"), ("b", "", "y"))
    graph.set_position("a", 10)
    assert graph.cell_ids() == ["b", "a"]
    assert graph.topological(["a", "b"]) == ["b", "a"]


def test_update_without_position_keeps_it():
    graph = build(("a", "", "x"), ("b", "", "y"))
    graph.update("a", reads=["q"], writes=["x"])
    assert graph.position("a") == 0
    graph.update("a", reads=[], writes=["x"], position=7)
    assert graph.position("a") == 7
    assert graph.reads("a") == frozenset() and graph.writes("a") == frozenset({"x"})


def test_unknown_cell_raises_key_error():
    graph = DependencyGraph()
    for call in (graph.remove, graph.descendants, graph.parents, graph.blocked_details):
        with pytest.raises(KeyError):
            call("ghost")
    with pytest.raises(KeyError):
        graph.update("ghost", reads=[], writes=[])


def test_adding_an_existing_cell_raises():
    graph = build(("a", "", "x"))
    with pytest.raises(ValueError):
        graph.add("a", reads=[], writes=[], position=1)


def test_removed_cell_leaves_no_trace():
    graph = build(("a", "", "x"), ("b", "x", "y"))
    graph.remove("a")
    assert "a" not in graph
    assert graph.parents("b") == set()
    assert graph.definers("x") == set()
    assert graph.snapshot() == rebuilt(graph).snapshot()


# --- big graphs (behaviour only; the benchmarks time them) -------------------------------


def test_ten_thousand_cell_chain_without_recursion_error():
    size = 10_000
    graph = chain(size)
    last = f"c{size - 1:05}"
    assert len(graph.descendants("c00000")) == size - 1
    assert len(graph.ancestors(last)) == size - 1
    assert graph.topological(reversed(graph.cell_ids()))[:2] == ["c00000", "c00001"]

    graph.update("c00000", reads=[f"v{size - 1}"], writes=["v0"])  # close the chain into a ring
    assert len(graph.blocked()) == size
    assert graph.blocked_details(last)[0]["length"] == size
    assert graph.snapshot() == rebuilt(graph).snapshot()

    graph.remove("c05000")
    assert graph.blocked() == {}
    assert graph.descendants("c05001") == {f"c{i:05}" for i in range(5002, size)} | {"c00000"} | {
        f"c{i:05}" for i in range(1, 5000)
    }


# --- incremental edits equal a rebuild ----------------------------------------------------

CELL_IDS = list("abcdefg")
NAMES = list("pqrst")
name_sets = st.frozensets(st.sampled_from(NAMES), max_size=3)
positions = st.integers(min_value=0, max_value=6)
operations = st.lists(
    st.tuples(st.sampled_from(["add", "update", "remove", "set_position"]), st.sampled_from(CELL_IDS), name_sets, name_sets, positions),
    max_size=40,
)


def apply(graph, cells, operation):
    """Run one random edit; an edit that does not apply to the current cells becomes one that does."""
    kind, cell_id, reads, writes, position = operation
    if cell_id not in cells:
        kind = "add"
    elif kind == "add":
        kind = "update"
    if kind == "add":
        graph.add(cell_id, reads=reads, writes=writes, position=position)
        cells[cell_id] = (reads, writes, position)
    elif kind == "update":
        keep = position % 2 == 0  # also exercise update without a position
        graph.update(cell_id, reads=reads, writes=writes, position=None if keep else position)
        cells[cell_id] = (reads, writes, cells[cell_id][2] if keep else position)
    elif kind == "remove":
        graph.remove(cell_id)
        del cells[cell_id]
    else:
        graph.set_position(cell_id, position)
        cells[cell_id] = (*cells[cell_id][:2], position)


def expected_blocked(cells):
    """An independent oracle: duplicate writers, and cells that reach themselves."""
    edges = {a: {b for b in cells if b != a and cells[a][1] & cells[b][0]} for a in cells}
    blocked = {a for a in cells for b in cells if a != b and cells[a][1] & cells[b][1]}
    for start in cells:
        seen, stack = set(), list(edges[start])
        while stack:
            node = stack.pop()
            if node not in seen:
                seen.add(node)
                stack.extend(edges[node])
        if start in seen:
            blocked.add(start)
    return edges, blocked


@settings(max_examples=400, deadline=None)
@given(operations)
def test_random_edits_match_a_rebuild(edits):
    graph, cells = DependencyGraph(), {}
    for operation in edits:
        apply(graph, cells, operation)
        snapshot = graph.snapshot()
        assert snapshot == DependencyGraph.from_cells((c, r, w, p) for c, (r, w, p) in cells.items()).snapshot()

        edges, blocked = expected_blocked(cells)
        assert snapshot["edges"] == sorted((a, b) for a in edges for b in edges[a])
        # The incremental topological numbering exists exactly while there is no cycle,
        # and every edge agrees with it.
        assert (graph._ord is None) == bool(snapshot["cycles"])
        if graph._ord is not None:
            assert set(graph._ord) == set(cells) and len(set(graph._ord.values())) == len(cells)
            assert all(graph._ord[a] < graph._ord[b] for a in edges for b in edges[a])
        assert set(snapshot["blocked"]) == blocked
        for cell_id in snapshot["blocked"]:
            for detail in graph.blocked_details(cell_id):
                if detail["kind"] == "cycle":
                    path = detail["cells"]
                    assert path[0] == path[-1] == cell_id
                    assert all(b in edges[a] for a, b in zip(path, path[1:]))


@settings(max_examples=300, deadline=None)
@given(operations, operations)
# One change adding two edges against the numbering (c reads a's p, d reads c's r): ordering
# the first must not pull d, below both ends, in through the second, still unordered.
@example(
    start=[],
    edits=[
        ("add", "d", frozenset("r"), frozenset(), 0),
        ("add", "a", frozenset("q"), frozenset("p"), 0),
        ("add", "c", frozenset(), frozenset(), 0),
        ("add", "b", frozenset(), frozenset("q"), 0),
        ("update", "c", frozenset("p"), frozenset("pr"), 0),
    ],
)
def test_a_graph_built_at_once_then_edited_matches_a_rebuild(start, edits):
    """A worker loading a notebook builds its graph with from_cells (kernel/session.py, _load),
    then edits it incrementally: that graph must behave like one built edit by edit."""
    cells = {}
    for operation in start:
        apply(DependencyGraph.from_cells((c, r, w, p) for c, (r, w, p) in cells.items()), cells, operation)
    graph = DependencyGraph.from_cells((c, r, w, p) for c, (r, w, p) in cells.items())
    for operation in edits:
        apply(graph, cells, operation)
        rebuild = DependencyGraph.from_cells((c, r, w, p) for c, (r, w, p) in cells.items())
        assert graph.snapshot() == rebuild.snapshot()
        edges, _ = expected_blocked(cells)
        if graph._ord is not None:
            assert all(graph._ord[a] < graph._ord[b] for a in edges for b in edges[a])
        assert graph.topological(cells) == rebuild.topological(cells)


@settings(max_examples=300, deadline=None)
@given(operations, st.frozensets(st.sampled_from(CELL_IDS)))
def test_topological_respects_every_edge_outside_cycles(edits, subset):
    graph, cells = DependencyGraph(), {}
    for operation in edits:
        apply(graph, cells, operation)
    cycles = {cell_id: i for i, members in enumerate(graph.snapshot()["cycles"]) for cell_id in members}
    order = graph.topological(subset)
    assert sorted(order) == sorted(subset & set(cells))
    index = {cell_id: i for i, cell_id in enumerate(order)}
    for parent in order:
        for child in graph.children(parent):
            same_cycle = parent in cycles and cycles.get(parent) == cycles.get(child)
            if child in index and not same_cycle:
                assert index[parent] < index[child]


def test_ancestors_and_descendants_of_many_cells_are_the_unions():
    graph = DependencyGraph()
    for i in range(6):
        graph.add(f"c{i}", reads={f"v{i - 1}"} if i else set(), writes={f"v{i}"}, position=i)
    graph.add("side", reads={"v1"}, writes={"s"}, position=10)
    assert graph.ancestors_of(["c3", "side"]) == {"c0", "c1", "c2"}
    assert graph.ancestors_of(["c3", "c1"]) == {"c0", "c1", "c2"}  # c1 is an ancestor of c3
    assert graph.descendants_of(["c4", "side"]) == {"c5"}
    assert graph.descendants_of(["c0"]) == graph.descendants("c0")
    assert graph.ancestors_of([]) == set()
