"""A1111's `modules.modelloader` for extensions: finding model files in folders and fetching one by URL.

`load_file_from_url` returns the file when it is already in `model_dir`. Otherwise it downloads it, unless this
WebUI runs offline (`HF_HUB_OFFLINE=1`, the setting for every other download too) or the download fails: then a
`ModelDownloadError` names the URL and the folder to put the file into by hand.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from urllib.parse import urlparse

_TRUE = ("1", "true", "yes", "on")


class ModelDownloadError(RuntimeError):
    """A model file is missing and could not be downloaded; the message says where to put it."""


def is_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in _TRUE


def _missing(url: str, model_dir: str, file_name: str, why: str) -> ModelDownloadError:
    return ModelDownloadError(f"{file_name} is not in {model_dir} and was not downloaded ({why}). "
                              f"Download {url} and put it into {model_dir} as {file_name}.")


def _download(url: str, destination: str, progress: bool, hash_prefix: str | None) -> None:
    """Fetch to a temporary name beside the destination, check the hash prefix, then move it into place."""
    import torch.hub

    partial = destination + ".partial"
    try:
        torch.hub.download_url_to_file(url, partial, progress=progress)
        if hash_prefix:
            digest = hashlib.sha256()
            with open(partial, "rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    digest.update(block)
            if not digest.hexdigest().startswith(hash_prefix):
                raise ModelDownloadError(f"{url}: downloaded file's sha256 {digest.hexdigest()[:16]}… does not start "
                                         f"with {hash_prefix}")
        os.replace(partial, destination)
    finally:
        if os.path.exists(partial):
            os.remove(partial)


def load_file_from_url(url: str, *, model_dir: str, progress: bool = True, file_name: str | None = None,
                       hash_prefix: str | None = None, re_download: bool = False) -> str:
    """The path of `file_name` (default: the URL's last part) in `model_dir`, downloading it when missing."""
    os.makedirs(model_dir, exist_ok=True)
    file_name = file_name or os.path.basename(urlparse(url).path)
    cached_file = os.path.abspath(os.path.join(model_dir, file_name))
    if os.path.exists(cached_file) and not re_download:
        return cached_file
    if is_offline():
        raise _missing(url, model_dir, file_name, "offline: HF_HUB_OFFLINE is set")
    try:
        _download(url, cached_file, progress, hash_prefix)
    except ModelDownloadError:
        raise
    except Exception as e:  # no network, HTTP error, disk full …
        raise _missing(url, model_dir, file_name, f"download failed: {e}") from e
    return cached_file


def _walk_files(path: str, allowed_extensions: list[str] | None = None) -> list[str]:
    if not os.path.isdir(path):
        return []
    extensions = tuple(allowed_extensions) if allowed_extensions else None
    found = []
    for root, _, names in sorted(os.walk(path, followlinks=True)):
        for name in sorted(names):
            if extensions is None or os.path.splitext(name)[1].lower() in extensions:
                found.append(os.path.join(root, name))
    return found


def load_models(model_path: str, model_url: str | None = None, command_path: str | None = None,
                ext_filter: list[str] | None = None, download_name: str | None = None,
                ext_blacklist: list[str] | None = None, hash_prefix: str | None = None) -> list[str]:
    """Model files in `command_path` (if given) and `model_path`; with none found and a `model_url`, that file
    (downloaded under `download_name`, else the URL itself is returned for the caller to fetch)."""
    places = []
    if command_path is not None and command_path != model_path:
        pretrained = os.path.join(command_path, "experiments/pretrained_models")
        places.append(pretrained if os.path.exists(pretrained) else command_path)
    places.append(model_path)
    output: list[str] = []
    for place in places:
        for full_path in _walk_files(place, ext_filter):
            if os.path.islink(full_path) and not os.path.exists(full_path):
                continue
            if ext_blacklist is not None and any(full_path.endswith(x) for x in ext_blacklist):
                continue
            if full_path not in output:
                output.append(full_path)
    if model_url is not None and not output:
        if download_name is not None:
            output.append(load_file_from_url(model_url, model_dir=places[0], file_name=download_name,
                                             hash_prefix=hash_prefix))
        else:
            output.append(model_url)
    return output


def friendly_name(file: str) -> str:
    """A model's name from its path or URL: the file name without extension."""
    if file.startswith("http"):
        file = urlparse(file).path
    return os.path.splitext(os.path.basename(file))[0]


def move_files(src_path: str, dest_path: str, ext_filter: str | None = None) -> None:
    """Move model files from an old folder into the current one (A1111's folder migrations)."""
    if not os.path.isdir(src_path):
        return
    os.makedirs(dest_path, exist_ok=True)
    for name in os.listdir(src_path):
        source = os.path.join(src_path, name)
        if os.path.isfile(source) and (ext_filter is None or ext_filter in name):
            if not os.path.exists(os.path.join(dest_path, name)):
                shutil.move(source, dest_path)
    if not os.listdir(src_path):
        os.rmdir(src_path)


def load_upscalers() -> None:
    """Scan the upscaler model folders again (what `shared.sd_upscalers` lists)."""
    from modules import upscaling

    upscaling.refresh_upscalers()


def __getattr__(name: str):
    """A1111's modelloader also exposes the upscaler classes (imported on use: modules.upscaler needs the app)."""
    if name in ("Upscaler", "UpscalerData", "UpscalerNone", "UpscalerLanczos", "UpscalerNearest"):
        from modules import upscaler

        return getattr(upscaler, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def cleanup_models() -> None:
    """A1111 moves models from its old folder layout; this WebUI never had one."""
