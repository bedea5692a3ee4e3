"""t2ikit's internal import graph: how many imports sit inside functions, and any import cycles.

    python benchmarks/import_graph.py
"""
import ast, pathlib, sys
root = pathlib.Path(__file__).resolve().parents[1] / "src"
mods = {}
for f in root.rglob("*.py"):
    name = ".".join(f.relative_to(root).with_suffix("").parts)
    if name.endswith(".__init__"): name = name[:-9]
    mods[name] = f
def resolve(m, names):
    res = []
    for nm in names:
        if f"{m}.{nm}" in mods: res.append(f"{m}.{nm}")
    return res or [m]
graph = {}
inner = total = 0
for name, f in mods.items():
    deps = set()
    tree = ast.parse(f.read_text())
    top = set(id(b) for b in tree.body)
    for n in ast.walk(tree):
        if isinstance(n, (ast.ImportFrom, ast.Import)):
            mod = n.module if isinstance(n, ast.ImportFrom) else None
            targets = []
            if isinstance(n, ast.ImportFrom) and mod and mod.startswith("t2ikit"):
                targets = resolve(mod, [a.name for a in n.names])
            elif isinstance(n, ast.Import):
                targets = [a.name for a in n.names if a.name.startswith("t2ikit")]
            if targets:
                total += 1
                if id(n) not in top: inner += 1
            deps.update(t for t in targets if t in mods and t != name)
    graph[name] = deps
print(f"internal imports: {total}, inside functions: {inner} ({100*inner/max(total,1):.0f}%)")
# cycles via SCC (Tarjan)
sys.setrecursionlimit(10000)
index, low, stack, on, sccs, i = {}, {}, [], set(), [], [0]
def strong(v):
    index[v] = low[v] = i[0]; i[0]+=1; stack.append(v); on.add(v)
    for w in graph[v]:
        if w not in index: strong(w); low[v] = min(low[v], low[w])
        elif w in on: low[v] = min(low[v], index[w])
    if low[v] == index[v]:
        comp = []
        while True:
            w = stack.pop(); on.discard(w); comp.append(w)
            if w == v: break
        if len(comp) > 1: sccs.append(comp)
for v in graph:
    if v not in index: strong(v)
for c in sccs: print("cycle:", sorted(c))
