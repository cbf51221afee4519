"""Extensions: git repositories in `extensions-builtin/` and `extensions/` (A1111's layout and install flow).

Discovery reads each folder's git state with GitPython (remote, branch, commit, date) and `metadata.ini`; the
disabled list lives in settings (`disabled_extensions`, `disable_all_extensions`). Install clones into a temporary
folder beside the target, runs `install.py` with the same Python, and only then moves it into place, so a failed
clone or install leaves nothing half-installed. Installing, updating and removing are refused when the server is
reachable from the network unless `--enable-insecure-extension-access` is given (A1111's rule, and the fix for the
auto-install-through-an-exposed-API attack, A1111 #16500).

Order (A1111 1.10's `metadata.ini`): built-ins first, then user extensions, alphabetically, then moved so that each
comes after what its `After` names and before what its `Before` names (`[Extension]`, `[scripts]` and
`[scripts/<file>]` sections; a name is an extension's canonical name — its folder name, lower-cased — or a script's
`ext/file.py`). `list_ordered_files` orders single files (scripts, JavaScript) exactly as A1111's `list_scripts`.
An enabled extension whose `[Extension] Requires` is missing or disabled is reported, and still loaded (A1111).

install.py runs with our Python, cwd = the extension folder, `launch` importable and pip constrained to the
program's own packages (`modules.extension_installs`). Its result — hash of install.py + requirements.txt, ok or
failed, the message, the packages it added — is kept in a stamp file, so it runs again only when those change (or
when forced); a kept failure is recorded again in the extension's status at every start.

A1111 names extensions read: `extensions` (the list found by the last `list_extensions`), `active()`,
`extensions_dir`, `extensions_builtin_dir`, `find_extension`, and `Extension.canonical_name`, `metadata`,
`have_info_from_repo`, `read_info_from_repo()`, `list_files(subdir, extension)`, `check_updates()`.
"""

from __future__ import annotations

import configparser
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from modules import extension_installs, extension_status


class ScriptFile(NamedTuple):
    """A1111's `scripts.ScriptFile` (a named tuple: extensions unpack it)."""

    basedir: str        # the repo root for scripts/, else the extension's folder
    filename: str
    path: str

log = logging.getLogger("webui.extensions")

ROOT = Path(__file__).resolve().parents[1]
INSECURE_MESSAGE = ("Extension access is disabled because the server is reachable from the network (--listen, "
                    "--share or --server-name). Start it with --enable-insecure-extension-access to allow "
                    "installing, updating and removing extensions.")


class ExtensionError(ValueError):
    """A refused or failed extension operation, with a message for the user."""


class ExtensionMetadata(dict):
    """`metadata.ini` as {section: {key: value}} (keys lower-cased), with A1111's `ExtensionMetadata` names:
    `config`, `canonical_name`, `requires`, `get_script_requirements`, `parse_list`."""

    filename = "metadata.ini"

    def __init__(self, path: str = "", canonical_name: str = "") -> None:
        super().__init__()
        self.config = configparser.ConfigParser()
        self.canonical_name = canonical_name.lower().strip()
        self.requires: list[str] = []
        self.known: set[str] = set()  # canonical names of the extensions found with this one ("a|b" resolution)
        if path and os.path.isfile(os.path.join(path, self.filename)):
            try:
                self.config.read(os.path.join(path, self.filename), encoding="utf8")
            except (configparser.Error, UnicodeDecodeError) as e:
                log.warning("Extension %s: bad metadata.ini: %s", canonical_name, e)
                self.config = configparser.ConfigParser()
            self.update({section: dict(self.config[section]) for section in self.config.sections()})

    @property
    def declared_name(self) -> str:
        """`[Extension] Name` lower-cased ("" when absent); A1111 keys extensions by folder name, we accept both."""
        return self.config.get("Extension", "Name", fallback="").lower().strip()

    @staticmethod
    def parse_list(text: str) -> list[str]:
        """"ext1 ext2, ext3 " -> ["ext1", "ext2", "ext3"] (commas and spaces both separate)."""
        return [x for x in re.split(r"[,\s]+", text.strip()) if x] if text else []

    def get_script_requirements(self, field: str, section: str, extra_section: str | None = None) -> list[str]:
        """Names in `field` (Requires, Before, After) of `[section]`, plus `[extra_section]`; of "a|b" alternatives
        the first that is installed, else the first."""
        text = self.config.get(section, field, fallback="")
        if extra_section:
            text += ", " + self.config.get(extra_section, field, fallback="")
        chosen = []
        for entry in self.parse_list(text.lower()):
            options = entry.split("|")
            chosen.append(next((o for o in options if o in self.known), options[0]))
        return chosen

    def all_requirements(self, field: str) -> list[str]:
        """`field` from every section (the extension as a whole, its scripts, its JavaScript)."""
        names: list[str] = []
        for section in self.config.sections():
            names += [n for n in self.get_script_requirements(field, section) if n not in names]
        return names


@dataclass
class Extension:
    name: str
    path: str
    enabled: bool = True
    is_builtin: bool = False
    remote: str | None = None
    branch: str | None = None
    commit_hash: str = ""
    commit_date: float = 0.0
    version: str = ""
    can_update: bool = False
    status: str = ""                       # "unknown", "latest", "behind", or an error text
    metadata: ExtensionMetadata = field(default_factory=ExtensionMetadata)
    canonical_name: str = ""
    have_info_from_repo: bool = False
    requirement_errors: list[str] = field(default_factory=list)  # unmet `[Extension] Requires`, A1111's messages

    def __post_init__(self) -> None:
        self.canonical_name = self.canonical_name or self.name.lower().strip()

    @property
    def scripts_dir(self) -> str:
        return os.path.join(self.path, "scripts")

    def read_info_from_repo(self) -> None:
        _read_git(self)
        self.have_info_from_repo = True

    def list_files(self, subdir: str, extension: str) -> list[Any]:
        """A1111: `scripts.ScriptFile`s of the files in `<ext>/<subdir>` ending in `extension`, sorted by name."""
        paths = self.file_paths(subdir, extension)
        return [ScriptFile(self.path, os.path.basename(path), path) for path in paths]

    def file_paths(self, subdir: str, suffix: str) -> list[str]:
        """Paths of the files in `<ext>/<subdir>` ending in `suffix`, sorted by name (no import of the scripts)."""
        folder = os.path.join(self.path, subdir)
        if not os.path.isdir(folder):
            return []
        return [os.path.join(folder, name) for name in sorted(os.listdir(folder))
                if os.path.splitext(name)[1].lower() == suffix.lower() and os.path.isfile(os.path.join(folder, name))]

    def check_updates(self) -> None:
        check_updates([self])

    def api_record(self) -> dict[str, object]:
        return {"name": self.name, "remote": self.remote, "branch": self.branch, "commit_hash": self.commit_hash,
                "commit_date": int(self.commit_date), "version": self.version, "enabled": self.enabled,
                "is_builtin": self.is_builtin, "can_update": self.can_update, "status": self.status}


extensions_builtin_dir = str(ROOT / "extensions-builtin")


def __getattr__(name: str) -> Any:
    """A1111's `extensions_dir`: DATA_DIR/extensions of this run (follows --data-dir)."""
    if name == "extensions_dir":
        from modules import paths_internal

        return paths_internal.current_paths()["extensions_dir"]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def extension_dirs(data_dir: str | None = None) -> tuple[str, str]:
    """(built-in, user) extension folders. User extensions live beside the data (the repo root by default)."""
    return extensions_builtin_dir, os.path.join(data_dir or str(ROOT), "extensions")


def _read_git(extension: Extension) -> None:
    import git

    try:
        repo = git.Repo(extension.path)
    except (git.InvalidGitRepositoryError, git.NoSuchPathError):
        return
    try:
        head = repo.head.commit
        extension.commit_hash = head.hexsha
        extension.commit_date = float(head.committed_date)
        extension.version = head.hexsha[:8]
        extension.remote = next(iter(repo.remote().urls), None) if repo.remotes else None
        extension.branch = None if repo.head.is_detached else repo.active_branch.name
    except (ValueError, git.GitCommandError) as e:  # an empty or broken repository
        extension.status = f"git error: {e}"
    finally:
        repo.close()


def _read_metadata(extension: Extension) -> None:
    extension.metadata = ExtensionMetadata(extension.path, extension.canonical_name)


def _extension_part(name: str) -> str:
    """The extension a requirement names: "ext", "ext/script.py" or "builtin/ext/script.py" -> "ext"."""
    parts = name.split("/")
    return parts[1] if parts[0] == "builtin" and len(parts) > 2 else parts[0]


def topological_sort(dependencies: dict[str, list[str]]) -> list[str]:
    """Keys ordered so that each comes after the keys it lists (unknown names ignored, cycles broken), otherwise
    in the given order (A1111's `modules.util.topological_sort`)."""
    visited: set[str] = set()
    result: list[str] = []

    def visit(name: str) -> None:
        visited.add(name)
        for dependency in dependencies.get(name, []):
            if dependency in dependencies and dependency not in visited:
                visit(dependency)
        result.append(name)

    for name in dependencies:
        if name not in visited:
            visit(name)
    return result


def _ordered(found: list[Extension]) -> list[Extension]:
    """`found` (built-ins first, alphabetical) moved as the extensions' Before/After ask."""
    by_name: dict[str, Extension] = {}
    for extension in found:
        by_name.setdefault(extension.canonical_name, extension)
    for extension in found:  # `[Extension] Name` as an alias, where it names no other folder
        by_name.setdefault(extension.metadata.declared_name or extension.canonical_name, extension)
    after: dict[str, list[str]] = {e.canonical_name: [] for e in found}
    for extension in found:
        for name in extension.metadata.all_requirements("after"):
            other = by_name.get(_extension_part(name))
            if other is not None and other is not extension:
                after[extension.canonical_name].append(other.canonical_name)
        for name in extension.metadata.all_requirements("before"):
            other = by_name.get(_extension_part(name))
            if other is not None and other is not extension:
                after[other.canonical_name].append(extension.canonical_name)
    order = {name: i for i, name in enumerate(topological_sort(after))}
    return sorted(found, key=lambda e: order[e.canonical_name])


def _check_requirements(found: list[Extension]) -> None:
    """A1111's check of `[Extension] Requires`: report a missing or disabled requirement (the extension still loads)."""
    by_name = {e.canonical_name: e for e in found}
    by_name.update({e.metadata.declared_name: e for e in found if e.metadata.declared_name not in by_name})
    for extension in found:
        extension.metadata.requires = extension.metadata.get_script_requirements("Requires", "Extension")
        extension.requirement_errors = []
        if not extension.enabled:
            continue
        for requirement in extension.metadata.requires:
            required = by_name.get(_extension_part(requirement))
            if required is None:
                message = f'Extension "{extension.name}" requires "{requirement}" which is not installed.'
            elif not required.enabled:
                message = f'Extension "{extension.name}" requires "{required.name}" which is disabled.'
            else:
                continue
            extension.requirement_errors.append(message)
            log.warning("%s", message)


def discover(data_dir: str | None, disabled: set[str], disable_all: str) -> list[Extension]:
    """Every extension folder with its enabled flag, git details and metadata, in load order."""
    builtin_dir, user_dir = extension_dirs(data_dir)
    found: list[Extension] = []
    for folder, builtin in ((builtin_dir, True), (user_dir, False)):
        if not os.path.isdir(folder):
            continue
        for name in sorted(os.listdir(folder)):
            path = os.path.join(folder, name)
            if not os.path.isdir(path) or name.startswith("."):
                continue
            extension = Extension(name=name, path=path, is_builtin=builtin)
            if any(e.canonical_name == extension.canonical_name for e in found):
                log.warning('Duplicate extension name "%s" (%s): discarded', name, path)
                continue
            extension.enabled = name not in disabled and disable_all != "all" and not (
                disable_all == "extra" and not builtin)
            extension.read_info_from_repo()
            _read_metadata(extension)
            found.append(extension)
    known = {e.canonical_name for e in found} | {e.metadata.declared_name for e in found}
    for extension in found:
        extension.metadata.known = known
    _check_requirements(found)
    return _ordered(found)


# A1111's module-level list, refreshed by every `list_extensions` call.
extensions: list[Extension] = []


def list_extensions(opts=None, cmd_opts=None) -> list[Extension]:
    """Every extension folder in load order (built-ins first, then as metadata.ini orders), with enabled flags from
    settings and flags; also kept in `extensions`. Without arguments (A1111's form) it reads `shared.opts` and
    `shared.cmd_opts`."""
    if opts is None or cmd_opts is None:
        from modules import shared

        opts = shared.opts if opts is None else opts
        cmd_opts = shared.cmd_opts if cmd_opts is None else cmd_opts
    disabled = set(getattr(opts, "disabled_extensions", None) or [])
    disable_all = getattr(opts, "disable_all_extensions", None) or "none"
    if getattr(cmd_opts, "disable_all_extensions", False):
        disable_all = "all"
    elif getattr(cmd_opts, "disable_extra_extensions", False) and disable_all == "none":
        disable_all = "extra"
    found = discover(getattr(cmd_opts, "data_dir", None), disabled, disable_all)
    extensions[:] = found
    return found


def active() -> list[Extension]:
    """The enabled extensions of the last `list_extensions` (A1111)."""
    return [e for e in extensions if e.enabled]


def find_extension(name: str) -> Extension | None:
    """The extension with that folder or canonical name in the last `list_extensions`."""
    return next((e for e in extensions if name in (e.name, e.canonical_name)), None)


def list_ordered_files(subdir: str, suffix: str, found: list[Extension] | None = None) -> list[tuple[Extension, str]]:
    """(extension, path) of each file ending in `suffix` in `<ext>/<subdir>` of the enabled extensions, in A1111's
    order: by extension, alphabetical, then topologically by the `Before`/`After` of `[<subdir>/<file>]` and
    `[<subdir>]` (a name is `ext/file`, `builtin/ext/file` or a whole extension). For scripts and JavaScript."""
    enabled = [e for e in (extensions if found is None else found) if e.enabled]
    files: dict[str, tuple[Extension, str]] = {}
    after: dict[str, list[str]] = {}
    before: dict[str, list[str]] = {}
    by_extension: dict[str, list[str]] = {e.canonical_name: [] for e in enabled}
    for extension in enabled:
        for path in extension.file_paths(subdir, suffix):
            filename = os.path.basename(path)
            key = ("builtin/" if extension.is_builtin else "") + f"{extension.canonical_name}/{filename}"
            section = f"{subdir}/{filename}"
            files[key] = (extension, path)
            after[key] = extension.metadata.get_script_requirements("After", section, subdir)
            before[key] = extension.metadata.get_script_requirements("Before", section, subdir)
            by_extension[extension.canonical_name].append(key)
    for key in files:
        for name in before[key]:
            for other in ([name] if name in files else by_extension.get(name, [])):
                after[other].append(key)
        for name in list(after[key]):
            if name not in files and name in by_extension:
                after[key].remove(name)
                after[key] += by_extension[name]
    return [files[key] for key in topological_sort({key: after[key] for key in files})]


def enabled_paths(opts, cmd_opts) -> list[str]:
    """Folders of the enabled extensions, built-ins first (what the script loader scans)."""
    return [e.path for e in list_extensions(opts, cmd_opts) if e.enabled]


def page_assets(opts, cmd_opts) -> tuple[str, str]:
    """(CSS, <head> HTML) from the enabled extensions' style.css and javascript/*.js, added to the page."""
    css, head = [], []
    for path in enabled_paths(opts, cmd_opts):
        style = os.path.join(path, "style.css")
        if os.path.isfile(style):
            css.append(Path(style).read_text(encoding="utf8", errors="replace"))
        js_dir = os.path.join(path, "javascript")
        if os.path.isdir(js_dir):
            for name in sorted(os.listdir(js_dir)):
                if name.endswith(".js"):
                    code = Path(js_dir, name).read_text(encoding="utf8", errors="replace")
                    head.append(f"<script>/* {os.path.basename(path)}/{name} */\n{code}\n</script>")
    return "\n".join(css), "\n".join(head)


def enabled_script_dirs(opts, cmd_opts) -> list[str]:
    """The `scripts/` folders of enabled extensions, for the script runner."""
    return [e.scripts_dir for e in list_extensions(opts, cmd_opts) if e.enabled and os.path.isdir(e.scripts_dir)]


def cmd_args_allow(cmd_opts) -> bool:
    from modules import cmd_args

    return cmd_args.extension_access_allowed(cmd_opts)


def check_access(cmd_opts) -> None:
    if not cmd_args_allow(cmd_opts):
        raise ExtensionError(INSECURE_MESSAGE)


def default_folder_name(url: str) -> str:
    """The last URL part minus `.git` (A1111)."""
    name = url.rstrip("/").rsplit("/", 1)[-1]
    return name[:-4] if name.endswith(".git") else name


def _record_stamp(name: str, stamp: dict[str, Any]) -> None:
    if stamp["ok"]:
        extension_status.record_install(name, installed_packages=stamp["packages"])
    else:
        extension_status.record_install(name, error=stamp["message"] or "install.py failed")


def run_install_script(path: str, force: bool = False, timeout: float = 600, data_dir: str | None = None,
                       python: str | None = None) -> str | None:
    """Run the extension's install.py with our Python (or `python`) when it is new or changed since the last run, or
    when `force`d; returns its output, None when it did not run (a kept result is recorded in the status again).
    A failure is recorded and kept, and raises ExtensionError with the output."""
    script = os.path.join(path, "install.py")
    if not os.path.isfile(script):
        return None
    name = os.path.basename(os.path.normpath(path))
    digest = extension_installs.install_digest(path)
    stamp = extension_installs.read_install_stamp(path)
    if not force and stamp is not None and stamp["hash"] == digest:
        _record_stamp(name, stamp)
        return None
    python = python or sys.executable
    constraint = extension_installs.constraints_file(data_dir)
    env = extension_installs.pip_environment(constraint)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])
    before = extension_installs.distributions_of(python)
    try:
        result = subprocess.run([python, script], cwd=path, env=env, capture_output=True, text=True,
                                encoding="utf8", errors="replace", timeout=timeout)
    except subprocess.TimeoutExpired as e:
        message = f"install.py of {name} did not finish in {timeout:.0f} s"
        extension_installs.write_install_stamp(path, digest, False, message, [])
        extension_status.record_install(name, error=message)
        raise ExtensionError(message) from e
    output = (result.stdout + result.stderr).strip()
    log.info("install.py of %s:\n%s", name, output)
    packages = extension_installs.changed_distributions(before, extension_installs.distributions_of(python))
    if result.returncode != 0:
        summary = extension_installs.failure_summary(output, result.returncode)
        extension_installs.write_install_stamp(path, digest, False, summary, packages)
        extension_status.record_install(name, error=summary, installed_packages=packages)
        raise ExtensionError(f"install.py of {name} failed (exit {result.returncode}):\n{output[-2000:]}")
    extension_installs.write_install_stamp(path, digest, True, "", packages)
    extension_status.record_install(name, installed_packages=packages)
    return output


def install(url: str, cmd_opts, branch: str | None = None, folder_name: str | None = None) -> Extension:
    """Clone `url` into extensions/<folder>, run its install.py; all or nothing."""
    import git

    check_access(cmd_opts)
    url = (url or "").strip()
    if not url:
        raise ExtensionError("Enter the URL of the extension's git repository.")
    name = (folder_name or "").strip() or default_folder_name(url)
    if not name or name in (".", "..") or "/" in name or "\\" in name or "\0" in name:
        raise ExtensionError(f"Bad folder name {name!r}")
    _, user_dir = extension_dirs(getattr(cmd_opts, "data_dir", None))
    os.makedirs(user_dir, exist_ok=True)
    target = os.path.join(user_dir, name)
    if os.path.exists(target):
        raise ExtensionError(f"Extension folder already exists: {target}")
    try:
        staging = tempfile.mkdtemp(prefix=f".{name}-", dir=user_dir)
    except (OSError, ValueError) as e:
        raise ExtensionError(f"Bad folder name {name!r}: {e}") from e
    clone_path = os.path.join(staging, name)
    try:
        try:
            repo = git.Repo.clone_from(url, clone_path, branch=branch or None, depth=None)
            repo.close()
        except git.GitCommandError as e:
            raise ExtensionError(f"Could not clone {url}: {e.stderr.strip() or e}") from e
        except (OSError, ValueError) as e:  # e.g. a NUL in the URL or branch
            raise ExtensionError(f"Could not clone {url!r}: {e}") from e
        run_install_script(clone_path, force=True, data_dir=getattr(cmd_opts, "data_dir", None))
        if os.path.exists(target):
            raise ExtensionError(f"Extension folder already exists: {target}")
        try:
            os.rename(clone_path, target)
        except OSError as e:
            raise ExtensionError(f"Could not move the extension into {target}: {e}") from e
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    extension = Extension(name=name, path=target)
    extension.read_info_from_repo()
    _read_metadata(extension)
    return extension


def _find(name: str, cmd_opts) -> str:
    _, user_dir = extension_dirs(getattr(cmd_opts, "data_dir", None))
    path = os.path.join(user_dir, name)
    if "/" in name or "\\" in name or name in ("", ".", "..") or not os.path.isdir(path):
        raise ExtensionError(f"No installed extension named {name!r}")
    return path


def check_updates(extensions: list[Extension]) -> None:
    """Fetch each git extension's remote and mark whether its branch is behind (A1111's Check for updates)."""
    import git

    for extension in extensions:
        if not extension.remote:
            extension.status = "unknown"
            continue
        try:
            with git.Repo(extension.path) as repo:
                repo.remote().fetch()
                tracking = repo.active_branch.tracking_branch()
                if tracking is None:
                    extension.status = "unknown"
                    continue
                behind = sum(1 for _ in repo.iter_commits(f"HEAD..{tracking.name}"))
                extension.can_update = behind > 0
                extension.status = "behind" if behind else "latest"
        except (git.GitCommandError, ValueError, TypeError) as e:
            extension.status = f"error: {e}"


def update(name: str, cmd_opts) -> Extension:
    """Fast-forward the extension to its remote branch, then run install.py if it changed."""
    import git

    check_access(cmd_opts)
    path = _find(name, cmd_opts)
    try:
        with git.Repo(path) as repo:
            repo.remote().fetch()
            tracking = repo.active_branch.tracking_branch()
            if tracking is None:
                raise ExtensionError(f"{name}: the branch has no remote to update from")
            repo.git.merge("--ff-only", tracking.name)
    except ExtensionError:
        raise
    except git.GitCommandError as e:
        raise ExtensionError(f"Could not update {name}: {e.stderr.strip() or e}") from e
    except (git.InvalidGitRepositoryError, git.NoSuchPathError) as e:
        raise ExtensionError(f"Could not update {name}: it is not a git repository") from e
    except TypeError as e:  # GitPython's active_branch on a detached HEAD
        raise ExtensionError(f"Could not update {name}: it is not on a branch (detached HEAD: {e})") from e
    except (ValueError, OSError) as e:  # ValueError: no remote named origin
        raise ExtensionError(f"Could not update {name}: {e}") from e
    run_install_script(path, data_dir=getattr(cmd_opts, "data_dir", None))
    extension = Extension(name=name, path=path)
    extension.read_info_from_repo()
    return extension


def uninstall(name: str, cmd_opts) -> None:
    check_access(cmd_opts)
    path = _find(name, cmd_opts)
    # move aside first: a half-deleted folder must never be loaded as an extension
    trash = f"{os.path.dirname(path)}/.removed-{name}-{int(time.time())}"
    try:
        os.rename(path, trash)
    except OSError as e:
        raise ExtensionError(f"Could not remove {name}: {e}") from e
    shutil.rmtree(trash, ignore_errors=True)


def set_enabled(opts, name: str, enabled: bool) -> None:
    disabled = [n for n in (opts.disabled_extensions or []) if n != name]
    if not enabled:
        disabled.append(name)
    opts.set("disabled_extensions", sorted(disabled))


def run_install_scripts_at_start(opts, cmd_opts, force: bool = False) -> None:
    """At start: install.py of each enabled extension runs only if it is new or changed (stamp), or with `force`;
    a kept result (a failure too) is recorded in the extension's status again."""
    for extension in list_extensions(opts, cmd_opts):
        if extension.enabled:
            try:
                run_install_script(extension.path, force=force, data_dir=getattr(cmd_opts, "data_dir", None))
            except ExtensionError as e:
                log.error("%s", e)


def api_list() -> list[dict[str, object]]:
    from modules import shared

    return [e.api_record() for e in list_extensions(shared.opts, shared.cmd_opts)]
