"""Every Sphinx-style reference in the package's docstrings (``:mod:``, ``:class:``, ``:func:``,
``:meth:``, ``:data:``) names something that exists: a module that imports, an attribute that
resolves, relative to the module (and class) it is written in or absolute; and no file cites a
document the repository does not hold."""

from __future__ import annotations

import ast
import importlib
import re
from pathlib import Path

from conftest import ROOT

REF = re.compile(r":(mod|class|func|meth|data|attr):`~?([^`]+)`")
PACKAGE = ROOT / "mpdp_pl"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _lookup(obj, names: list[str]):
    for n in names:
        obj = getattr(obj, n)
    return obj


def _absolute(dotted: str):
    parts = dotted.split(".")
    for i in range(len(parts), 0, -1):
        try:
            module = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            continue
        return _lookup(module, parts[i:])
    raise ImportError(dotted)


def _resolves(target: str, module_name: str, cls: str | None, is_package: bool) -> bool:
    module = importlib.import_module(module_name)
    if target.startswith("."):
        level = len(target) - len(target.lstrip("."))
        base = module_name.split(".")
        base = base[: len(base) - level + (1 if is_package else 0)]
        target = ".".join([*base, target.lstrip(".")])
    attempts = []
    if cls is not None:
        attempts.append(lambda: _lookup(getattr(module, cls), target.split(".")))
    attempts.append(lambda: _lookup(module, target.split(".")))
    attempts.append(lambda: _absolute(target))
    for attempt in attempts:
        try:
            attempt()
            return True
        except (AttributeError, ImportError):
            continue
    return False


def _docstrings(path: Path):
    """(docstring, enclosing class name or None) of the module, its classes and functions."""
    tree = ast.parse(path.read_text())
    yield ast.get_docstring(tree) or "", None

    def walk(node, cls):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.ClassDef):
                yield ast.get_docstring(child) or "", child.name
                yield from walk(child, child.name)
            elif isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                yield ast.get_docstring(child) or "", cls
                yield from walk(child, cls)

    yield from walk(tree, None)


def test_every_docstring_reference_resolves():
    unresolved = []
    for path in sorted(PACKAGE.rglob("*.py")):
        name = _module_name(path)
        for doc, cls in _docstrings(path):
            for _, target in REF.findall(doc):
                if not _resolves(target, name, cls, path.name == "__init__.py"):
                    unresolved.append(f"{path.relative_to(ROOT)}: {target}")
    assert unresolved == []


def test_the_check_fails_on_a_reference_that_does_not_resolve():
    assert _resolves("mpdp_pl.lookahead.unroll.Unroll", "mpdp_pl.algos.base", None, False)
    assert _resolves(".base.UpdateSchedule", "mpdp_pl.algos.dhmbpo", None, False)
    assert not _resolves("mpdp_pl.improvement", "mpdp_pl.algos.base", None, False)
    assert not _resolves("update_nothing", "mpdp_pl.algos.sac", "SAC", False)


def test_no_file_cites_a_document_the_repository_does_not_hold():
    # a Markdown file's name not glued to a path or a shell variable before it; table.md is the
    # report's output
    cited = re.compile(r"(?<![\w$/.-])([A-Za-z_][\w/.-]*\.md)\b")
    files = [p for p in [*PACKAGE.rglob("*.py"), *(ROOT / "conf").rglob("*.yaml"),
                         *(ROOT / "bench").rglob("*"), *(ROOT / "hydra_plugins").rglob("*.py"),
                         *(ROOT / "tests").glob("*.py"), *(ROOT / "docs").glob("*.md"),
                         ROOT / "train.py", ROOT / "README.md"]
             if p.is_file() and p.suffix in (".py", ".yaml", ".sh", ".md")]
    missing = []
    for path in files:
        for doc in cited.findall(path.read_text()):
            if doc == "table.md":
                continue
            if not any((base / doc).exists() for base in (ROOT, ROOT / "docs", path.parent)):
                missing.append(f"{path.relative_to(ROOT)}: {doc}")
    assert missing == []


def test_every_module_path_named_in_code_config_or_docs_exists():
    named = re.compile(r"\bmpdp_pl/[A-Za-z_/]+\.py\b")
    files = [p for base in ("mpdp_pl", "hydra_plugins", "conf", "bench", "docs")
             for p in (ROOT / base).rglob("*") if p.suffix in (".py", ".yaml", ".sh", ".md")]
    missing = [f"{p.relative_to(ROOT)}: {m}" for p in [*files, ROOT / "README.md"]
               for m in named.findall(p.read_text()) if not (ROOT / m).exists()]
    assert missing == []
