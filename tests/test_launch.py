"""`launch` (A1111's module for install.py files) and pip under the constraints that pin the program's packages.

No network and no change to the program's venv: packages come from wheels the test writes (`WEBUI_PIP_FIND_LINKS`),
and pip runs in a throwaway venv that sees the program's packages through a .pth file. pip installs into the
throwaway venv only (it refuses to uninstall anything outside it), so even a failure of the constraints could not
touch the program's venv, while the resolver sees exactly the installed versions it would see in the real one.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.metadata
import inspect
import os
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from modules import extension_installs, extension_status, extensions, launch_utils

ROOT = Path(__file__).resolve().parents[1]


def write_wheel(folder: Path, name: str, version: str, files: dict[str, str], requires: tuple[str, ...] = (),
                extras: tuple[str, ...] = ()) -> Path:
    """A minimal pure-Python wheel, written by hand (no build step, no network)."""
    dist_info = f"{name}-{version}.dist-info"
    contents = dict(files)
    contents[f"{dist_info}/METADATA"] = (f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
                                         + "".join(f"Provides-Extra: {e}\n" for e in extras)
                                         + "".join(f"Requires-Dist: {r}\n" for r in requires))
    contents[f"{dist_info}/WHEEL"] = "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    record = []
    for path, text in contents.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=").decode()
        record.append(f"{path},sha256={digest},{len(text.encode())}")
    contents[f"{dist_info}/RECORD"] = "\n".join([*record, f"{dist_info}/RECORD,,"]) + "\n"
    wheel = folder / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        for path, text in contents.items():
            archive.writestr(path, text)
    return wheel


@pytest.fixture(scope="module")
def wheels(tmp_path_factory) -> Path:
    """tinypkg 1.0; tinydep 1.0 (needs safetensors<0.5); tinyextra 1.0 (its extra `x` needs safetensors<0.5); a fake
    safetensors 0.0.1."""
    folder = tmp_path_factory.mktemp("wheels")
    write_wheel(folder, "tinyextra", "1.0", {"tinyextra/__init__.py": ""}, requires=('safetensors<0.5; extra == "x"',),
                extras=("x",))
    write_wheel(folder, "tinypkg", "1.0", {"tinypkg/__init__.py": "VALUE = 42\n"})
    write_wheel(folder, "tinydep", "1.0", {"tinydep/__init__.py": ""}, requires=("safetensors<0.5",))
    write_wheel(folder, "safetensors", "0.0.1", {"safetensors/__init__.py": "__version__ = '0.0.1'\n"})
    return folder


@pytest.fixture(scope="module")
def throwaway_python(tmp_path_factory) -> str:
    """A venv whose own site-packages is empty and that sees the program's packages (pip included) after it."""
    venv = tmp_path_factory.mktemp("venv")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = str(venv / "bin" / "python")
    own = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                         capture_output=True, text=True, check=True).stdout.strip()
    Path(own, "_program_packages.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return python


@pytest.fixture
def offline_pip(monkeypatch, wheels):
    """pip reads no config and no index: only the test's wheels."""
    monkeypatch.setenv(extension_installs.FIND_LINKS_ENV, str(wheels))
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
    for name in ("PIP_FIND_LINKS", "PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "PIP_CONSTRAINT", "INDEX_URL",
                 extension_installs.CONSTRAINT_FILE_ENV):
        monkeypatch.delenv(name, raising=False)
    extension_status.reset()
    yield wheels
    extension_status.reset()


def make_extension(folder: Path, name: str, install_py: str) -> Path:
    path = folder / name
    path.mkdir(parents=True)
    (path / "install.py").write_text(install_py)
    return path


def version_for(python: str, package: str) -> str:
    code = f"import importlib.metadata as m; print(m.version({package!r}))"
    return subprocess.run([python, "-c", code], capture_output=True, text=True, check=True).stdout.strip()


def test_launch_has_a1111_names_and_imports_no_torch_or_gradio():
    code = ("import sys, launch; heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'gradio'));"
            "print(heavy, launch.python == sys.executable, launch.dir_repos, launch.skip_install,"
            " launch.args.data_dir, launch.is_installed('numpy'), launch.is_installed('no_such_module_xyz'))")
    out = subprocess.run([sys.executable, "-c", code], cwd="/", env={**os.environ, "PYTHONPATH": str(ROOT)},
                         capture_output=True, text=True, check=True).stdout.split()
    assert out == ["[]", "True", "repositories", "False", str(ROOT), "True", "False"]
    import launch

    expected = {"run_pip": ["command", "desc", "live"], "run": ["command", "desc", "errdesc", "custom_env", "live"],
                "is_installed": ["package"], "git_clone": ["url", "dir", "name", "commithash"],
                "requirements_met": ["requirements_file"], "run_extension_installer": ["extension_dir"],
                "list_extensions": ["settings_file"], "check_run_python": ["code"], "repo_dir": ["name"]}
    for name, parameters in expected.items():
        assert list(inspect.signature(getattr(launch, name)).parameters) == parameters, name
    assert launch.commit_hash() == subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True,
                                                  text=True).stdout.strip()
    assert launch.run("echo hello") == "hello\n"
    with pytest.raises(RuntimeError, match=r"(?s)Couldn't frob\..*Error code: 3"):
        launch.run("exit 3", errdesc="Couldn't frob")
    assert launch.check_run_python("import sys; sys.exit(0)") and not launch.check_run_python("raise SystemExit(1)")


def test_requirements_met_compares_pinned_versions(tmp_path):
    numpy_version = importlib.metadata.version("numpy")
    met = tmp_path / "ok.txt"
    met.write_text(f"numpy=={numpy_version}\nsome-unpinned-name\n")
    unmet = tmp_path / "no.txt"
    unmet.write_text("numpy==0.0.1\n")
    missing = tmp_path / "missing.txt"
    missing.write_text("no-such-distribution==1.0\n")
    assert launch_utils.requirements_met(str(met))
    assert not launch_utils.requirements_met(str(unmet)) and not launch_utils.requirements_met(str(missing))


def test_constraints_pin_core_and_requirements_packages(tmp_path):
    path = extension_installs.constraints_file(str(tmp_path))
    assert path == str(tmp_path / "cache" / "pip-constraints.txt")
    pins = dict(line.split("==") for line in Path(path).read_text().splitlines() if not line.startswith("#"))
    for name in ("torch", "diffusers", "transformers", "huggingface-hub", "tokenizers", "gradio", "safetensors",
                 "accelerate", "numpy", "pillow", "fastapi", "pydantic", "lark", "opencv-python-headless"):
        assert pins[name] == importlib.metadata.version(name), name


def test_install_py_adds_a_package_through_launch_run_pip(tmp_path, offline_pip, throwaway_python):
    extension = make_extension(tmp_path / "extensions", "adds-tinypkg", (
        "import launch, os\n"
        "assert not launch.is_installed('tinypkg')\n"
        "print('constraint', os.environ['PIP_CONSTRAINT'])\n"
        "launch.run_pip('install tinypkg', 'tinypkg')\n"
        "assert launch.is_installed('tinypkg')\n"
        "import tinypkg\n"
        "print('VALUE', tinypkg.VALUE, 'cwd', os.getcwd())\n"))
    output = extensions.run_install_script(str(extension), data_dir=str(tmp_path), python=throwaway_python)
    assert f"VALUE 42 cwd {extension}" in output
    assert f"constraint {tmp_path}/cache/pip-constraints.txt" in output
    assert extension_installs.read_install_stamp(str(extension))["packages"] == ["tinypkg==1.0"]
    assert extension_status.status("adds-tinypkg").installed_packages == ["tinypkg==1.0"]
    assert version_for(throwaway_python, "tinypkg") == "1.0"
    with pytest.raises(importlib.metadata.PackageNotFoundError):
        importlib.metadata.version("tinypkg")  # the program's venv is untouched


@pytest.mark.parametrize("request_line", ["launch.run_pip('install safetensors==0.0.1', 'safetensors 0.0.1')",
                                          "launch.run_pip('install tinydep', 'tinydep')"])
def test_a_request_replacing_a_pinned_package_fails_naming_it(tmp_path, offline_pip, throwaway_python, request_line):
    installed = importlib.metadata.version("safetensors")
    extension = make_extension(tmp_path / "extensions", "wants-old-safetensors", f"import launch\n{request_line}\n")
    with pytest.raises(extensions.ExtensionError, match=f"safetensors=={installed}, which this program needs"):
        extensions.run_install_script(str(extension), data_dir=str(tmp_path), python=throwaway_python)
    status = extension_status.status("wants-old-safetensors")
    assert f"it would replace safetensors=={installed}" in status.install_error
    assert version_for(throwaway_python, "safetensors") == installed == importlib.metadata.version("safetensors")
    stamp = extension_installs.read_install_stamp(str(extension))
    assert stamp["ok"] is False and f"safetensors=={installed}" in stamp["message"]


@pytest.mark.parametrize("requirement", ["safetensors==0.0.1", "tinyextra[x]"])
def test_pip_run_by_install_py_itself_obeys_the_constraints(tmp_path, offline_pip, throwaway_python, requirement):
    extension = make_extension(tmp_path / "extensions", "own-pip", (
        "import subprocess, sys\n"
        f"sys.exit(subprocess.run([sys.executable, '-m', 'pip', 'install', {requirement!r}, '--no-index',"
        f" '--find-links', {str(offline_pip)!r}]).returncode)\n"))
    installed = importlib.metadata.version("safetensors")
    with pytest.raises(extensions.ExtensionError):
        extensions.run_install_script(str(extension), data_dir=str(tmp_path), python=throwaway_python)
    assert extension_status.status("own-pip").install_error == (
        f"exit 1: it would replace safetensors=={installed}, which this program needs at that version")
    assert version_for(throwaway_python, "safetensors") == installed
    assert subprocess.run([throwaway_python, "-c", "import tinyextra"]).returncode == 1  # all or nothing


def test_uninstalling_a_program_package_is_refused():
    with pytest.raises(RuntimeError, match="numpy belong to this program"):
        launch_utils.run_pip("uninstall -y numpy", "numpy")
    assert importlib.metadata.version("numpy")
