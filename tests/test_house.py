"""The house as the imports draw it (docs/architecture.md): no class over 400 lines, no module
importing another's private names, and no import cycle between the app's modules (module-level
imports; a function's own import is how a cycle is deliberately broken)."""
import ast
import collections
import pathlib

from notebooks_app.kernel.cycles import strong_components

ROOT = pathlib.Path(__file__).resolve().parent.parent / "notebooks_app"
BIGGEST_CLASS = 400


def _modules():
    modules = {}
    for path in ROOT.rglob("*.py"):
        if "migrations" in path.parts:
            continue
        parts = path.relative_to(ROOT.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        modules[name] = path
    return modules


def _module_imports(name, path, modules):
    """(imported module, imported name) for each module-level import of the app's own modules."""
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(parts + ([node.module] if node.module else []))
            for alias in node.names:
                submodule = f"{base}.{alias.name}"
                yield (submodule if submodule in modules else base), alias.name
        elif isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, None


def test_no_class_is_over_400_lines():
    big = []
    for name, path in _modules().items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef) and node.end_lineno - node.lineno + 1 > BIGGEST_CLASS:
                big.append(f"{name}.{node.name}: {node.end_lineno - node.lineno + 1} lines")
    assert big == []


def test_no_module_imports_private_names_of_another():
    modules = _modules()
    private = [
        f"{name} imports {imported_name} from {module}"
        for name, path in modules.items()
        for module, imported_name in _module_imports(name, path, modules)
        if module in modules and imported_name and imported_name.startswith("_") and not imported_name.startswith("__")
    ]
    assert private == []


def test_no_import_cycles():
    modules = _modules()
    edges = collections.defaultdict(set)
    for name, path in modules.items():
        for module, _ in _module_imports(name, path, modules):
            if module in modules and module != name:
                edges[name].add(module)
    # Strongly connected components (the graph's own Tarjan): any of more than one module is a cycle.
    cycles = [sorted(component) for component in strong_components(set(modules), edges) if len(component) > 1]
    assert cycles == []
