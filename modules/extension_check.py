"""The extension compatibility check: reads an A1111 extension statically and predicts whether it runs here.

`check_extension(path)` (or `check_extensions(paths)`, which looks the names of many extensions up at once) reports,
per extension: the A1111 names it uses that this program lacks (Python modules and attributes, `Script` methods,
`p.` attributes, `launch` helpers, `shared.cmd_opts` flags, page-JavaScript globals, Gradio 3 forms), the packages
it needs, whether it patches ldm/sgm model internals, and a prediction: "incompatible" (with the reason),
"missing names", "needs packages" or "should work". `python webui.py --check-extensions [PATH_OR_GIT_URL ...]`
runs `main`; `tools/extension_census.py` runs it over a folder of extensions.

Names are looked up by importing this program's modules in a child process (`modules.extension_check_resolve`), so
the answer is what an extension would find, and checking does not disturb the running app. Uses inside a `try`
block are "guarded": reported, but they do not make the prediction fail (the extension copes without them).
"""

from __future__ import annotations

import argparse
import ast
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from typing import Any

from modules import extension_check_js as js
from modules.extension_check_scan import ExtensionUsage, NameUse, normalise_requirement, preload_flags, scan_extension

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MANIFEST_PATH = os.path.join(REPO_ROOT, "configs", "a1111_surface.json")
PYTHON_KINDS = ("module", "attribute", "callback", "launch_helper", "script_method", "p_attribute", "cmd_opt")
PREDICTIONS = ("incompatible", "missing names", "needs packages", "should work")

# Import names whose pip package has another name (used to match what an extension's install.py installs)
KNOWN_PACKAGES = {"cv2": "opencv-python", "PIL": "pillow", "skimage": "scikit-image", "sklearn": "scikit-learn",
                  "yaml": "pyyaml", "pkg_resources": "setuptools", "google": "protobuf", "bs4": "beautifulsoup4",
                  "dateutil": "python-dateutil", "Crypto": "pycryptodome", "git": "gitpython", "fitz": "pymupdf",
                  "mediapipe": "mediapipe", "insightface": "insightface", "onnxruntime": "onnxruntime-gpu",
                  "segment_anything": "segment-anything", "clip": "clip", "ultralytics": "ultralytics",
                  "dynamicprompts": "dynamicprompts", "send2trash": "send2trash", "lark": "lark"}


@dataclass
class ExtensionReport:
    """The check's answer for one extension."""

    name: str
    path: str
    source: str = ""                # the path or git URL given
    commit: str = ""
    ldm_patching: dict[str, str] = field(default_factory=dict)     # reason -> where
    incompatible_uses: dict[str, str] = field(default_factory=dict)  # A1111 name refused here -> why (where)
    names: dict[str, dict[str, Any]] = field(default_factory=dict)  # name -> kind, where, guarded, missing (why)
    packages: dict[str, str] = field(default_factory=dict)          # import name -> how it is provided here
    prediction: str = "should work"
    reason: str = ""

    @property
    def missing(self) -> list[str]:
        """A1111 names used outside guards that this program lacks, in order of first use."""
        return [n for n, info in self.names.items() if info["missing"] and not info["guarded"]]

    @property
    def missing_guarded(self) -> list[str]:
        return [n for n, info in self.names.items() if info["missing"] and info["guarded"]]

    def missing_of(self, kinds: tuple[str, ...]) -> list[str]:
        return [n for n in self.missing if self.names[n]["kind"] in kinds]

    @property
    def needs_packages(self) -> list[str]:
        return [name for name, how in self.packages.items() if how != "available"]

    @property
    def python_names_found(self) -> bool:
        return not self.missing_of(PYTHON_KINDS)

    @property
    def all_names_found(self) -> bool:
        return not self.missing

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "path": self.path, "source": self.source, "commit": self.commit,
                "prediction": self.prediction, "reason": self.reason, "ldm_patching": dict(self.ldm_patching),
                "incompatible_uses": dict(self.incompatible_uses),
                "missing": self.missing, "missing_guarded": self.missing_guarded,
                "needs_packages": self.needs_packages, "packages": dict(self.packages), "names": dict(self.names)}

    def summary(self) -> str:
        """One line: the prediction and what it rests on."""
        return f"{self.prediction}: {self.reason}" if self.reason else self.prediction


# --- what this program provides ------------------------------------------------------------------------------------

def _module_constant(relative_path: str, constant: str) -> Any:
    """A literal module-level constant of one of this program's files, read without importing it."""
    path = os.path.join(REPO_ROOT, relative_path)
    try:
        tree = ast.parse(open(path, encoding="utf-8").read())
    except (OSError, SyntaxError):
        return None
    for node in tree.body:
        targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(node, ast.AnnAssign) \
            else []
        if any(isinstance(t, ast.Name) and t.id == constant for t in targets) and node.value is not None:
            try:
                return ast.literal_eval(node.value)
            except ValueError:
                return None
    return None


def supported_gradio_forms() -> set[str]:
    """The Gradio 3 forms `modules.gradio_extensions` declares it supports (`SUPPORTED_GRADIO3_FORMS`)."""
    return set(_module_constant("modules/gradio_extensions.py", "SUPPORTED_GRADIO3_FORMS") or ())


def first_need_packages() -> dict[str, str]:
    """Import name -> package installed on first need (`modules.extension_installs.IMPORT_TO_PACKAGE`)."""
    return dict(_module_constant("modules/extension_installs.py", "IMPORT_TO_PACKAGE") or {})


def load_manifest() -> dict[str, Any]:
    """configs/a1111_surface.json: the census names (kinds, A1111 signatures) and the names refused here."""
    try:
        with open(MANIFEST_PATH, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return {"names": [], "incompatible": {}}


def refused_name(name: str, incompatible: dict[str, str]) -> str | None:
    """The manifest's reason when `name` (or the object it belongs to) exists here only to refuse."""
    parts = name.split(".")
    for cut in range(len(parts), 0, -1):
        reason = incompatible.get(".".join(parts[:cut]))
        if reason:
            return reason
    return None


def builtin_preload_flags() -> set[str]:
    folder = os.path.join(REPO_ROOT, "extensions-builtin")
    flags: set[str] = set()
    if os.path.isdir(folder):
        for name in sorted(os.listdir(folder)):
            flags |= preload_flags(os.path.join(folder, name, "preload.py"))
    return flags


def resolve_names(names: list[str], timeout: float = 300) -> dict[str, str]:
    """{name: "" when it exists here, else why not}, decided by importing this program's modules in a child
    process (see `modules.extension_check_resolve`)."""
    if not names:
        return {}
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=REPO_ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    completed = subprocess.run([sys.executable, "-m", "modules.extension_check_resolve"], input=json.dumps(names),
                               capture_output=True, text=True, cwd=REPO_ROOT, env=env, timeout=timeout)
    if completed.returncode != 0:
        tail = completed.stderr.strip().splitlines()[-1:] or ["no output"]
        raise RuntimeError(f"looking the names up failed: {tail[0]}")
    return json.loads(completed.stdout)


# --- the check ---------------------------------------------------------------------------------------------------

def _git_commit(path: str) -> str:
    if not os.path.exists(os.path.join(path, ".git")):
        return ""
    completed = subprocess.run(["git", "-C", path, "rev-parse", "HEAD"], capture_output=True, text=True)
    return completed.stdout.strip() if completed.returncode == 0 else ""


def _collect(path: str) -> tuple[ExtensionUsage, list[NameUse]]:
    """Every name use of the extension at `path`: Python (ast), its page JS and Gradio forms."""
    usage, forms = scan_extension(path)
    uses = list(usage.uses)
    uses += [NameUse(form, "gradio_form", where, guarded) for form, where, guarded in forms]
    for file in js.extension_js_files(path):
        try:
            source = open(file, encoding="utf-8", errors="replace").read()
        except OSError:
            continue
        rel = os.path.relpath(file, path)
        usage.js_defined |= js.defined_globals(source)
        uses += [NameUse(name, "js_global", rel, False) for name in sorted(js.used_globals(source))]
    for code, where, guarded in usage.js_calls_from_python:
        uses += [NameUse(name, "js_global", where, guarded) for name in sorted(js.used_globals(code))]
    return usage, uses


def _package_status(usage: ExtensionUsage, first_need: dict[str, str]) -> dict[str, str]:
    status = {}
    for name, use in usage.imports.items():
        if use.guarded:
            continue
        try:
            available = importlib.util.find_spec(name) is not None
        except (ImportError, ValueError):
            available = False
        if available:
            status[name] = "available"
            continue
        candidates = {normalise_requirement(name), normalise_requirement(KNOWN_PACKAGES.get(name, name))}
        if name in first_need:
            candidates.add(normalise_requirement(first_need[name]))
        if candidates & usage.requirements or name in usage.install_strings:
            status[name] = "installed by the extension"
        elif name in first_need:
            status[name] = f"installed on first need ({first_need[name]})"
        else:
            status[name] = "not available"
    return status


def _predict(report: ExtensionReport) -> None:
    if report.ldm_patching:
        report.prediction = "incompatible"
        report.reason = "patches ldm/sgm model internals, which a diffusers model does not have: " + \
            "; ".join(f"{why} ({where})" for why, where in report.ldm_patching.items())
    elif report.incompatible_uses:
        report.prediction = "incompatible"
        report.reason = "uses A1111 internals this program refuses: " + "; ".join(report.incompatible_uses.values())
    elif report.missing:
        report.prediction = "missing names"
        report.reason = ", ".join(report.missing)
    elif report.needs_packages:
        report.prediction = "needs packages"
        report.reason = ", ".join(f"{n} ({report.packages[n]})" for n in report.needs_packages)
    else:
        report.prediction = "should work"
        report.reason = ""


def check_extensions(paths: list[str], sources: list[str] | None = None) -> list[ExtensionReport]:
    """Check several extension folders, looking all their names up in one child process."""
    collected = [(path, *_collect(path)) for path in paths]
    python_names = sorted({u.name for _, _, uses in collected for u in uses if u.kind in PYTHON_KINDS})
    lookup = resolve_names(python_names)
    page = js.page_globals(REPO_ROOT)
    gradio_ok = supported_gradio_forms()
    first_need = first_need_packages()
    builtin_flags = builtin_preload_flags()
    manifest = load_manifest()
    a1111_kinds = {entry["name"]: entry["kind"] for entry in manifest.get("names", [])}
    incompatible = manifest.get("incompatible", {})
    reports = []
    for index, (path, usage, uses) in enumerate(collected):
        report = ExtensionReport(name=os.path.basename(os.path.normpath(path)), path=path,
                                 source=(sources or paths)[index], commit=_git_commit(path),
                                 ldm_patching=dict(usage.ldm_patching))
        for use in uses:
            if use.kind == "js_global":
                why = "" if use.name in page or use.name in usage.js_defined else "not defined by this page"
            elif use.kind == "gradio_form":
                why = "" if use.name in gradio_ok else "not supported by this Gradio"
            elif use.kind == "cmd_opt" and use.name.split(".", 1)[1] in usage.preload_flags | builtin_flags:
                why = ""
            else:
                why = lookup.get(use.name, "")
            refused = refused_name(use.name, incompatible) or (why[len("incompatible: "):]
                                                              if why.startswith("incompatible: ") else None)
            if refused:
                why = ""  # it exists; using it is the problem
                if not use.guarded:
                    report.incompatible_uses.setdefault(use.name, f"{refused} ({use.where})")
            info = report.names.get(use.name)
            if info is None:
                report.names[use.name] = {"kind": use.kind, "a1111_kind": a1111_kinds.get(use.name, use.kind),
                                          "where": use.where, "guarded": use.guarded, "missing": why, "uses": 1}
            else:
                info["uses"] += 1
                if info["guarded"] and not use.guarded:
                    info.update(guarded=False, where=use.where)
        report.packages = _package_status(usage, first_need)
        _predict(report)
        reports.append(report)
    return reports


def check_extension(path: str) -> ExtensionReport:
    """Check one extension folder (see the module docstring)."""
    return check_extensions([path])[0]


# --- command line -------------------------------------------------------------------------------------------------

def is_git_url(text: str) -> bool:
    return "://" in text or text.startswith("git@") or (text.endswith(".git") and not os.path.isdir(text))


def clone(url: str, into: str) -> str:
    """Shallow-clone `url` under `into`; returns the folder. Raises RuntimeError with git's message."""
    name = url.rstrip("/").split("/")[-1].removesuffix(".git") or "extension"
    target = os.path.join(into, name)
    completed = subprocess.run(["git", "clone", "--depth", "1", "--quiet", url, target], capture_output=True,
                               text=True, env=dict(os.environ, GIT_TERMINAL_PROMPT="0"))
    if completed.returncode != 0:
        raise RuntimeError(f"git clone {url} failed: {completed.stderr.strip()}")
    return target


def default_extension_folders() -> list[str]:
    """With no argument: the extensions installed in the repository's `extensions/` folder."""
    folder = os.path.join(REPO_ROOT, "extensions")
    if not os.path.isdir(folder):
        return []
    return [os.path.join(folder, n) for n in sorted(os.listdir(folder))
            if os.path.isdir(os.path.join(folder, n)) and not n.startswith(".")]


def format_report(report: ExtensionReport) -> str:
    lines = [f"{report.name}: {report.prediction}"]
    if report.ldm_patching:
        lines += [f"  ldm-patching: {why} ({where})" for why, where in report.ldm_patching.items()]
    lines += [f"  refused here: {name}: {why}" for name, why in report.incompatible_uses.items()]
    for name in report.missing:
        info = report.names[name]
        lines.append(f"  missing {info['kind']}: {name} ({info['where']}; {info['missing']})")
    for name in report.missing_guarded:
        lines.append(f"  missing, guarded: {name} ({report.names[name]['where']})")
    for name in report.needs_packages:
        lines.append(f"  package {name}: {report.packages[name]}")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    """`--check-extensions [PATH_OR_GIT_URL ...]`: print each extension's prediction. Exit status 0 when every
    check ran (whatever it predicts), 2 when a path or URL could not be read."""
    parser = argparse.ArgumentParser(prog="webui.py --check-extensions",
                                     description="Predict whether A1111 extensions work here, without running them.")
    parser.add_argument("targets", nargs="*", help="extension folders or git URLs (default: installed extensions)")
    parser.add_argument("--json", action="store_true", help="print the reports as JSON")
    args = parser.parse_args(argv)
    targets = args.targets or default_extension_folders()
    if not targets:
        print("No extensions to check: give extension folders or git URLs.", file=sys.stderr)
        return 0
    status = 0
    with tempfile.TemporaryDirectory(prefix="check-extension-") as scratch:
        paths, sources = [], []
        for target in targets:
            try:
                path = clone(target, scratch) if is_git_url(target) else target
            except RuntimeError as e:
                print(f"{target}: {e}", file=sys.stderr)
                status = 2
                continue
            if not os.path.isdir(path):
                print(f"{target}: not a folder", file=sys.stderr)
                status = 2
                continue
            paths.append(path)
            sources.append(target)
        reports = check_extensions(paths, sources)
        if args.json:
            print(json.dumps([r.as_dict() for r in reports], indent=1))
        else:
            for report in reports:
                print(format_report(report))
        shutil.rmtree(scratch, ignore_errors=True)
    return status


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
