"""A1111's `modules.safe` for extensions: loading pickled model files without running code from them.

A1111 replaces `torch.load` with a restricted unpickler and keeps the original as `unsafe_torch_load`, which
extensions call for files they trust (their own downloads, say). Here both names are the restricted loader of the
core (modules/models/safe_load.py: torch's `weights_only` unpickler, tensors and plain containers only): a pickle
can run arbitrary code as it loads, and a file an extension downloads or a user drops into a folder is not a
trusted one. A file that needs anything else is refused with a `CheckpointLoadError` naming it; converting it to
.safetensors is the way out. `torch.load` itself is left as it is.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable, Iterator
from typing import Any

from modules.models.safe_load import CheckpointLoadError, load_pickle  # noqa: F401 (the error extensions see)

log = logging.getLogger("webui")


def load(filename: str | os.PathLike, *args: Any, map_location: Any = None, **kwargs: Any) -> Any:
    """Unpickle `filename` with the restricted unpickler (other arguments of torch.load are ignored)."""
    location = map_location if isinstance(map_location, str) else str(map_location) if map_location else "cpu"
    return load_pickle(filename, "file", device=location)


def unsafe_torch_load(filename: str | os.PathLike, *args: Any, map_location: Any = None, **kwargs: Any) -> Any:
    """A1111's unrestricted torch.load, mapped to the restricted one on purpose: extensions use it for files that
    come from the internet or the user's folders, which could run code when unpickled."""
    return load(filename, *args, map_location=map_location, **kwargs)


def check_pt(filename: str, extra_handler: Any = None) -> None:
    """Raise if the file cannot be loaded safely (A1111 checks before loading)."""
    load(filename)


@contextlib.contextmanager
def Extra(handler: Callable[[str, str], Any]) -> Iterator[None]:  # noqa: N802 (A1111's name)
    """A1111 lets a handler allow extra classes while loading; the restricted loader takes no additions, so files
    that need them are refused inside this block as outside it."""
    log.info("safe.Extra: extra unpickling classes are not allowed here; only tensors and plain containers load")
    yield
