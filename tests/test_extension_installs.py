"""install.py results kept across starts, packages installed on first need, metadata.ini ordering and A1111's names
in `modules.extensions`. Offline: wheels written by the test, pip in a throwaway venv (see tests/test_launch.py)."""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import subprocess
import sys
from pathlib import Path

import pytest

from modules import extension_installs, extension_status, extensions, launch_utils
from modules.options import Options
from tests.test_launch import make_extension, offline_pip, throwaway_python, version_for, wheels  # noqa: F401


@pytest.fixture
def data(tmp_path):
    """(opts, cmd_opts, user extensions folder) of a fresh data dir."""
    cmd_opts = argparse.Namespace(data_dir=str(tmp_path / "data"), disable_all_extensions=False,
                                  disable_extra_extensions=False)
    user_dir = Path(cmd_opts.data_dir, "extensions")
    user_dir.mkdir(parents=True)
    extension_status.reset()
    yield Options(), cmd_opts, user_dir
    extension_status.reset()


def test_a_failed_install_py_is_kept_and_not_rerun_until_changed_or_forced(data):
    opts, cmd_opts, user_dir = data
    runs = user_dir.parent / "runs.txt"
    failing = f"open({str(runs)!r}, 'a').write('run\\n')\nraise SystemExit('needs a GPU driver')\n"
    extension = make_extension(user_dir, "fails-once", failing)
    extensions.run_install_scripts_at_start(opts, cmd_opts)
    assert runs.read_text() == "run\n"
    assert extension_status.status("fails-once").install_error == "exit 1: needs a GPU driver"
    stamp = extension_installs.read_install_stamp(str(extension))
    assert stamp["ok"] is False and stamp["message"] == "exit 1: needs a GPU driver"

    extension_status.reset()  # a restart: nothing in memory, the stamp on disk
    extensions.run_install_scripts_at_start(opts, cmd_opts)
    assert runs.read_text() == "run\n"  # not run again
    assert extension_status.status("fails-once").install_error == "exit 1: needs a GPU driver"
    assert extension_status.status("fails-once").state == "failed"

    extensions.run_install_scripts_at_start(opts, cmd_opts, force=True)  # the user asks
    assert runs.read_text() == "run\nrun\n"
    (extension / "requirements.txt").write_text("tinypkg\n")  # the extension changed
    extensions.run_install_scripts_at_start(opts, cmd_opts)
    assert runs.read_text() == "run\nrun\nrun\n"
    git = ["git", "-C", str(extension), "-c", "user.name=t", "-c", "user.email=t@example.com"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "install.py"], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "update"], check=True)  # the extension was updated
    extensions.run_install_scripts_at_start(opts, cmd_opts)
    assert runs.read_text() == "run\nrun\nrun\nrun\n"
    (extension / "install.py").write_text(f"open({str(runs)!r}, 'a').write('fixed\\n')\n")
    extensions.run_install_scripts_at_start(opts, cmd_opts)
    assert runs.read_text().endswith("fixed\n")
    assert extension_status.status("fails-once").install_error == ""
    assert json.loads((extension / extension_installs.STAMP_FILE).read_text())["ok"] is True


def test_a_module_from_the_map_is_installed_on_first_need(data, offline_pip, throwaway_python, monkeypatch):  # noqa: F811
    monkeypatch.setattr(launch_utils, "python", throwaway_python)
    monkeypatch.setenv("COMMANDLINE_ARGS", f"--data-dir={data[1].data_dir}")  # the constraints file goes there
    monkeypatch.setitem(extension_installs.IMPORT_TO_PACKAGE, "tinypkg", "tinypkg")
    monkeypatch.setattr(extension_installs, "_failed_packages", set())
    assert extension_installs.install_for_missing_module("needs-tiny", "tinypkg.sub") == "tinypkg"
    assert version_for(throwaway_python, "tinypkg") == "1.0"
    assert extension_status.status("needs-tiny").installed_packages == ["tinypkg"]
    assert extension_status.status("needs-tiny").install_error == ""
    # the constraints file is written into the data dir in use (the app's when it is initialised, else the flags')
    assert Path(extension_installs._data_dir(), "cache", "pip-constraints.txt").is_file()
    with pytest.raises(importlib.metadata.PackageNotFoundError):
        importlib.metadata.version("tinypkg")  # the program's venv is untouched

    # not in the map: nothing to install (often the extension's own module; the loader reports that)
    assert extension_installs.install_for_missing_module("needs-own", "lib_own_module") is None
    # in the map but not available: recorded, and not tried again for the next script
    monkeypatch.setitem(extension_installs.IMPORT_TO_PACKAGE, "absentmod", "absent-package")
    assert extension_installs.install_for_missing_module("needs-absent", "absentmod") is None
    assert extension_status.status("needs-absent").install_error.startswith("Couldn't install absent-package")
    assert extension_installs.install_for_missing_module("needs-absent-too", "absentmod") is None
    assert "failed earlier" in extension_status.status("needs-absent-too").install_error
    # turned off
    monkeypatch.setenv(extension_installs.AUTO_INSTALL_ENV, "0")
    assert extension_installs.install_for_missing_module("needs-tiny-off", "tinypkg") is None
    assert "turned off" in extension_status.status("needs-tiny-off").install_error


def test_the_map_names_the_packages_a1111_extensions_assume():
    expected = {"timm": "timm", "pytorch_lightning": "pytorch-lightning", "sklearn": "scikit-learn",
                "open_clip": "open-clip-torch", "clip": "openai-clip", "basicsr": "basicsr"}
    assert {name: extension_installs.IMPORT_TO_PACKAGE[name] for name in expected} == expected
    for module in ("cv2", "matplotlib", "skimage", "omegaconf", "imageio", "pkg_resources"):
        assert launch_utils.is_installed(module), module  # installed with the program (requirements.txt)


def _ext(user_dir: Path, name: str, metadata: str = "", files: dict[str, str] | None = None) -> None:
    folder = user_dir / name
    folder.mkdir()
    if metadata:
        (folder / "metadata.ini").write_text(metadata)
    for path, text in (files or {}).items():
        (folder / path).parent.mkdir(parents=True, exist_ok=True)
        (folder / path).write_text(text)


def test_metadata_ini_orders_extensions_and_files_and_reports_requirements(data, tmp_path, monkeypatch):
    opts, cmd_opts, user_dir = data
    _ext(user_dir, "aaa", "[scripts]\nAfter = ccc\n", {"scripts/a.py": "", "javascript/a.js": ""})
    _ext(user_dir, "bbb", "[Extension]\nName = b-ext\n", {"scripts/b.py": "", "javascript/b.js": ""})
    _ext(user_dir, "ccc", "[Extension]\nRequires = missing-ext, ddd\n[javascript/z.js]\nBefore = ccc/c.js\n",
         {"scripts/c.py": "", "javascript/c.js": "", "javascript/z.js": ""})
    _ext(user_dir, "ddd", "[scripts/d.py]\nBefore = aaa\n[Extension]\nRequires = b-ext\n", {"scripts/d.py": ""})
    opts.set("disabled_extensions", ["ddd"])
    found = [e for e in extensions.list_extensions(opts, cmd_opts) if not e.is_builtin]
    assert [e.name for e in found] == ["ccc", "ddd", "aaa", "bbb"]  # aaa after ccc; ddd's Before aaa
    assert extensions.extensions[-4:] == found and [e.name for e in extensions.active()][-3:] == ["ccc", "aaa", "bbb"]
    ccc = extensions.find_extension("ccc")
    assert ccc.requirement_errors == ['Extension "ccc" requires "missing-ext" which is not installed.',
                                      'Extension "ccc" requires "ddd" which is disabled.']
    assert extensions.find_extension("ddd").requirement_errors == []  # disabled: not checked
    assert extensions.find_extension("bbb").metadata.declared_name == "b-ext"
    assert ccc.canonical_name == "ccc" and ccc.metadata.requires == ["missing-ext", "ddd"]
    assert [Path(p).name for p in ccc.file_paths("javascript", ".js")] == ["c.js", "z.js"]

    scripts = [(e.name, Path(p).name) for e, p in extensions.list_ordered_files("scripts", ".py", found)]
    assert scripts == [("ccc", "c.py"), ("aaa", "a.py"), ("bbb", "b.py")]  # ddd disabled
    javascript = [(e.name, Path(p).name) for e, p in extensions.list_ordered_files("javascript", ".js", found)]
    assert javascript == [("ccc", "z.js"), ("ccc", "c.js"), ("aaa", "a.js"), ("bbb", "b.js")]

    settings = tmp_path / "config.json"
    settings.write_text(json.dumps({"disabled_extensions": ["aaa"]}))
    monkeypatch.setenv("COMMANDLINE_ARGS", f"--data-dir={cmd_opts.data_dir}")
    # as in an install.py process: no initialised app here (another test of this worker may have made one)
    monkeypatch.setattr(sys.modules.get("modules.shared", argparse.Namespace()), "cmd_opts", None, raising=False)
    assert launch_utils.list_extensions(str(settings)) == ["ccc", "ddd", "bbb"]  # user extensions, in load order
    assert extensions.extensions_dir == str(user_dir)
    settings.write_text(json.dumps({"disable_all_extensions": "extra"}))
    assert launch_utils.list_extensions(str(settings)) == []


def test_requires_alternatives_pick_the_installed_one(data):
    opts, cmd_opts, user_dir = data
    _ext(user_dir, "one", "[Extension]\nRequires = nothere|two\n")
    _ext(user_dir, "two")
    found = {e.name: e for e in extensions.list_extensions(opts, cmd_opts)}
    assert found["one"].metadata.requires == ["two"] and found["one"].requirement_errors == []
