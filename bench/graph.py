"""Graph: the kernel's DependencyGraph on a 10,000-cell notebook, in process; microseconds.

    .venv/bin/python -m bench.graph [--sizes 10000] [--repeat R] [--quick]

Two shapes: a chain (every cell reads the one before: descendants of the root are the
whole notebook) and a fan-out (one root, every other cell reads it).  "cold build" adds
the cells one by one as a session loads a notebook; "one update" changes one cell in the
middle (same names, then a rewired edge) as a `cell_update` does.
"""
import sys
import time

from notebooks_app.kernel.graph import DependencyGraph

from .harness import Report, parse_args


def chain(n):
    return [(f"c{i}", {f"x{i - 1}"} if i else set(), {f"x{i}"}, i) for i in range(n)]


def fan(n):
    return [(f"c{i}", {"x0"} if i else set(), {f"x{i}"}, i) for i in range(n)]


def timed(func):
    start = time.perf_counter()
    result = func()
    return (time.perf_counter() - start) * 1e6, result


def build(cells):
    graph = DependencyGraph()
    for cell_id, reads, writes, position in cells:
        graph.add(cell_id, reads=reads, writes=writes, position=position)
    return graph


def main(argv=None):
    args = parse_args("DependencyGraph operations on a large notebook, in process.", argv, sizes="10000")
    if args.quick:
        args.sizes = [100]
    repeat = args.repeat or (3 if args.quick else 20)
    report = Report("graph", None)
    for shape, make in (("chain", chain), ("fan-out", fan)):
        for n in args.sizes:
            cells = make(n)
            middle = f"c{n // 2}"
            same = {"reads": cells[n // 2][1], "writes": cells[n // 2][2]}
            rewired = {"reads": {"x0"} if shape == "chain" else set(), "writes": cells[n // 2][2]}
            builds, scratch, updates, rewires, descendants, orders = [], [], [], [], [], []
            for _ in range(repeat):
                elapsed, graph = timed(lambda: build(cells))
                builds.append(elapsed)
                scratch.append(timed(lambda: DependencyGraph.from_cells(cells))[0])
                updates.append(timed(lambda: graph.update(middle, **same))[0])
                rewires.append(timed(lambda: graph.update(middle, **rewired))[0])
                graph.update(middle, **same)
                elapsed, found = timed(lambda: graph.descendants("c0"))
                descendants.append(elapsed)
                orders.append(timed(lambda: graph.topological(found | {"c0"}))[0])
            report.row(f"{shape} N={n}: cold build (add one by one)", builds, unit="µs")
            report.row(f"{shape} N={n}: cold build (from_cells)", scratch, unit="µs")
            report.row(f"{shape} N={n}: one update, same names", updates, unit="µs")
            report.row(f"{shape} N={n}: one update, rewired edge", rewires, unit="µs")
            report.row(f"{shape} N={n}: descendants of the root", descendants, unit="µs", note=f"{len(found)} cells")
            report.row(f"{shape} N={n}: topological order of them", orders, unit="µs")


if __name__ == "__main__":
    sys.exit(main())
