"""The layer rule of docs/ARCHITECTURE.md, read from the source: the general core imports nothing above it,
and no module imports itself back through others (an import cycle), wherever the import statement sits."""

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
CORE = ("text", "attention", "models", "diffusion", "control", "edit", "pipeline")
ABOVE = ("world", "bench", "analysis", "train", "scaling", "cli", "ui", "report")


def _modules() -> dict[str, Path]:
    out = {}
    for path in (SRC / "t2ikit").rglob("*.py"):
        parts = path.relative_to(SRC).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def _imports(path: Path, modules: dict) -> list[tuple[str, int]]:
    """(imported t2ikit module, line) for every import statement in the file, top level or not."""
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("t2ikit"):
            subs = [f"{node.module}.{a.name}" for a in node.names if f"{node.module}.{a.name}" in modules]
            out += [(m, node.lineno) for m in subs or [node.module]]
        elif isinstance(node, ast.Import):
            out += [(a.name, node.lineno) for a in node.names if a.name.startswith("t2ikit")]
    return out


def test_the_core_imports_nothing_above_it():
    modules = _modules()
    bad = []
    for name, path in modules.items():
        layer = name.split(".")[1] if "." in name else ""
        if layer not in CORE:
            continue
        for target, line in _imports(path, modules):
            if target.split(".")[1] in ABOVE:
                bad.append(f"{path.relative_to(SRC)}:{line} imports {target}")
    assert not bad, "the general core imports a layer above it:\n" + "\n".join(bad)


def test_no_import_cycles():
    modules = _modules()
    graph = {name: {t for t, _ in _imports(path, modules) if t in modules and t != name}
             for name, path in modules.items()}
    index, low, stack, on_stack, cycles = {}, {}, [], set(), []

    def visit(v):  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    assert not cycles, f"import cycles: {cycles}"


def test_the_checks_can_fail(tmp_path):
    """The AST reader sees an import inside a function (the kind that hid the old cycles)."""
    path = tmp_path / "m.py"
    path.write_text("def f():\n    from t2ikit.world.oracle import detect\n")
    assert _imports(path, {"t2ikit.world.oracle": path}) == [("t2ikit.world.oracle", 2)]
