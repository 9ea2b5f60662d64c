"""The documentation against the tree: the README stays short, every relative link in it and in
docs/ points at a file (and a heading) that exists, every config key it names in a group exists,
and the layout page lists every module."""

from __future__ import annotations

import os
import re

import pytest

from conftest import ROOT

PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\]\(([^)#\s]*)(?:#([^)\s]+))?\)")


def anchors(page) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to dashes."""
    out = set()
    for line in page.read_text().splitlines():
        if line.startswith("#"):
            title = line.lstrip("#").strip().lower()
            out.add(re.sub(r"[^\w\- ]", "", title).replace(" ", "-"))
    return out


def test_readme_is_short():
    assert len((ROOT / "README.md").read_bytes()) <= 12_500


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_relative_links_resolve(page):
    for target, anchor in LINK.findall(page.read_text()):
        if target.startswith(("http://", "https://")):
            continue
        path = (page.parent / target).resolve() if target else page
        assert path.exists(), f"{page.name}: link to missing {target}"
        if anchor and path.suffix == ".md":
            assert anchor in anchors(path), f"{page.name}: no heading #{anchor} in {path.name}"


def test_layout_page_lists_every_module_and_no_other():
    """The layout block names every module of the package and of bench/ by its path: a file's
    path is the folders above it in the block (by indentation) and its own name."""
    text = (ROOT / "docs" / "architecture.md").read_text()
    block = text.split("```")[1]
    listed, folders = set(), []  # folders: (indent, name) of the headers above the current line
    for line in block.splitlines():
        m = re.match(r"^(\s*)((?:\w+/)*\w+(?:\.(?:py|sh)|/))(?:\s|$)", line)
        if not m:
            continue
        indent = len(m.group(1))
        folders = [(i, n) for i, n in folders if i < indent]
        if m.group(2).endswith("/"):
            folders.append((indent, m.group(2)))
        else:
            listed.add("".join(n for _, n in folders) + m.group(2))
    package = {"mpdp_pl/" + p.relative_to(ROOT / "mpdp_pl").as_posix()
               for p in (ROOT / "mpdp_pl").rglob("*.py") if p.name != "__init__.py"}
    bench = {"bench/" + p.name for p in (ROOT / "bench").iterdir() if p.suffix in (".py", ".sh")}
    assert listed - {"train.py"} == package | bench, "docs/architecture.md's layout is out of date"


def test_no_two_modules_differ_only_by_a_suffix():
    """One name per idea: no module name is another's stem plus a suffix (evaluate/evaluation,
    checkpoint/checkpointing, dynamics/dynamics_training)."""
    stems = sorted({p.stem for p in (ROOT / "mpdp_pl").rglob("*.py") if p.stem != "__init__"})
    clashes = []
    for i, a in enumerate(stems):
        for b in stems[i + 1:]:
            common = len(os.path.commonprefix([a, b]))
            if common >= 6 and common >= 0.8 * min(len(a), len(b)):
                clashes.append((a, b))
    assert not clashes


GROUPED_KEY = re.compile(r"`([a-z_]+)\.([A-Za-z_]+)[=`]")  # `group.key` or `group.key=value ...`


def test_every_grouped_key_the_docs_name_exists():
    """A key renamed or removed in mpdp_pl/config/schema.py leaves no page naming it."""
    from mpdp_pl import config

    keys, names = set(config.groups.flatten_keys()), set(config.groups.groups())
    named = [(page.name, f"{g}.{k}") for page in PAGES for g, k in GROUPED_KEY.findall(page.read_text())
             if g in names]
    assert len(named) > 50  # the pages do name grouped keys
    assert [(page, key) for page, key in named if key not in keys] == []


def cells(row: str) -> int:
    """The cells of a Markdown table row, not counting a pipe escaped or inside backticks."""
    row = re.sub(r"`[^`]*`", "``", row.replace("\\|", ""))
    return row.strip().strip("|").count("|") + 1


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_tables_are_well_formed(page):
    """Every table row outside code blocks ends with a pipe and has as many cells as its header:
    a row that runs into the next paragraph, or a short one, renders wrong on GitHub."""
    fenced, header = False, None
    for n, line in enumerate(page.read_text().splitlines(), 1):
        if line.startswith("```"):
            fenced = not fenced
        if fenced or not line.startswith("|"):
            header = None
            continue
        assert line.rstrip().endswith("|"), f"{page.name}:{n}: table row does not end with |"
        if header is None:
            header = cells(line)
        assert cells(line) == header, f"{page.name}:{n}: {cells(line)} cells, header has {header}"
