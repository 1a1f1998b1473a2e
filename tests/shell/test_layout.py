"""The layout the README describes is the tree on disk, and the layers keep their imports:
the simulator imports only the core and the config; only `ringmesh.node` touches the node's
internals; nothing outside `ringmesh/testing` imports from it."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("ringmesh", "sim")


def _readme_map() -> set[str]:
    """Paths the README's layout block names; a directory named without children covers all below."""
    text = (ROOT / "README.md").read_text()
    block = text.split("## How it is laid out", 1)[1].split("```", 2)[1]
    covered: set[str] = set()
    stack: list[str] = []
    for line in block.splitlines():
        if not line.strip():
            continue
        indent = (len(line) - len(line.lstrip(" "))) // 2
        names = re.split(r"\s{2,}", line.strip(), maxsplit=1)[0]
        del stack[indent:]
        entries = [e.strip() for e in names.split(",")]
        for entry in entries:
            covered.add("/".join([*stack, entry]).rstrip("/") + ("/" if entry.endswith("/") else ""))
        if len(entries) == 1 and entries[0].endswith("/"):
            stack.append(entries[0].rstrip("/"))
    return covered


def _modules() -> list[str]:
    out = []
    for pkg in PACKAGES:
        for p in sorted((ROOT / pkg).rglob("*.py")):
            rel = p.relative_to(ROOT).as_posix()
            if (
                p.name == "__main__.py"
                or rel.startswith("ringmesh/v1/")
                or (p.name == "__init__.py" and p.parent.name != "config")
            ):
                continue
            out.append(rel)
    return out


def test_every_module_has_a_line_in_the_readme_layout():
    covered = _readme_map()
    dirs = {c.rstrip("/") + "/" for c in covered if c.endswith("/")}
    files = {c for c in covered if not c.endswith("/")}
    leaves = {d for d in dirs if not any(f.startswith(d) for f in files | (dirs - {d}))}
    missing = [m for m in _modules() if m not in files and not any(m.startswith(d) for d in leaves)]
    assert not missing, f"add a line to README.md 'How it is laid out' for: {missing}"
    gone = [f for f in files if f.endswith(".py") and not (ROOT / f).exists()]
    assert not gone, f"README.md 'How it is laid out' names modules that do not exist: {gone}"


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
    return names


def test_layers_keep_their_imports():
    wrong = []
    for rel in _modules():
        imports = {i for i in _imports(ROOT / rel) if i.startswith("ringmesh.")}
        if rel.startswith("sim/"):
            wrong += [(rel, i) for i in imports if not i.startswith(("ringmesh.core", "ringmesh.config"))]
        if not rel.startswith("ringmesh/testing/"):
            wrong += [(rel, i) for i in imports if i.startswith("ringmesh.testing")]
        if rel.startswith("ringmesh/core/"):
            wrong += [(rel, i) for i in imports if not i.startswith("ringmesh.core")]
        if rel.startswith(
            ("ringmesh/ops/", "ringmesh/api/")
        ):  # the node's internals: only its view, and how to start one
            allowed = {"ringmesh.node.runtime.serve", "ringmesh.node.runtime.socket_path", "ringmesh.node.runtime"}
            wrong += [
                (rel, i)
                for i in imports
                if i.startswith("ringmesh.node.runtime")
                and i not in allowed
                or re.match(r"ringmesh\.node\.\w+\.executor", i)
            ]
    assert not wrong, wrong


def test_the_operator_side_reads_no_daemon_attribute():
    """ops/ and api/ name `Daemon` nowhere: what they read of a node comes through NodeView."""
    offenders = [
        rel
        for rel in _modules()
        if rel.startswith(("ringmesh/ops/", "ringmesh/api/")) and re.search(r"\bDaemon\b", (ROOT / rel).read_text())
    ]
    assert not offenders, offenders
