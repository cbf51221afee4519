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
import pickle
from collections.abc import Callable, Iterator
from typing import Any

import torch

from modules.models.safe_load import CheckpointLoadError

log = logging.getLogger("webui")

# torch.load as it is now: extensions assign `torch.load = safe.unsafe_torch_load`, and the core's loader calls
# torch.load, so calling the attribute from here would come back here forever
_torch_load = torch.load


def load(filename: Any, *args: Any, map_location: Any = None, **kwargs: Any) -> Any:
    """Unpickle `filename` (a path or file object) with the restricted unpickler; `weights_only` is always on, other
    arguments of torch.load are ignored."""
    name = os.path.basename(str(getattr(filename, "name", filename)))
    try:
        return _torch_load(filename, map_location=map_location or "cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise CheckpointLoadError(
            f"{name}: refused to load: the pickle holds objects other than tensors and plain containers, which "
            f"could run code ({str(e).splitlines()[0]})") from e
    except Exception as e:
        raise CheckpointLoadError(f"{name}: cannot read the file ({e})") from e


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
