"""The one error for A1111 internals that cannot mean anything on a diffusers core.

Core code raises it where an extension reaches for such an internal (replacing `p.sample`, which A1111's ldm
sampling calls and this core never does), so the use fails loudly instead of being silently ignored; the script
runner and the status page (modules.extension_guard, modules.extension_status) turn it into "incompatible".
"""

from __future__ import annotations


class IncompatibleExtensionError(Exception):
    """An extension needs an A1111 internal that a diffusers core does not have (raise it from a compatibility name
    whose use would otherwise be silently ignored, e.g. `model_hijack.hijack()`)."""
