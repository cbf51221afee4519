"""One clear error for A1111 internals that cannot mean anything on a diffusers core.

A1111 ships its own copies of the ldm/sgm model code and a hijack layer that patches it (`modules.sd_hijack_unet`,
`ldm.modules.attention.CrossAttention.forward`, …). This program runs diffusers models, which have none of those
objects; an extension that imports them would patch nothing. Rather than a bare `No module named 'ldm'` (or worse,
a stub whose patches are silently ignored), importing one of these names raises `IncompatibleImportError` naming
the extension and why, and the extension is marked incompatible in its status.

The guard is an import finder placed last on `sys.meta_path`, so it only answers for names no installed package
provides. The error is an `ImportError`, so an extension that guards such an import with `try/except ImportError`
(several do, to support several WebUIs) goes on with its fallback.
"""

from __future__ import annotations

import importlib.abc
import linecache
import os
import re
import sys
from collections.abc import Sequence
from types import ModuleType

from modules import extension_status
from modules.incompatible import IncompatibleExtensionError

# Module names (and their submodules) that exist only as A1111's patched copies of the original model code.
LDM_ONLY_MODULES = (
    "ldm", "sgm", "repositories",
    "modules.sd_hijack_unet", "modules.sd_hijack_optimizations", "modules.sd_hijack_utils",
    "modules.sd_hijack_clip", "modules.sd_hijack_clip_old", "modules.sd_hijack_open_clip",
    "modules.sd_hijack_checkpoint", "modules.sd_hijack_ip2p", "modules.sd_hijack_xlmr", "modules.xlmr",
    "modules.xlmr_m18", "modules.sd_models_xl", "modules.sub_quadratic_attention",
    "modules.models.diffusion", "modules.models.sd3", "modules.sd_unet",
)


class IncompatibleImportError(IncompatibleExtensionError, ImportError):
    """The import of an ldm-only module; an ImportError, so `try/except ImportError` fallbacks still work."""


def _blocked(fullname: str) -> bool:
    return any(fullname == name or fullname.startswith(name + ".") for name in LDM_ONLY_MODULES)


def calling_extension(skip_paths: Sequence[str] = ()) -> str | None:
    """The extension whose code is running now: the innermost frame in a file under an extensions folder."""
    frame = sys._getframe(1)
    while frame is not None:
        filename = frame.f_code.co_filename
        if filename not in skip_paths:
            name = extension_status.extension_name_of(filename) if os.path.isabs(filename) else None
            if name:
                return name
        frame = frame.f_back
    return None


def _requested_name(fullname: str) -> str:
    """The whole dotted name the import statement asked for (`ldm.modules.attention`, not just the first `ldm`
    Python looks up), read from the importing line; `fullname` when that line cannot be read."""
    frame = sys._getframe(1)
    while frame is not None and (frame.f_code.co_filename.startswith("<frozen") or
                                 frame.f_code.co_filename == __file__):
        frame = frame.f_back
    if frame is None:
        return fullname
    line = linecache.getline(frame.f_code.co_filename, frame.f_lineno)
    for match in re.finditer(r"\b(?:from|import)\s+([\w.]+)", line):
        if match.group(1) == fullname or match.group(1).startswith(fullname + "."):
            return match.group(1)
    return fullname


def incompatibility_reason(fullname: str) -> str:
    if fullname.startswith(("ldm", "sgm", "repositories")):
        return (f"imports {fullname}, A1111's copy of the original Stable Diffusion model code; this program runs "
                "diffusers models, which have no such modules to patch")
    return (f"imports {fullname}, part of A1111's hijack layer that patches the ldm model; a diffusers model has "
            "no such internals")


class _LdmGuard(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None):
        if not _blocked(fullname):
            return None
        reason = incompatibility_reason(_requested_name(fullname))
        extension = calling_extension()
        who = f"Extension {extension!r} " if extension else "This code "
        raise IncompatibleImportError(f"{who}is incompatible: it {reason}.", name=fullname)


_guard = _LdmGuard()


def incompatibility_in(error: BaseException | None) -> IncompatibleExtensionError | None:
    """The IncompatibleExtensionError that caused `error` (itself, or one in its cause/context chain), if any."""
    seen = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, IncompatibleExtensionError):
            return error
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return None


# A1111 functions extensions replace to change generation, which this core never calls (it encodes prompts and draws
# noise itself): a replacement would change nothing, so it makes its extension incompatible instead
UNCALLED_ENTRY_POINTS = {
    "modules.prompt_parser": ("get_learned_conditioning", "get_multicond_learned_conditioning",
                              "get_learned_conditioning_prompt_schedules", "reconstruct_cond_batch",
                              "reconstruct_multicond_batch"),
    "modules.processing": ("process_images_inner", "create_random_tensors"),
}


def entry_points() -> dict[tuple[str, str], object]:
    """The current objects of UNCALLED_ENTRY_POINTS (importing their modules)."""
    import importlib

    found = {}
    for module_name, names in UNCALLED_ENTRY_POINTS.items():
        module = importlib.import_module(module_name)
        for name in names:
            if hasattr(module, name):
                found[(module_name, name)] = getattr(module, name)
    return found


def mark_replaced_entry_points(before: dict[tuple[str, str], object]) -> list[str]:
    """Mark the extensions that replaced one of `before`'s functions incompatible; returns their names."""
    marked = []
    for (module_name, name), original in before.items():
        current = getattr(sys.modules.get(module_name), name, original)
        if current is original:
            continue
        code = getattr(current, "__code__", None) or getattr(getattr(current, "__func__", None), "__code__", None)
        extension = extension_status.extension_name_of(code.co_filename) if code is not None else None
        if extension:
            extension_status.mark_incompatible(
                extension, f"replaces {module_name}.{name}, which this program's generation never calls (the core "
                           "encodes prompts and draws noise itself), so the replacement would change nothing")
            marked.append(extension)
    return marked


def install() -> None:
    """Put the guard last on sys.meta_path (idempotent)."""
    if _guard not in sys.meta_path:
        sys.meta_path.append(_guard)


def uninstall() -> None:
    if _guard in sys.meta_path:
        sys.meta_path.remove(_guard)
