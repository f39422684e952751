"""The package's import layers (docs/architecture.md): every import of a cl-fir module, at the
top of a file or inside a function, goes to the same layer or one below, and no group of
modules imports itself in a circle. Lower layers (runtime, data, models, scenario, evaluation)
therefore never import the engine."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

#: bottom to top; a module belongs to the longest prefix listed
LAYERS: list[tuple[str, ...]] = [
    ("cl_fir.errors",),
    ("cl_fir.files",),
    ("cl_fir.runtime",),
    ("cl_fir.data", "cl_fir.weights"),
    ("cl_fir.config",),
    ("cl_fir.models", "cl_fir.losses"),
    ("cl_fir.scenario", "cl_fir.scenarios"),
    ("cl_fir.evaluation",),
    ("cl_fir.families",),
    ("cl_fir.engine",),
    ("cl_fir.strategy", "cl_fir.registry", "cl_fir.strategies"),
    ("cl_fir.report",),
    ("cl_fir", "cl_fir.__main__", "cl_fir.cli", "cl_fir.runner", "cl_fir.sweep", "cl_fir.budget_runs", "cl_fir.bench",
     "cl_fir.pretraining", "cl_fir.tuning", "cl_fir.analysis"),
]
#: the package root holds entry points (and the public types callers pass and catch) only
ROOT_MODULES = {"__init__", "__main__", "cli", "runner", "sweep", "budget_runs", "bench", "pretraining", "tuning",
                "registry", "strategy", "config", "errors"}


def _modules() -> dict[str, Path]:
    found = {}
    for folder, package in ((ROOT / "cl_fir", "cl_fir"), (ROOT / "strategies", "cl_fir.strategies"),
                            (ROOT / "scenarios", "cl_fir.scenarios")):
        for path in folder.rglob("*.py"):
            parts = [package, *path.relative_to(folder).with_suffix("").parts]
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join(parts)] = path
    return found


def _imports(modules: dict[str, Path]) -> dict[str, set[str]]:
    """module -> the cl-fir modules it imports (``from package import module`` counts as the module)."""
    edges = {}
    for name, path in modules.items():
        deps = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "cl_fir":
                for alias in node.names:
                    full = f"{node.module}.{alias.name}"
                    deps.add(full if full in modules else node.module)
            elif isinstance(node, ast.Import):
                deps.update(a.name for a in node.names if a.name.split(".")[0] == "cl_fir")
        deps.discard(name)
        edges[name] = deps
    return edges


def _layer(module: str) -> int:
    best, rank = -1, None
    for i, prefixes in enumerate(LAYERS):
        for p in prefixes:
            if (module == p or module.startswith(p + ".")) and len(p) > best:
                best, rank = len(p), i
    assert rank is not None, f"{module} is in no layer of tests/test_import_layers.py"
    return rank


def test_imports_never_go_up_a_layer():
    modules = _modules()
    upward = [f"{m} (layer {_layer(m)}) imports {d} (layer {_layer(d)})"
              for m, deps in sorted(_imports(modules).items()) for d in sorted(deps) if _layer(d) > _layer(m)]
    assert not upward, "\n".join(upward)


def test_no_import_circles():
    edges = _imports(_modules())
    index, low, stack, on_stack, circles = {}, {}, [], set(), []

    def visit(v):   # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges.get(v, ()):
            if w not in edges:
                continue
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
                circles.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    assert not circles, "import circles: " + "; ".join(" <-> ".join(c) for c in circles)


def test_models_and_data_never_import_the_engine():
    edges = _imports(_modules())
    bad = [f"{m} imports {d}" for m, deps in edges.items() for d in deps
           if m.startswith(("cl_fir.models", "cl_fir.data", "cl_fir.runtime", "cl_fir.scenario.", "cl_fir.evaluation"))
           and d.startswith(("cl_fir.engine", "cl_fir.strategy", "cl_fir.runner"))]
    assert not bad, "\n".join(bad)


def test_the_package_root_keeps_entry_points_only():
    extra = {p.stem for p in (ROOT / "cl_fir").glob("*.py")} - ROOT_MODULES
    assert not extra, f"modules at the package root that are not entry points: {sorted(extra)}"
