"""kebench's import graph, read from the source (AST): kebench.data imports nothing above it, and no
modules import each other in a circle.

(a) Every import in kebench/data, at module level or inside a function, stays in kebench.data or names
    one of LEAVES: modules that themselves import nothing from kebench but other leaves.
(b) The module-level imports of kebench (what runs when a module is imported: not function bodies,
    not `if TYPE_CHECKING:` blocks; importing `kebench.x.y` runs the package `kebench.x` first) form
    no cycle: every strongly connected component of the graph is a single module.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "kebench"

#: What kebench.data may import from the rest of kebench, and why each is a leaf:
#: - kebench.errors: the exception types (DataError, ConfigError), imports nothing;
#: - kebench.registry: the name -> object registry with did-you-mean errors (record layouts are one),
#:   imports only kebench.errors;
#: - kebench.paths: where the caches live (the fetched public data files), imports nothing.
LEAVES = frozenset({"kebench.errors", "kebench.registry", "kebench.paths"})


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


MODULES = _modules()


def _module_of(name: str) -> str | None:
    """The kebench module a dotted name lives in (`kebench.data.case.EditCase` -> `kebench.data.case`)."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def _is_type_checking(node: ast.If) -> bool:
    return "TYPE_CHECKING" in ast.unparse(node.test)


def _import_nodes(tree: ast.Module, module_level: bool) -> list[ast.Import | ast.ImportFrom]:
    """Import statements of a module: all of them, or those that run when it is imported."""
    if not module_level:
        return [n for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))]
    found, todo = [], list(tree.body)
    while todo:
        node = todo.pop()
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            continue
        if isinstance(node, ast.If) and _is_type_checking(node):
            todo.extend(node.orelse)
            continue
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            found.append(node)
        todo.extend(ast.iter_child_nodes(node))
    return found


def imports(module: str, module_level: bool) -> set[str]:
    """The kebench modules `module` imports (with `module_level`: the packages they sit in, too)."""
    path = MODULES[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    names = []
    for node in _import_nodes(ast.parse(path.read_text(encoding="utf-8")), module_level):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
            continue
        base = node.module or ""
        if node.level:  # relative: from the package `level - 1` packages up
            anchor = package.split(".")
            anchor = anchor[: len(anchor) - (node.level - 1)]
            base = ".".join(anchor + ([base] if base else []))
        names += [f"{base}.{a.name}" for a in node.names]
    out = set()
    for name in names:
        if name.split(".")[0] != "kebench":
            continue
        target = _module_of(name)
        if target is None:
            continue
        out.add(target)
        if module_level:  # `import kebench.a.b` first runs kebench/a/__init__.py
            parent = target.rpartition(".")[0]
            while parent not in ("", "kebench") and not module.startswith(parent + ".") and module != parent:
                out.add(parent)
                parent = parent.rpartition(".")[0]
    out.discard(module)
    out.discard("kebench")
    return out


def _strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's algorithm (iterative): the components with more than one module."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components = []
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    components.append(sorted(component))
    return components


def test_the_graph_sees_the_imports_it_should():
    """Guard the walker itself: known edges of each kind are found."""
    assert "kebench.data.case" in imports("kebench.suites", module_level=True)
    assert "kebench.data" in imports("kebench.suites", module_level=True)  # the package runs first
    assert "kebench.suites" not in imports("kebench.editor", module_level=True)  # under TYPE_CHECKING only
    assert "kebench.models.load" in imports("kebench.runner", module_level=False)  # inside a function
    assert "kebench.models.load" not in imports("kebench.runner", module_level=True)
    assert _strongly_connected({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_kebench_data_imports_nothing_above_it():
    data = [m for m in MODULES if m == "kebench.data" or m.startswith("kebench.data.")]
    upward = {
        m: sorted(t for t in imports(m, module_level=False) if not t.startswith("kebench.data") and t not in LEAVES)
        for m in data
    }
    assert {m: t for m, t in upward.items() if t} == {}


def test_the_leaves_import_only_leaves():
    assert LEAVES <= set(MODULES)
    assert {m: sorted(imports(m, module_level=False) - LEAVES) for m in LEAVES} == {m: [] for m in LEAVES}


def test_no_import_cycle_at_module_level():
    graph = {m: imports(m, module_level=True) for m in MODULES}
    assert _strongly_connected(graph) == []
