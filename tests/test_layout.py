"""The code's layout: the modules of specquant, backends and ui import one another without a cycle
(lazy imports inside functions count too: a cycle is a knot for the reader whenever it runs)."""
import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("specquant", "backends", "ui")


def import_graph() -> dict[str, set[str]]:
    mods = {(pkg if f.stem == "__init__" else f"{pkg}.{f.stem}"): f
            for pkg in PACKAGES for f in (ROOT / pkg).glob("*.py")}
    graph = {}
    for name, f in mods.items():
        pkg, named = name.split(".")[0], set()
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.ImportFrom):
                base = (pkg + (f".{node.module}" if node.module else "")) if node.level else node.module
                named |= {base} | {f"{base}.{a.name}" for a in node.names}
            elif isinstance(node, ast.Import):
                named |= {a.name for a in node.names}
        graph[name] = {m for m in named if m in mods and m != name}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str]:
    """One cycle of ``graph`` as the modules along it (the first repeated at the end), or []."""
    state: dict[str, int] = {}  # 1: on the path being walked, 2: done

    def walk(mod: str, path: list[str]) -> list[str]:
        state[mod] = 1
        for nxt in sorted(graph[mod]):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if not state.get(nxt) and (found := walk(nxt, path + [nxt])):
                return found
        state[mod] = 2
        return []

    for mod in sorted(graph):
        if not state.get(mod) and (found := walk(mod, [mod])):
            return found
    return []


def test_find_cycle_finds_one():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) == []


def test_no_import_cycles():
    graph = import_graph()
    assert {"specquant.cli", "specquant.bench", "backends.llama_cpp", "ui"} <= set(graph)
    assert "specquant.options" in graph["specquant.bench"]  # relative imports are seen
    assert find_cycle(graph) == [], " -> ".join(find_cycle(graph))
