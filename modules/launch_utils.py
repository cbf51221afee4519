"""A1111's `modules.launch_utils` (re-exported by the top-level `launch`): the helpers extensions' `install.py` and
scripts call — `run_pip`, `is_installed`, `run`, `git_clone`, `python`, `index_url`, `args` …, with A1111's names and
signatures.

Differences that matter:
- `run_pip` runs pip under a constraints file pinning the program's own packages (see `modules.extension_installs`):
  an extension can add packages, never replace or remove those; a conflicting request raises RuntimeError naming the
  pinned package, and nothing is changed.
- `prepare_environment` does nothing: webui.sh / tools/install.sh prepare the environment before Python starts.
- `version_check` does not go to the network.

Cheap to import (no torch, no gradio): it is imported inside every install.py subprocess.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import json
import logging
import os
import re
import shlex
import shutil
import subprocess
import sys
from functools import lru_cache
from typing import Any

from modules import extension_installs

log = logging.getLogger("webui.launch")

script_path = str(extension_installs.ROOT)
python = sys.executable
git = os.environ.get("GIT", "git")
index_url = os.environ.get("INDEX_URL", "")
dir_repos = "repositories"
default_command_live = os.environ.get("WEBUI_LAUNCH_LIVE_OUTPUT") == "1"

if "GRADIO_ANALYTICS_ENABLED" not in os.environ:
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"


def _parsed_args() -> Any:
    """The program's flags: `shared.cmd_opts` inside the app; else argv + COMMANDLINE_ARGS parsed leniently (in an
    install.py subprocess argv is the script's own, so only COMMANDLINE_ARGS usually says anything)."""
    shared = sys.modules.get("modules.shared")
    if getattr(shared, "cmd_opts", None) is not None:
        return shared.cmd_opts
    from modules import cmd_args

    try:
        env = shlex.split(os.environ.get("COMMANDLINE_ARGS", ""))
    except ValueError:
        env = []
    parser = cmd_args.build_parser()
    try:
        return parser.parse_known_args([*sys.argv[1:], *env])[0]
    except SystemExit:  # a malformed value: fall back to the defaults
        return parser.parse_known_args([])[0]


def __getattr__(name: str) -> Any:
    """`args` and `skip_install` follow the flags of the process that reads them."""
    if name == "args":
        return _parsed_args()
    if name == "skip_install":
        return bool(getattr(_parsed_args(), "skip_install", False))
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _git_output(*arguments: str) -> str:
    try:
        return subprocess.check_output([git, "-C", script_path, *arguments], encoding="utf8",
                                       stderr=subprocess.DEVNULL).strip()
    except (OSError, subprocess.CalledProcessError):
        return "<none>"


@lru_cache
def commit_hash() -> str:
    return _git_output("rev-parse", "HEAD")


@lru_cache
def git_tag() -> str:
    return _git_output("describe", "--tags")


def run(command: str, desc: str | None = None, errdesc: str | None = None, custom_env: dict[str, str] | None = None,
        live: bool = default_command_live) -> str:
    """Run a shell command; returns its stdout (empty when `live`), raises RuntimeError with the output on failure."""
    if desc is not None:
        print(desc)
    capture = {} if live else {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE}
    result = subprocess.run(command, shell=True, env=os.environ if custom_env is None else custom_env,
                            encoding="utf8", errors="ignore", **capture)
    if result.returncode != 0:
        parts = [f"{errdesc or 'Error running command'}.", f"Command: {command}", f"Error code: {result.returncode}"]
        if result.stdout:
            parts.append(f"stdout: {result.stdout}")
        if result.stderr:
            parts.append(f"stderr: {result.stderr}")
        raise RuntimeError("\n".join(parts))
    return result.stdout or ""


def is_installed(package: str) -> bool:
    """A distribution of that name is installed, or a module of that name can be imported."""
    try:
        importlib.metadata.distribution(package)
        return True
    except importlib.metadata.PackageNotFoundError:
        pass
    importlib.invalidate_caches()  # a pip run in this process may just have added it
    try:
        return importlib.util.find_spec(package) is not None
    except (ImportError, ValueError):
        return False


def repo_dir(name: str) -> str:
    return os.path.join(script_path, dir_repos, name)


def run_pip(command: str, desc: str | None = None, live: bool = default_command_live) -> str | None:
    """`python -m pip COMMAND` into the program's environment, under the constraints pinning its own packages."""
    if getattr(_parsed_args(), "skip_install", False):
        return None
    refused = extension_installs.refused_uninstall(command)
    if refused:
        raise RuntimeError(f"Couldn't run pip {command}: {', '.join(refused)} belong to this program and cannot be "
                           "uninstalled by an extension.")
    constraint = extension_installs.constraints_file()
    subcommand, _ = extension_installs.pip_subcommand(command)
    constrained = f' -c "{constraint}"' if subcommand in ("install", "download", "wheel") else ""
    line = f'"{python}" -m pip {command} --prefer-binary{constrained}{extension_installs.source_options()}'
    try:
        output = run(line, desc=f"Installing {desc}", errdesc=f"Couldn't install {desc}",
                     custom_env=extension_installs.pip_environment(constraint), live=False)
    except RuntimeError as error:
        reason = extension_installs.conflict_message(str(desc or command), str(error))
        if reason:
            raise RuntimeError(f"{reason}\n{error}") from None
        raise
    if live and output:
        print(output)
    return output


def run_python(code: str, desc: str | None = None, errdesc: str | None = None) -> str:
    return run(f'"{python}" -c {shlex.quote(code)}', desc, errdesc)


def check_run_python(code: str) -> bool:
    return subprocess.run([python, "-c", code], capture_output=True).returncode == 0


def run_git(dir: str, name: str, command: str, desc: str | None = None, errdesc: str | None = None,
            custom_env: dict[str, str] | None = None, live: bool = default_command_live, autofix: bool = True) -> str:
    """`git -C DIR COMMAND` (A1111's `autofix` re-fetch is not attempted: it rewrites the user's repository)."""
    return run(f'"{git}" -C "{dir}" {command}', desc=desc, errdesc=errdesc, custom_env=custom_env, live=live)


def git_clone(url: str, dir: str, name: str, commithash: str | None = None) -> None:
    """Clone `url` into `dir` (or, when it exists, check out `commithash` there)."""
    if os.path.exists(dir):
        if commithash is None:
            return
        current = run_git(dir, name, "rev-parse HEAD", None, f"Couldn't determine {name}'s hash", live=False).strip()
        if current == commithash:
            return
        run_git(dir, name, "fetch", f"Fetching updates for {name}...", f"Couldn't fetch {name}")
        run_git(dir, name, f"checkout {commithash}", f"Checking out commit for {name} with hash: {commithash}...",
                f"Couldn't checkout commit {commithash} for {name}")
        return
    try:
        run(f'"{git}" clone "{url}" "{dir}"', f"Cloning {name} into {dir}...", f"Couldn't clone {name}")
    except RuntimeError:
        shutil.rmtree(dir, ignore_errors=True)
        raise
    if commithash is not None:
        run(f'"{git}" -C "{dir}" checkout {commithash}', None, f"Couldn't checkout {name}'s hash: {commithash}")


def git_pull_recursive(dir: str) -> None:
    for subdir, _, _ in os.walk(dir):
        if os.path.exists(os.path.join(subdir, ".git")):
            try:
                output = subprocess.check_output([git, "-C", subdir, "pull", "--autostash"], encoding="utf8")
                print(f"Pulled changes for repository in '{subdir}':\n{output.strip()}\n")
            except (OSError, subprocess.CalledProcessError) as e:
                print(f"Couldn't perform 'git pull' on repository in '{subdir}':\n{e}\n")


def version_check(commit: str) -> None:
    print("Version check is not available in this WebUI (it does not contact GitHub); commit:", commit)


def run_extension_installer(extension_dir: str) -> None:
    """Run the extension's install.py (when new or changed); a failure is printed, not raised (A1111)."""
    from modules import extensions

    try:
        output = extensions.run_install_script(extension_dir)
        if output:
            print(output)
    except extensions.ExtensionError as e:
        print(e, file=sys.stderr)


def _settings(settings_file: str) -> dict[str, Any]:
    try:
        with open(settings_file, encoding="utf8") as file:
            settings = json.load(file)
        return settings if isinstance(settings, dict) else {}
    except (OSError, ValueError):
        return {}


def list_extensions(settings_file: str) -> list[str]:
    """Folder names of the enabled user extensions (not built-ins), in load order, as the settings file says."""
    from modules import extensions, paths_internal

    settings = _settings(settings_file)
    flags = _parsed_args()
    if (settings.get("disable_all_extensions", "none") != "none" or getattr(flags, "disable_all_extensions", False)
            or getattr(flags, "disable_extra_extensions", False)):
        return []
    disabled = set(settings.get("disabled_extensions") or [])
    found = extensions.discover(paths_internal.current_paths()["data_path"], disabled, "none")
    return [e.name for e in found if not e.is_builtin and e.enabled]


def run_extensions_installers(settings_file: str) -> None:
    from modules import paths_internal

    for name in list_extensions(settings_file):
        run_extension_installer(os.path.join(paths_internal.current_paths()["extensions_dir"], name))


_requirement_line = re.compile(r"\s*([-_a-zA-Z0-9]+)\s*(?:==\s*([-+_.a-zA-Z0-9]+))?\s*")


def requirements_met(requirements_file: str) -> bool:
    """Every `name==version` line of the file is installed at that version (lines without a version: skipped)."""
    from packaging.version import InvalidVersion, Version

    with open(requirements_file, encoding="utf8") as file:
        for line in file:
            if not line.strip():
                continue
            match = _requirement_line.match(line)
            if match is None:
                return False
            package, required = match.group(1), (match.group(2) or "").strip()
            if not required:
                continue
            try:
                if Version(importlib.metadata.version(package)) != Version(required):
                    return False
            except (importlib.metadata.PackageNotFoundError, InvalidVersion):
                return False
    return True


def prepare_environment() -> None:
    """Nothing to do: webui.sh (tools/install.sh) installs torch and requirements.txt before Python starts, and the
    extensions' install.py run at start-up from `modules.extensions.run_install_scripts_at_start`."""


def configure_for_tests() -> None:
    for flag in ("--api", "--skip-torch-cuda-test"):
        if flag not in sys.argv:
            sys.argv.append(flag)
    os.environ["COMMANDLINE_ARGS"] = ""


def start() -> None:
    """Start the WebUI with this process's arguments (A1111's `launch.start`)."""
    import webui

    webui.main(sys.argv[1:])
