"""What happened to each extension in this run: which scripts loaded, which failed and why, whether it is
incompatible with a diffusers core, what its install step did and which packages were installed for it.

The script loader, the install step and the import guard write here; `/sdapi/v1/extensions` and the Extensions tab
read it, so the status users see is what actually happened (A1111 shows every extension as enabled and leaves the
reason in the console).
"""

from __future__ import annotations

import functools
import os
import threading
from dataclasses import dataclass, field

_lock = threading.Lock()


@dataclass
class ExtensionStatus:
    name: str
    loaded_scripts: list[str] = field(default_factory=list)
    failed_scripts: dict[str, str] = field(default_factory=dict)  # script file name -> first line of the error
    incompatible: str = ""  # why it cannot run on this core, "" when nothing says so
    install_error: str = ""
    installed_packages: list[str] = field(default_factory=list)

    @property
    def state(self) -> str:
        """"incompatible", "failed" (a script or the install step failed), "loaded", or "" (nothing ran yet)."""
        if self.incompatible:
            return "incompatible"
        if self.failed_scripts or (self.install_error and not self.loaded_scripts):
            return "failed"
        # scripts that loaded although install.py failed (e.g. an optional extra it wanted): loaded, and the
        # summary still says what the install step reported
        return "loaded" if self.loaded_scripts else ""

    def summary(self) -> str:
        """One line for the Extensions tab and the API's `status` field."""
        if self.incompatible:
            return f"incompatible: {self.incompatible}"
        parts = []
        if self.install_error:
            parts.append(f"install.py failed: {self.install_error}")
        for script, error in self.failed_scripts.items():
            parts.append(f"{script}: {error}")
        if not parts and self.loaded_scripts:
            parts.append("loaded")
        if self.installed_packages:
            parts.append("installed " + ", ".join(self.installed_packages))
        return "; ".join(parts)

    def as_dict(self) -> dict[str, object]:
        return {"state": self.state, "summary": self.summary(), "loaded_scripts": list(self.loaded_scripts),
                "failed_scripts": dict(self.failed_scripts), "incompatible": self.incompatible,
                "install_error": self.install_error, "installed_packages": list(self.installed_packages)}


_statuses: dict[str, ExtensionStatus] = {}


@functools.lru_cache(maxsize=4096)
def extension_name_of(path: str) -> str | None:
    """The extension folder name a file belongs to (…/extensions*/<name>/…), None for the program's own files."""
    parts = os.path.normpath(os.path.abspath(path)).split(os.sep)
    for i in range(len(parts) - 2, -1, -1):
        if parts[i] in ("extensions", "extensions-builtin"):
            return parts[i + 1]
    return None


def status(name: str) -> ExtensionStatus:
    with _lock:
        return _statuses.setdefault(name, ExtensionStatus(name))


def first_line(error: BaseException | str) -> str:
    text = error if isinstance(error, str) else (f"{type(error).__name__}: {error}" if str(error)
                                                  else type(error).__name__)
    lines = [line.strip() for line in str(text).strip().splitlines() if line.strip()]
    return lines[0][:300] if lines else ""


def record_script_loaded(name: str, script: str) -> None:
    entry = status(name)
    with _lock:
        if script not in entry.loaded_scripts:
            entry.loaded_scripts.append(script)
        entry.failed_scripts.pop(script, None)


def record_script_failure(name: str, script: str, error: BaseException | str) -> None:
    entry = status(name)
    with _lock:
        entry.failed_scripts[script] = first_line(error)
        if script in entry.loaded_scripts:
            entry.loaded_scripts.remove(script)


_incompatible_names: set[str] = set()


def mark_incompatible(name: str, reason: str) -> None:
    """The extension needs an A1111 internal this core does not have; from now on its scripts' hooks and its
    callbacks are not called (they would fail again at every generation, or every step)."""
    entry = status(name)
    with _lock:
        if not entry.incompatible:
            entry.incompatible = reason
        _incompatible_names.add(name)


def is_incompatible_file(path: str | None) -> bool:
    """Whether `path` belongs to an extension marked incompatible (cheap when none is)."""
    if not _incompatible_names or not path:
        return False
    return extension_name_of(os.path.abspath(path)) in _incompatible_names


def record_install(name: str, error: str = "", installed_packages: list[str] | tuple[str, ...] = ()) -> None:
    entry = status(name)
    with _lock:
        entry.install_error = first_line(error) if error else ""
        for package in installed_packages:
            if package not in entry.installed_packages:
                entry.installed_packages.append(package)


def page_files_wanted(name: str) -> bool:
    """Whether the page should load the extension's JavaScript/CSS: not when it is incompatible or none of its
    scripts loaded (its page code would look for controls and routes its Python never made, and throw)."""
    entry = status(name)
    if entry.incompatible:
        return False
    return not (entry.failed_scripts and not entry.loaded_scripts)


def snapshot() -> dict[str, dict[str, object]]:
    with _lock:
        return {name: entry.as_dict() for name, entry in _statuses.items()}


def forget_scripts() -> None:
    """Before the scripts (re)load: forget what the last load found, keep what the install step recorded."""
    with _lock:
        for entry in _statuses.values():
            entry.loaded_scripts.clear()
            entry.failed_scripts.clear()
            entry.incompatible = ""
        _incompatible_names.clear()


def reset() -> None:
    """Forget everything (a reload of the scripts starts over)."""
    with _lock:
        _statuses.clear()
        _incompatible_names.clear()
