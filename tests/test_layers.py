"""The package's data flow is one-way (docs/architecture.md): every import of every module,
top-level or inside a function, parsed from the source. No module reaches itself through a
chain of imports, and no module imports from a layer above its own."""

from __future__ import annotations

import ast

from conftest import ROOT

PACKAGE = ROOT / "mpdp_pl"
# bottom to top; a module may import its own layer and the ones below
LAYERS = ["errors", "environment", "models", "lookahead", "config", "runtime", "algos", "run",
          "experiments", "cli", "evaluate", "export", "report"]
ENTRY_POINTS = {"cli", "evaluate", "export", "report"}  # one layer: the user's commands


def module_name(path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path) -> set[str]:
    """The package's modules that ``path`` imports (``from .x import y`` counts y when y is a
    module, x otherwise)."""
    me = module_name(path)
    package = me if path.name == "__init__.py" else me.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("mpdp_pl")}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            elif node.module and node.module.startswith("mpdp_pl"):
                target = node.module
            else:
                continue
            for a in node.names:
                sub = f"{target}.{a.name}"
                found.add(sub if _exists(sub) else target)
    return found - {me}


def _exists(name: str) -> bool:
    path = ROOT.joinpath(*name.split("."))
    return path.with_suffix(".py").exists() or (path / "__init__.py").exists()


def graph() -> dict[str, set[str]]:
    return {module_name(p): imports(p) for p in PACKAGE.rglob("*.py")}


def layer(module: str) -> int:
    top = module.split(".")[1] if "." in module else ""
    if top in ENTRY_POINTS:
        return len(LAYERS)
    assert top in LAYERS, f"{module}: not in a layer of docs/architecture.md"
    return LAYERS.index(top)


def test_the_parser_sees_relative_and_function_level_imports():
    found = imports(PACKAGE / "algos" / "model_learner.py")
    assert {"mpdp_pl.runtime.distributed", "mpdp_pl.models.fitting", "mpdp_pl.algos.base"} <= found
    assert "mpdp_pl.runtime.checkpoint" in imports(PACKAGE / "cli.py")  # imported inside a function


def test_no_import_cycle():
    g = graph()
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    cycles = []

    def visit(m, path):
        state[m] = 1
        for n in sorted(g.get(m, ())):
            if n.startswith("mpdp_pl.") and n not in g:
                continue
            if state.get(n) == 1:
                cycles.append(" -> ".join(path[path.index(n):] + [n]))
            elif n not in state:
                visit(n, path + [n])
        state[m] = 2

    for m in sorted(g):
        if m not in state:
            visit(m, [m])
    assert cycles == [], "import cycles: " + "; ".join(cycles)


def test_no_module_imports_a_layer_above_its_own():
    wrong = [f"{m} imports {n}" for m, deps in sorted(graph().items()) if m != "mpdp_pl"
             for n in sorted(deps) if n != "mpdp_pl" and layer(n) > layer(m)]
    assert wrong == []


def test_every_bench_script_imports():
    """bench/ scripts run by hand, so nothing else notices when a module they import moves (the
    layers of 77b18f3 broke four of them): each one's module-level imports resolve, in a
    process of its own (bench/cost.py patches the evaluation callback when imported)."""
    import subprocess
    import sys

    code = """
import importlib.util, pathlib, sys
sys.path.insert(0, "bench")
for p in sorted(pathlib.Path("bench").glob("*.py")):
    spec = importlib.util.spec_from_file_location("bench_" + p.stem, p)
    try:
        spec.loader.exec_module(importlib.util.module_from_spec(spec))
    except Exception as e:
        print(f"{p}: {type(e).__name__}: {e}")
"""
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0 and not proc.stdout.strip(), proc.stdout + proc.stderr[-2000:]


def test_only_hydras_public_api():
    """No module of the package or of its Hydra plugins imports Hydra's private ``hydra._internal``
    (grids run through ``hydra.main`` and public plugin interfaces)."""
    private = []
    for path in [*PACKAGE.rglob("*.py"), *(ROOT / "hydra_plugins").rglob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            else:
                continue
            private += [f"{path.relative_to(ROOT)}: {n}" for n in names if n.startswith("hydra._internal")]
    assert private == []
