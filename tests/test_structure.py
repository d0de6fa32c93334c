"""The code's structure: no import circles, no module reaching another's private names."""

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("registry", "pipelines")


def _modules() -> dict[str, Path]:
    out = {}
    for pkg in PACKAGES:
        for path in (ROOT / pkg).rglob("*.py"):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join(parts)] = path
    return out


def _imports(name: str, path: Path, modules: dict) -> list[tuple[str, list[str]]]:
    """(imported module, names taken from it) for every import, lazy ones included."""
    is_pkg = path.name == "__init__.py"
    here = name.split(".") if is_pkg else name.split(".")[:-1]
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out += [(a.name, []) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = here[:len(here) - node.level + 1] if node.level else []
            mod = ".".join(base + ([node.module] if node.module else []))
            for a in node.names:
                sub = f"{mod}.{a.name}"
                out.append((sub, []) if sub in modules else (mod, [a.name]))
    return [(m, n) for m, n in out if m.split(".")[0] in PACKAGES]


def test_no_import_circles():
    modules = _modules()
    graph = {m: {i for i, _ in _imports(m, p, modules) if i in modules and i != m}
             for m, p in modules.items()}
    # A package's __init__ may re-export its submodules; edges into a package from its own
    # submodules are the package's public entry point, not a circle of logic.
    for m in graph:
        graph[m] = {i for i in graph[m] if not m.startswith(i + ".")}
    state: dict[str, int] = {}
    stack: list[str] = []
    circles = []

    def visit(m):
        state[m] = 1
        stack.append(m)
        for n in sorted(graph[m]):
            if state.get(n) == 1:
                circles.append(stack[stack.index(n):] + [n])
            elif n not in state:
                visit(n)
        stack.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)
    assert not circles, "import circles: " + "; ".join(" -> ".join(c) for c in circles)


def test_no_private_names_across_modules():
    modules = _modules()
    bad = []
    for m, p in modules.items():
        for mod, names in _imports(m, p, modules):
            bad += [f"{m} imports {mod}.{n}" for n in names
                    if n.startswith("_") and not n.startswith("__")]
        text = p.read_text()
        bad += [f"{m}: {hit}" for hit in re.findall(r"\b(?:reg|registry|store)\._[a-z]\w*", text)]
    assert not bad, "\n".join(bad)


def test_registry_facade_delegates_to_module_functions():
    from registry.core import Registry
    from registry.store.base import Store

    own = {k: v for k, v in vars(Registry).items() if not k.startswith("_")}
    assert len(own) > 40
    for name, fn in own.items():
        assert callable(fn) and fn.__module__.startswith("registry."), name
        assert fn.__module__ != "registry.core", f"{name} is implemented in the facade"
    assert issubclass(Registry, Store)
