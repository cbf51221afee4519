"""A1111's `modules.patches`: replace an attribute of an object and undo it later, keyed so that two patchers do
not clash. A1111 extensions use it on their own objects and on A1111's; used on this program's objects it replaces
the attribute just the same (it is the extension's patch, not the core's)."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

originals: defaultdict[str, dict[tuple[int, str], Any]] = defaultdict(dict)


def patch(key: str, obj: Any, field: str, replacement: Any) -> Any:
    """Replace `obj.field` with `replacement`; returns the original. Patching the same field twice under one key
    is an error (A1111's rule)."""
    patch_key = (id(obj), field)
    if patch_key in originals[key]:
        raise RuntimeError(f"patch for {field} is already applied")
    original = getattr(obj, field)
    originals[key][patch_key] = original
    setattr(obj, field, replacement)
    return original


def undo(key: str, obj: Any, field: str) -> None:
    """Put back what `patch(key, obj, field, …)` replaced."""
    patch_key = (id(obj), field)
    if patch_key not in originals[key]:
        raise RuntimeError(f"there is no patch for {field} to undo")
    setattr(obj, field, originals[key].pop(patch_key))


def original(key: str, obj: Any, field: str) -> Any:
    """What was there before `patch(key, obj, field, …)`, None if it is not patched."""
    return originals[key].get((id(obj), field))
