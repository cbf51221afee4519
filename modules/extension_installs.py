"""Package installs on behalf of extensions, under constraints that keep the program's own packages as they are.

An extension may add packages (its `install.py` calling `launch.run_pip`, or a package installed on first need when
its script fails with `ModuleNotFoundError`), but it must never replace one the program runs on: one extension's
`install.py` downgrading huggingface_hub/transformers/tokenizers broke the whole program (issue 15). Every pip run
started here therefore gets a constraints file (`pip install -c`, and `PIP_CONSTRAINT` for an install.py that runs pip
itself) pinning each core package to the version installed now, generated at run time from `importlib.metadata`
into `<data dir>/cache/pip-constraints.txt`. A request that conflicts fails in pip's resolver before anything is
changed, and the error names the pinned package.

Light on purpose (no torch, no gradio): `launch` imports it inside an install.py subprocess.

Environment knobs:
- `INDEX_URL` (A1111's): pip's `--index-url`.
- `WEBUI_PIP_FIND_LINKS=DIR`: install only from the wheels in DIR (`--no-index --find-links DIR`): offline
  installs and the tests.
- `WEBUI_AUTO_INSTALL_PACKAGES=0` (or `--skip-install`, or the setting `auto_install_extension_packages` off):
  no first-need installs.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.metadata
import json
import logging
import os
import re
import shlex
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

from modules import extension_status

log = logging.getLogger("webui.extensions")

ROOT = Path(__file__).resolve().parents[1]
CONSTRAINT_FILE_ENV = "WEBUI_PIP_CONSTRAINT"  # the file the app generated, handed to install.py subprocesses
FIND_LINKS_ENV = "WEBUI_PIP_FIND_LINKS"
AUTO_INSTALL_ENV = "WEBUI_AUTO_INSTALL_PACKAGES"

# The packages the program runs on, besides every package named in requirements.txt.
CORE_PACKAGES = (
    "torch", "torchvision", "diffusers", "transformers", "huggingface_hub", "tokenizers", "gradio", "gradio_client",
    "fastapi", "starlette", "uvicorn", "pydantic", "pydantic_core", "safetensors", "accelerate", "numpy", "pillow",
)

# Import name -> pip requirement, for packages A1111's environment had (or its extensions assume) and that are too
# heavy to install with the program: installed the first time an extension fails to import them.
# `clip`: A1111 installs OpenAI's CLIP from a git archive (CLIP_PACKAGE); git URLs are not reachable offline or from
# every index, so the PyPI packaging of the same code, `openai-clip`, is used (same `import clip` API).
IMPORT_TO_PACKAGE: dict[str, str] = {
    "timm": "timm",
    "torchmetrics": "torchmetrics",  # came with pytorch_lightning in A1111's environment
    "websockets": "websockets",      # came with gradio 3
    "pytorch_lightning": "pytorch-lightning",
    "lightning": "lightning",
    "basicsr": "basicsr",
    "clip": "openai-clip",
    "open_clip": "open-clip-torch",
    "sklearn": "scikit-learn",
    "onnxruntime": "onnxruntime",
    "onnx": "onnx",
    "piexif": "piexif",
    "prettytable": "prettytable",
    "dominate": "dominate",
    "tensorboardX": "tensorboardX",
    "wandb": "wandb",
    "kornia": "kornia",
    "segment_anything": "segment-anything",
    "facexlib": "facexlib",
    "gfpgan": "gfpgan",
    "realesrgan": "realesrgan",
    "mediapipe": "mediapipe",
    "rembg": "rembg",
    "lpips": "lpips",
    "ftfy": "ftfy",
    "fvcore": "fvcore",
    "addict": "addict",
    "yapf": "yapf",
    "blendmodes": "blendmodes",
    "jsonmerge": "jsonmerge",
    "inflection": "inflection",
    "resize_right": "resize-right",
    "clean_fid": "clean-fid",
    "torchdiffeq": "torchdiffeq",
    "moviepy": "moviepy",
    "av": "av",
    "numexpr": "numexpr",
    "pandas": "pandas",
    "send2trash": "Send2Trash",
    "toml": "toml",
    "tomesd": "tomesd",
    # sd-dynamic-prompts asks for dynamicprompts[magicprompt], whose extra needs transformers<5: refused under the
    # constraints, so its install.py fails; its scripts then need `dynamicprompts`, installed here without that extra.
    "dynamicprompts": "dynamicprompts[attentiongrabber]",
}

_failed_packages: set[str] = set()  # first-need installs that failed in this run: not retried for every script
_install_lock = threading.Lock()


def _normalize(name: str) -> str:
    """PEP 503 normalised project name (`Pillow` == `pillow`, `huggingface-hub` == `huggingface_hub`)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_names(requirements_file: str | os.PathLike[str] = ROOT / "requirements.txt") -> list[str]:
    """Project names listed in a requirements file (comments, options and markers dropped)."""
    names = []
    try:
        lines = Path(requirements_file).read_text(encoding="utf8").splitlines()
    except OSError:
        return names
    for line in lines:
        line = line.split("#", 1)[0].strip()
        match = re.match(r"([A-Za-z0-9][A-Za-z0-9._-]*)", line)
        if match and not line.startswith("-"):
            names.append(match.group(1))
    return names


def pinned_versions() -> dict[str, str]:
    """{normalised name: installed version} of every core package installed now."""
    pins: dict[str, str] = {}
    for name in (*CORE_PACKAGES, *requirement_names()):
        try:
            pins[_normalize(name)] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return pins


def _data_dir() -> str:
    from modules import paths_internal  # light: argparse and the flags only

    return paths_internal.current_paths()["data_path"]


def constraints_file(data_dir: str | None = None) -> str:
    """Path of the constraints file pinning the core packages to their installed versions, (re)written now.

    Inside an install.py subprocess the file the app generated is used as it is (`WEBUI_PIP_CONSTRAINT`)."""
    handed_down = os.environ.get(CONSTRAINT_FILE_ENV)
    if data_dir is None and handed_down and os.path.isfile(handed_down):
        return handed_down
    path = Path(data_dir or _data_dir(), "cache", "pip-constraints.txt")
    text = ("# Generated by the WebUI at each extension install: the program's own packages at their installed\n"
            "# versions. Extensions may add packages but not replace these.\n"
            + "".join(f"{name}=={version}\n" for name, version in sorted(pinned_versions().items())))
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.is_file() or path.read_text(encoding="utf8") != text:
        temporary = path.with_name(f".{path.name}.{os.getpid()}")
        temporary.write_text(text, encoding="utf8")
        os.replace(temporary, path)
    return str(path)


def pip_environment(constraint: str, base: dict[str, str] | None = None) -> dict[str, str]:
    """`base` (default os.environ) with `PIP_CONSTRAINT` naming our file too, for pip run by anyone under it."""
    env = dict(os.environ if base is None else base)
    others = [p for p in env.get("PIP_CONSTRAINT", "").split() if p != constraint]
    env["PIP_CONSTRAINT"] = " ".join([*others, constraint])
    env[CONSTRAINT_FILE_ENV] = constraint
    return env


def source_options() -> str:
    """pip options choosing where packages come from: `WEBUI_PIP_FIND_LINKS`, else A1111's `INDEX_URL`."""
    find_links = os.environ.get(FIND_LINKS_ENV, "")
    if find_links:
        return f" --no-index --find-links {shlex.quote(find_links)}"
    index_url = os.environ.get("INDEX_URL", "")
    return f" --index-url {shlex.quote(index_url)}" if index_url else ""


def pip_subcommand(command: str) -> tuple[str, list[str]]:
    """(pip subcommand, the project names it names) of a `run_pip` command such as `install -U "foo>=1" bar`."""
    try:
        words = shlex.split(command)
    except ValueError:
        words = command.split()
    sub = next((w for w in words if not w.startswith("-")), "")
    names = []
    for word in words[words.index(sub) + 1:] if sub else []:
        match = re.match(r"([A-Za-z0-9][A-Za-z0-9._-]*)", word)
        if match and not word.startswith("-") and "/" not in word and "://" not in word:
            names.append(_normalize(match.group(1)))
    return sub, names


def refused_uninstall(command: str) -> list[str]:
    """Core packages an `uninstall` command would remove (an extension must not remove those either)."""
    sub, names = pip_subcommand(command)
    if sub != "uninstall":
        return []
    pins = pinned_versions()
    return [name for name in names if name in pins]


def conflicting_pins(pip_output: str) -> list[str]:
    """`name==version` of each pinned package pip named as the cause of a failure: the resolver's "(constraint)"
    lines, or "No matching distribution found for NAME…" where NAME is pinned (the constraint filtered out every
    version the request allows)."""
    found = []
    for name, version in re.findall(r"\(constraint\)\s+([A-Za-z0-9][A-Za-z0-9._-]*)\s*==\s*([^\s,;]+)", pip_output):
        found.append(f"{_normalize(name)}=={version}")
    unmatched = re.findall(r"(?:No matching distribution found for|Could not find a version that satisfies the "
                           r"requirement)\s+([A-Za-z0-9][A-Za-z0-9._-]*)", pip_output)
    if unmatched:
        pins = pinned_versions()
        found += [f"{_normalize(n)}=={pins[_normalize(n)]}" for n in unmatched if _normalize(n) in pins]
    return list(dict.fromkeys(found))


def conflict_message(desc: str, pip_output: str) -> str | None:
    """The user-facing reason when pip failed because a request would replace a pinned package, else None."""
    pins = conflicting_pins(pip_output)
    if not pins:
        return None
    return (f"Couldn't install {desc}: it would replace {', '.join(pins)}, which this program needs at that version "
            "(extensions may add packages but not change the program's own).")


def install_requirements(requirements: list[str], desc: str, python: str | None = None) -> str:
    """`pip install REQUIREMENTS` under the constraints; returns pip's output, raises RuntimeError on failure (with
    the pinned package named when that is the cause)."""
    constraint = constraints_file()
    command = [python or sys.executable, "-m", "pip", "install", "--prefer-binary", "-c", constraint,
               *shlex.split(source_options()), *requirements]
    result = subprocess.run(command, env=pip_environment(constraint), capture_output=True, text=True,
                            encoding="utf8", errors="replace")
    output = (result.stdout or "") + (result.stderr or "")
    if result.returncode != 0:
        reason = conflict_message(desc, output) or f"Couldn't install {desc}"
        raise RuntimeError(f"{reason}.\nCommand: {shlex.join(command)}\nError code: {result.returncode}\n"
                           f"{output.strip()[-3000:]}")
    return output


def auto_install_enabled() -> bool:
    """First-need installs are on unless turned off by env, `--skip-install` or the setting."""
    if os.environ.get(AUTO_INSTALL_ENV, "1").strip().lower() in ("0", "false", "no", "off"):
        return False
    shared = sys.modules.get("modules.shared")
    if getattr(getattr(shared, "cmd_opts", None), "skip_install", False):
        return False
    opts = getattr(shared, "opts", None)
    try:
        return bool(getattr(opts, "auto_install_extension_packages", True))
    except (AttributeError, KeyError):
        return True


def install_for_missing_module(extension_name: str, module_name: str) -> str | None:
    """Install the package providing `module_name` (from IMPORT_TO_PACKAGE) for `extension_name`, under the same
    constraints as install.py. Returns the pip requirement installed (recorded in the extension's status); None when
    the module is not in the map (nothing recorded: the loader's own error says it), first-need installs are off, or
    the install failed (the reason is recorded with `record_install`)."""
    top = (module_name or "").split(".", 1)[0]
    package = IMPORT_TO_PACKAGE.get(top)
    if package is None:  # often the extension's own module; the script loader records that failure itself
        log.info("Extension %s: no known package provides '%s'", extension_name, module_name)
        return None
    if not auto_install_enabled():
        extension_status.record_install(
            extension_name, error=f"needs package {package} (for '{top}'); installing on first need is turned off")
        return None
    with _install_lock:
        if package in _failed_packages:
            extension_status.record_install(extension_name, error=f"Couldn't install {package} (failed earlier)")
            return None
        try:
            importlib.import_module(top)
            installed_already = True  # another extension's first need installed it meanwhile
        except ImportError:
            installed_already = False
        if not installed_already:
            log.info("Extension %s needs '%s': installing %s", extension_name, top, package)
            try:
                # launch_utils.python when launch is loaded (it may point pip elsewhere), read without importing it:
                # launch_utils imports this module
                launch = sys.modules.get("modules.launch_utils")
                install_requirements([package], package, python=getattr(launch, "python", sys.executable))
            except (RuntimeError, OSError) as error:
                _failed_packages.add(package)
                log.error("Extension %s: %s", extension_name, error)
                extension_status.record_install(extension_name, error=str(error))
                return None
            importlib.invalidate_caches()
    extension_status.record_install(extension_name, installed_packages=[package])
    return package


def installed_distributions() -> dict[str, str]:
    """{normalised name: version} of every installed distribution (to tell what an install step added)."""
    found = {}
    for dist in importlib.metadata.distributions():
        name = dist.metadata.get("Name") if dist.metadata else None
        if name:
            found[_normalize(name)] = dist.version
    return found


def changed_distributions(before: dict[str, str], after: dict[str, str]) -> list[str]:
    """`name==version` of each distribution added or changed between two `installed_distributions()`."""
    return [f"{name}=={version}" for name, version in sorted(after.items()) if before.get(name) != version]


STAMP_FILE = ".webui-install-stamp"  # in the extension's folder


def _git_head(path: str) -> str:
    """The commit checked out in the extension's git folder ("" when not a git checkout), read without git."""
    git_dir = Path(path, ".git")
    try:
        head = (git_dir / "HEAD").read_text(encoding="utf8").strip()
        if not head.startswith("ref: "):
            return head
        ref = head[5:]
        if (git_dir / ref).is_file():
            return (git_dir / ref).read_text(encoding="utf8").strip()
        packed = (git_dir / "packed-refs").read_text(encoding="utf8")
        return next((line.split()[0] for line in packed.splitlines() if line.endswith(" " + ref)), ref)
    except OSError:
        return ""


def install_digest(path: str) -> str:
    """Hash of what decides what install.py does: the commit, install.py, requirements*.txt and pyproject.toml."""
    digest = hashlib.sha256(_git_head(path).encode() + b"\0")
    names = sorted(n for n in os.listdir(path) if n in ("install.py", "pyproject.toml")
                   or (n.startswith("requirements") and n.endswith(".txt")))
    for name in names:
        file = os.path.join(path, name)
        if os.path.isfile(file):
            digest.update(name.encode() + b"\0" + Path(file).read_bytes() + b"\0")
    return digest.hexdigest()


def read_install_stamp(path: str) -> dict[str, Any] | None:
    """{"hash", "ok", "message", "packages"} of the last install.py run, None when it never ran."""
    try:
        text = Path(os.path.join(path, STAMP_FILE)).read_text(encoding="utf8").strip()
    except OSError:
        return None
    try:
        stamp = json.loads(text)
    except ValueError:
        stamp = {"hash": text, "ok": True}  # the older stamp: the bare hash of a successful run
    if not isinstance(stamp, dict):
        return None
    return {"hash": str(stamp.get("hash", "")), "ok": bool(stamp.get("ok", True)),
            "message": str(stamp.get("message", "")), "packages": list(stamp.get("packages") or [])}


def write_install_stamp(path: str, digest: str, ok: bool, message: str, packages: list[str]) -> None:
    stamp = {"hash": digest, "ok": ok, "message": message, "packages": packages}
    Path(os.path.join(path, STAMP_FILE)).write_text(json.dumps(stamp, indent=1) + "\n", encoding="utf8")


def distributions_of(python: str) -> dict[str, str]:
    """{name: version} installed for `python` (another interpreter is asked in a subprocess)."""
    if os.path.abspath(python) == os.path.abspath(sys.executable):
        return installed_distributions()
    code = "import json; from modules import extension_installs as i; print(json.dumps(i.installed_distributions()))"
    result = subprocess.run([python, "-c", code], cwd=str(ROOT), capture_output=True, text=True)
    try:
        return json.loads(result.stdout)
    except ValueError:
        return {}


def failure_summary(output: str, returncode: int) -> str:
    """The line that says why: a pinned-package conflict if that was it (also when install.py ran pip itself), else
    the last line (the exception)."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    reason = next((line for line in lines if "which this program needs at that version" in line), None)
    pins = conflicting_pins(output) if reason is None else []
    if pins:
        reason = f"it would replace {', '.join(pins)}, which this program needs at that version"
    reason = reason or (lines[-1] if lines else "")
    return f"exit {returncode}: {reason}" if reason else f"exit {returncode}"
