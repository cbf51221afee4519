"""Extensions: git repositories in `extensions-builtin/` and `extensions/` (A1111's layout and install flow).

Discovery reads each folder's git state with GitPython (remote, branch, commit, date) and `metadata.ini`; the
disabled list lives in settings (`disabled_extensions`, `disable_all_extensions`). Install clones into a temporary
folder beside the target, runs `install.py` with the same Python, and only then moves it into place, so a failed
clone or install leaves nothing half-installed. Installing, updating and removing are refused when the server is
reachable from the network unless `--enable-insecure-extension-access` is given (A1111's rule, and the fix for the
auto-install-through-an-exposed-API attack, A1111 #16500).
"""

from __future__ import annotations

import configparser
import hashlib
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger("webui.extensions")

ROOT = Path(__file__).resolve().parents[1]
INSECURE_MESSAGE = ("Extension access is disabled because the server is reachable from the network (--listen, "
                    "--share or --server-name). Start it with --enable-insecure-extension-access to allow "
                    "installing, updating and removing extensions.")


class ExtensionError(ValueError):
    """A refused or failed extension operation, with a message for the user."""


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
    metadata: dict[str, dict[str, str]] = field(default_factory=dict)

    @property
    def scripts_dir(self) -> str:
        return os.path.join(self.path, "scripts")

    def api_record(self) -> dict[str, object]:
        return {"name": self.name, "remote": self.remote, "branch": self.branch, "commit_hash": self.commit_hash,
                "commit_date": int(self.commit_date), "version": self.version, "enabled": self.enabled,
                "is_builtin": self.is_builtin, "can_update": self.can_update, "status": self.status}


def extension_dirs(data_dir: str | None = None) -> tuple[str, str]:
    """(built-in, user) extension folders. User extensions live beside the data (the repo root by default)."""
    return str(ROOT / "extensions-builtin"), os.path.join(data_dir or str(ROOT), "extensions")


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
    path = os.path.join(extension.path, "metadata.ini")
    if os.path.isfile(path):
        parser = configparser.ConfigParser()
        try:
            parser.read(path, encoding="utf8")
            extension.metadata = {section: dict(parser[section]) for section in parser.sections()}
        except configparser.Error as e:
            log.warning("Extension %s: bad metadata.ini: %s", extension.name, e)


def list_extensions(opts, cmd_opts) -> list[Extension]:
    """Every extension folder, built-ins first, with enabled flags from settings and flags."""
    builtin_dir, user_dir = extension_dirs(getattr(cmd_opts, "data_dir", None))
    disabled = set(opts.disabled_extensions or [])
    disable_all = opts.disable_all_extensions
    if getattr(cmd_opts, "disable_all_extensions", False):
        disable_all = "all"
    elif getattr(cmd_opts, "disable_extra_extensions", False) and disable_all == "none":
        disable_all = "extra"
    found: list[Extension] = []
    for folder, builtin in ((builtin_dir, True), (user_dir, False)):
        if not os.path.isdir(folder):
            continue
        for name in sorted(os.listdir(folder)):
            path = os.path.join(folder, name)
            if not os.path.isdir(path) or name.startswith("."):
                continue
            extension = Extension(name=name, path=path, is_builtin=builtin)
            extension.enabled = name not in disabled and disable_all != "all" and not (
                disable_all == "extra" and not builtin)
            _read_git(extension)
            _read_metadata(extension)
            found.append(extension)
    return found


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


def _install_script_stamp(path: str) -> str:
    return os.path.join(path, ".webui-install-stamp")


def run_install_script(path: str, force: bool = False, timeout: float = 600) -> str | None:
    """Run the extension's install.py with our Python when it is new or changed since the last run (a stamp file
    keeps its hash); returns its output, None when it did not run. A failure raises ExtensionError with the output."""
    script = os.path.join(path, "install.py")
    if not os.path.isfile(script):
        return None
    with open(script, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()
    stamp = _install_script_stamp(path)
    if not force and os.path.isfile(stamp) and Path(stamp).read_text().strip() == digest:
        return None
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    try:
        result = subprocess.run([sys.executable, script], cwd=path, env=env, capture_output=True, text=True,
                                timeout=timeout)
    except subprocess.TimeoutExpired as e:
        raise ExtensionError(f"install.py of {os.path.basename(path)} did not finish in {timeout:.0f} s") from e
    output = (result.stdout + result.stderr).strip()
    log.info("install.py of %s:\n%s", os.path.basename(path), output)
    if result.returncode != 0:
        raise ExtensionError(f"install.py of {os.path.basename(path)} failed (exit {result.returncode}):\n"
                             f"{output[-2000:]}")
    Path(stamp).write_text(digest + "\n")
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
        run_install_script(clone_path, force=True)
        if os.path.exists(target):
            raise ExtensionError(f"Extension folder already exists: {target}")
        try:
            os.rename(clone_path, target)
        except OSError as e:
            raise ExtensionError(f"Could not move the extension into {target}: {e}") from e
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    extension = Extension(name=name, path=target)
    _read_git(extension)
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
    run_install_script(path)
    extension = Extension(name=name, path=path)
    _read_git(extension)
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


def run_install_scripts_at_start(opts, cmd_opts) -> None:
    """At start: install.py of each enabled extension runs only if it is new or changed (stamp), never always."""
    for extension in list_extensions(opts, cmd_opts):
        if extension.enabled:
            try:
                run_install_script(extension.path)
            except ExtensionError as e:
                log.error("%s", e)


def api_list() -> list[dict[str, object]]:
    from modules import shared

    return [e.api_record() for e in list_extensions(shared.opts, shared.cmd_opts)]
