"""The package layout is a promise: each package under localrouter/ imports only the packages its
row of ALLOWED names. The check reads every source file with `ast` (nothing is imported), so it
counts imports at module level, inside functions and under `if TYPE_CHECKING:` alike, absolute or
relative, and one failing run lists every offending edge."""

from __future__ import annotations

import ast
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT_PACKAGE = "localrouter"
SOURCE_ROOT = Path(__file__).resolve().parent.parent / ROOT_PACKAGE

_FEATURE_DEPS = frozenset({"base", "config", "providers", "catalog", "upstream", "lists", "http"})
_CALL_PATH_FEATURES = frozenset({"usage", "limits", "reqlog", "telemetry"})

# package (first directory under localrouter/) -> the other packages of ours it may import.
# A package may always import its own modules and the root `localrouter` (it holds __version__).
ALLOWED: dict[str, frozenset[str]] = {
    "base": frozenset(),
    "config": frozenset({"base", "providers"}),
    "providers": frozenset({"base", "config", "upstream"}),
    "catalog": frozenset({"base", "config", "upstream", "providers"}),
    "upstream": frozenset({"base"}),
    "lists": frozenset({"base", "config", "providers", "catalog", "upstream"}),
    "http": frozenset({"base", "config", "lists"}),
    "views": frozenset({"base", "config", "lists", "http"}),
    # The call path records each call, and is where limits and spans wrap it: it calls the
    # feature packages of the call path (they never call it).
    "protocols": frozenset(
        {"base", "config", "providers", "lists", "upstream", "http"} | _CALL_PATH_FEATURES
    ),
    # Feature packages; they may not exist yet.
    "usage": _FEATURE_DEPS,
    # Budgets are counted in the usage ledger's dollars: limits price a call as usage does,
    # and rebuild their counts from the ledger (usage never calls limits: the recorder settles
    # a reservation through its own Reservation protocol).
    "limits": _FEATURE_DEPS | {"usage"},
    # The request log and the spans are made of the usage ledger's records.
    "reqlog": _FEATURE_DEPS | {"usage"},
    "telemetry": _FEATURE_DEPS | {"usage"},
    "discovery": _FEATURE_DEPS,
    "console": _FEATURE_DEPS,
}

# Top-level modules (localrouter/*.py) may import anything of ours except the app, which only
# this module may import.
APP_MODULE = f"{ROOT_PACKAGE}.app"
APP_IMPORTER = f"{ROOT_PACKAGE}.serve"


@dataclass(frozen=True, order=True)
class Edge:
    """One import: `path:line` (in module `importer`) imports our module `target`."""

    path: str
    line: int
    importer: str
    target: str


def module_name(relative: Path) -> tuple[str, bool]:
    """Dotted module name of a file relative to the source root's parent, and whether it is a
    package (`__init__.py`)."""
    parts = list(relative.with_suffix("").parts)
    if parts[-1] == "__init__":
        return ".".join(parts[:-1]), True
    return ".".join(parts), False


def _is_ours(name: str) -> bool:
    return name == ROOT_PACKAGE or name.startswith(ROOT_PACKAGE + ".")


def find_edges(
    source: str, path: str, module: str, is_package: bool, known: Collection[str]
) -> list[Edge]:
    """Every import of our modules in `source`, wherever it sits in the tree. `known` holds the
    dotted names of all our modules and packages: `from P import x` is an import of `P.x` when
    that is a module, otherwise of `P` itself."""
    tree = ast.parse(source, filename=path)
    package = module if is_package else module.rpartition(".")[0]
    edges: set[Edge] = set()

    def add(node: ast.stmt, target: str) -> None:
        if _is_ours(target):
            edges.add(Edge(path, node.lineno, module, target))

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                add(node, alias.name)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                anchor = package.split(".") if package else []
                up = node.level - 1
                if up > len(anchor) - 1:
                    raise AssertionError(f"{path}:{node.lineno}: relative import beyond the root")
                anchor = anchor[: len(anchor) - up]
                base = ".".join([*anchor, *([node.module] if node.module else [])])
            else:
                base = node.module or ""
            for alias in node.names:
                submodule = f"{base}.{alias.name}"
                add(node, submodule if submodule in known else base)
    return sorted(edges)


def _source_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*.py") if "__pycache__" not in p.parts)


def walk(root: Path) -> list[Edge]:
    """All import edges of all Python files under `root` (the `localrouter/` directory)."""
    files = _source_files(root)
    named = {p: module_name(p.relative_to(root.parent)) for p in files}
    known = {name for name, _ in named.values()}
    edges: list[Edge] = []
    for file, (name, is_package) in named.items():
        rel = file.relative_to(root.parent).as_posix()
        edges += find_edges(file.read_text(encoding="utf-8"), rel, name, is_package, known)
    return edges


def _owner(module: str, packages: Collection[str]) -> str | None:
    """The package (first directory) a module of ours belongs to; None for the root package and
    for top-level modules."""
    parts = module.split(".")
    if len(parts) >= 2 and parts[1] in packages:
        return parts[1]
    return None


def violations(edges: Iterable[Edge], packages: Collection[str]) -> list[str]:
    """One line per edge that breaks the table, plus one per package missing from the table.
    `packages` are the directories that exist under localrouter/."""
    problems: list[str] = []
    for pkg in sorted(set(packages) - ALLOWED.keys()):
        problems.append(
            f"{ROOT_PACKAGE}/{pkg}/ is a package not named in ALLOWED (add it to the table)"
        )
    for edge in sorted(edges):
        where = f"{edge.path}:{edge.line} imports {edge.target}"
        if edge.target == ROOT_PACKAGE:
            continue
        source_pkg = _owner(edge.importer, packages)
        target_pkg = _owner(edge.target, packages)
        if source_pkg is None:
            if edge.importer == ROOT_PACKAGE:
                problems.append(f"{where} (the root {ROOT_PACKAGE}/__init__.py imports nothing)")
            elif (
                edge.target == APP_MODULE or edge.target.startswith(APP_MODULE + ".")
            ) and edge.importer != APP_IMPORTER:
                problems.append(f"{where} (only {APP_IMPORTER} may import {APP_MODULE})")
            continue
        if source_pkg not in ALLOWED or source_pkg == target_pkg:
            continue
        allowed = ALLOWED[source_pkg]
        if target_pkg in allowed:
            continue
        what = target_pkg if target_pkg is not None else f"the top-level module {edge.target}"
        may = ", ".join(sorted(allowed)) or "nothing of ours"
        problems.append(f"{where} ({source_pkg} may not import {what}; it may import: {may})")
    return problems


def _packages(root: Path) -> set[str]:
    return {p.relative_to(root).parts[0] for p in _source_files(root) if p.parent != root}


def test_packages_import_only_what_the_table_allows() -> None:
    """Every import of ours, anywhere in any file under localrouter/, follows ALLOWED: a package
    imports only itself, the root package and its listed packages (never a top-level module);
    top-level modules import anything but the app, which only serve.py imports; every package
    that exists is named in the table. The failure lists every offending edge at once."""
    edges = walk(SOURCE_ROOT)
    packages = _packages(SOURCE_ROOT)

    # The checker must really be looking: a walk that finds nothing would pass trivially.
    assert len(edges) > 100, f"only {len(edges)} import edges found under {SOURCE_ROOT}"
    seen = {_owner(e.importer, packages) for e in edges} | {
        _owner(e.target, packages) for e in edges
    }
    missing = sorted((packages & ALLOWED.keys()) - seen)
    assert not missing, f"no import edges found in or to packages {missing}"

    problems = violations(edges, packages)
    if problems:
        pytest.fail(
            f"{len(problems)} architecture violations:\n" + "\n".join(problems), pytrace=False
        )


_SYNTHETIC = """\
from __future__ import annotations

import json
from typing import TYPE_CHECKING

import localrouter.base.errors
from localrouter import __version__
from localrouter import state

from . import fleet, SOMETHING
from ..config import settings
from ..http.endpoint import handler

if TYPE_CHECKING:
    from localrouter.views.ollama import View


def late() -> None:
    from localrouter.protocols import forward as fw
"""


def test_the_checker_finds_every_kind_of_import() -> None:
    """The edge finder sees absolute, `from localrouter import x`, relative, TYPE_CHECKING and
    function-level imports, resolving each against the importing file's package; and the rules
    flag forbidden edges, including a top-level module and an unknown package, while passing
    allowed ones."""
    known = {
        "localrouter",
        "localrouter.state",
        "localrouter.base",
        "localrouter.base.errors",
        "localrouter.lists",
        "localrouter.lists.fleet",
        "localrouter.config",
        "localrouter.config.settings",
        "localrouter.http",
        "localrouter.http.endpoint",
        "localrouter.views",
        "localrouter.views.ollama",
        "localrouter.protocols",
        "localrouter.protocols.forward",
    }
    path = "localrouter/lists/demo.py"
    edges = find_edges(_SYNTHETIC, path, "localrouter.lists.demo", False, known)
    found = {(e.line, e.target) for e in edges}
    assert found == {
        (6, "localrouter.base.errors"),
        (7, "localrouter"),
        (8, "localrouter.state"),
        (10, "localrouter.lists.fleet"),
        (10, "localrouter.lists"),
        (11, "localrouter.config.settings"),
        (12, "localrouter.http.endpoint"),
        (15, "localrouter.views.ollama"),
        (19, "localrouter.protocols.forward"),
    }
    # In a package's __init__.py, `.` is the package itself.
    init = find_edges("from . import fleet\n", "x", "localrouter.lists", True, known)
    assert [e.target for e in init] == ["localrouter.lists.fleet"]

    packages = {"base", "config", "lists", "http", "views", "protocols", "mystery"}
    problems = violations(edges, packages)
    flagged = sorted(line.split(" imports ")[1].split(" ")[0] for line in problems[1:])
    assert problems[0].startswith("localrouter/mystery/ is a package not named in ALLOWED")
    assert flagged == [
        "localrouter.http.endpoint",
        "localrouter.protocols.forward",
        "localrouter.state",
        "localrouter.views.ollama",
    ]
    assert all(line.startswith(f"{path}:") for line in problems[1:])

    cli = Edge("localrouter/cli.py", 3, "localrouter.cli", "localrouter.app")
    serve = Edge("localrouter/serve.py", 3, "localrouter.serve", "localrouter.app")
    assert violations([cli, serve], packages) == [
        "localrouter/mystery/ is a package not named in ALLOWED (add it to the table)",
        "localrouter/cli.py:3 imports localrouter.app (only localrouter.serve may import "
        "localrouter.app)",
    ]
