"""Which Python files of an extension A1111 would run, for the extension check: its entry points (`scripts/*.py`,
`install.py`, `preload.py`) and every file of the extension they import, followed through the import statements.

A file nothing reaches (a ComfyUI node file, a training script, a vendored library's demo) is still read, but its
uses are counted as guarded: they are reported without failing the prediction. The extension's folder is on
sys.path while A1111 loads its scripts and extensions often add their own subfolders, so an absolute import
`a.b` matches a file whose dotted path ends with `a.b` anywhere in the extension (erring towards reaching more).
"""

from __future__ import annotations

import ast
import os
from collections import defaultdict


def _dotted(rel: str) -> str:
    """'lib/x/y.py' -> 'lib.x.y'; 'lib/x/__init__.py' -> 'lib.x'."""
    parts = rel[:-3].replace(os.sep, "/").split("/")
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _suffix_index(files: list[str]) -> dict[str, set[str]]:
    index: dict[str, set[str]] = defaultdict(set)
    for rel in files:
        parts = _dotted(rel).split(".")
        for start in range(len(parts)):
            index[".".join(parts[start:])].add(rel)
    return index


def _imported_names(rel: str, tree: ast.Module) -> set[str]:
    """Dotted names a file may import (its packages' __init__ included), relative imports made absolute."""
    package = _dotted(rel).split(".")
    if not rel.endswith("__init__.py"):
        package = package[:-1]
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            bases = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                anchor = package[:len(package) - node.level + 1] if node.level > 1 else package
                prefix = ".".join([*anchor, *(node.module.split(".") if node.module else [])])
            else:
                prefix = node.module or ""
            bases = [prefix] + [f"{prefix}.{alias.name}" if prefix else alias.name for alias in node.names]
        else:
            continue
        for base in bases:
            parts = [p for p in base.split(".") if p]
            names.update(".".join(parts[:i]) for i in range(1, len(parts) + 1))
    return names


def entry_points(files: list[str]) -> list[str]:
    """The files A1111 itself runs: scripts/*.py (not subfolders), install.py, preload.py."""
    return [rel for rel in files if rel in ("install.py", "preload.py")
            or (os.path.dirname(rel) == "scripts" and rel.endswith(".py"))]


def reached_files(trees: dict[str, ast.Module]) -> set[str]:
    """The files (relative paths) reached from the entry points through imports of the extension's own files."""
    files = sorted(trees)
    index = _suffix_index(files)
    reached = set(entry_points(files))
    queue = list(reached)
    while queue:
        rel = queue.pop()
        for name in _imported_names(rel, trees[rel]):
            for target in index.get(name, ()):
                if target not in reached:
                    reached.add(target)
                    queue.append(target)
    return reached
