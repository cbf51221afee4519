"""The architecture rules of docs/architecture.md, as tests: the core imports no adapter, no import circles
(import-linter contracts in .importlinter), and modules stay small enough to read."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[1]
MAX_LINES = 600
# Modules allowed over MAX_LINES, each with its reason. Shrink this list; never grow it without a reason.
LONG_MODULES = {
    "scripts/xyz_grid.py": "A1111's X/Y/Z plot: its axis table (30 axes, each with apply/format/confirm) is one list",
    "modules/api/__init__.py": "A1111's /sdapi/v1 route table; the routes are one-line translations kept together",
    "modules/options.py": "the settings table: every A1111 setting with its key, label, default and section",
    "modules/scripts.py": "A1111's Script class and ScriptRunner: the surface extensions import as one module",
    "modules/networks/lora.py": "LoRA and the LyCORIS algorithms (LoCon, LoHa, LoKr, DoRA) share one weight patcher",
}


def _lint_imports() -> subprocess.CompletedProcess:
    exe = shutil.which("lint-imports", path=os.path.dirname(sys.executable)) or shutil.which("lint-imports")
    assert exe, "import-linter is not installed (requirements-test.txt)"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([exe, "--no-cache"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)


def test_import_linter_contracts_are_kept():
    result = _lint_imports()
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "Contracts: 2 kept, 0 broken." in result.stdout


def test_the_contracts_would_catch_a_core_module_importing_an_adapter(tmp_path):
    """The contract is not vacuous: a copy of the tree where processing imports the shared globals breaks it."""
    copy = tmp_path / "tree"
    shutil.copytree(ROOT / "modules", copy / "modules", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / ".importlinter", copy / ".importlinter")
    runner = copy / "modules" / "runner.py"
    runner.write_text(runner.read_text() + "\n\ndef _bad():\n    from modules import shared  # noqa\n")
    exe = shutil.which("lint-imports", path=os.path.dirname(sys.executable)) or shutil.which("lint-imports")
    result = subprocess.run([exe, "--no-cache"], cwd=copy, env={**os.environ, "PYTHONPATH": str(copy)},
                            capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    assert "modules.runner -> modules.shared" in result.stdout


def test_no_module_is_longer_than_the_limit_without_a_reason():
    too_long = {}
    for folder in ("modules", "scripts"):
        for path in (ROOT / folder).rglob("*.py"):
            lines = len(path.read_text(encoding="utf-8").splitlines())
            name = path.relative_to(ROOT).as_posix()
            if lines > MAX_LINES and name not in LONG_MODULES:
                too_long[name] = lines
    assert too_long == {}, f"over {MAX_LINES} lines: {too_long} (split them, or give a reason in LONG_MODULES)"
