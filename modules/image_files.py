"""Naming and writing image files the way A1111 v1.10.1 does: file name patterns, numbered names, metadata encoding
and atomic publishing. What to save where, under which settings, is decided by `modules.output_writer`, which builds
on this module; `modules.images` (A1111's name) re-exports these for extensions.
Names: `<path>/<YYYY-MM-DD>/00012-1234567890.png` for samples, `grid-0003.png` for grids, with the number one
above the highest already in the folder. Unlike A1111, concurrent savers (threads or processes) can never pick the
same name or overwrite each other, and a reader never sees a partly written file: the image is written to a hidden
temporary file in the same folder, flushed to disk (fsync), then published under its final name with a no-clobber
hard link (or, where the filesystem has no hard links, an O_EXCL reservation followed by an atomic rename). A process
killed while writing leaves only a hidden `.tmp-<pid>-*.tmp` file, never a partial image; the next process to save
into that folder removes such leftovers of dead processes.
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import hashlib
import os
import re
import string
import threading
import time
import uuid
import zoneinfo
from collections.abc import Callable, Iterator, Mapping

import psutil
from PIL import Image, PngImagePlugin

from modules.infotext import EXIF_IFD_POINTER, EXIF_USER_COMMENT, encode_user_comment

INVALID_FILENAME_CHARS = '#<>:"/\\|?*\n\r\t'
INVALID_FILENAME_PREFIX = " "
INVALID_FILENAME_POSTFIX = " ."
MAX_FILENAME_PART_LENGTH = 128  # A1111's --filenames-max-length default
MAX_PROMPT_WORDS = 8  # A1111's directories_max_prompt_words default
DEFAULT_DATETIME_FORMAT = "%Y%m%d%H%M%S"

RE_NONLETTERS = re.compile(r"[\s" + re.escape(string.punctuation) + "]+")
RE_PATTERN = re.compile(r"(.*?)(?:\[([^\[\]]+)\]|$)")
RE_PATTERN_ARG = re.compile(r"(.*)<([^>]*)>$")

# A pattern value meaning "write nothing, and drop the literal text before the pattern too" (A1111's
# NOTHING_AND_SKIP_PREVIOUS_TEXT), e.g. [batch_number] for a batch of one.
SKIP_PREVIOUS_TEXT = object()


def sanitize_filename_part(text: str | None, replace_spaces: bool = True) -> str | None:
    """Make text safe inside a file name: no path or shell-special characters, no leading space, 128 chars max."""
    if text is None:
        return None
    if replace_spaces:
        text = text.replace(" ", "_")
    text = text.translate({ord(char): "_" for char in INVALID_FILENAME_CHARS})
    text = text.lstrip(INVALID_FILENAME_PREFIX)[:MAX_FILENAME_PART_LENGTH]
    return text.rstrip(INVALID_FILENAME_POSTFIX)


def _attr(obj: object, name: str) -> object:
    return getattr(obj, name, None) if obj is not None else None


class FilenameGenerator:
    """Expands A1111 file/directory name patterns such as `[seed]-[prompt_spaces]` or `[datetime<%Y%m%d><UTC>]`.

    `p` is optional: any object with A1111 processing attribute names (steps, cfg_scale, sampler_name, scheduler,
    styles, sd_model_hash, sd_model_name, job_timestamp, batch_size, batch_index, n_iter, iteration, all_seeds,
    denoising_strength, clip_skip, user, negative_prompt). `fields` supplies those a job object does not carry
    itself (the model name and hash, the job timestamp) and wins over `p`. A pattern whose value is unknown is left
    as written, like A1111 does.
    """

    def __init__(
        self,
        p: object | None,
        seed: int | None,
        prompt: str | None,
        image: Image.Image | None,
        zip: bool = False,  # A1111's parameter name: names for a zip archive skip batch numbers
        basename: str = "",
        now: datetime.datetime | None = None,
        fields: Mapping[str, object] | None = None,
        max_prompt_words: int | None = None,
    ) -> None:
        self.p = p
        self.fields = dict(fields or {})
        self.seed = seed
        self.prompt = prompt
        self.image = image
        self.zip = zip
        self.basename = basename
        self.now = now or datetime.datetime.now()
        # A1111's directories_max_prompt_words, for [prompt_words] (images.FilenameGenerator: the setting's value)
        self.max_prompt_words = MAX_PROMPT_WORDS if max_prompt_words is None else int(max_prompt_words)

    def _field(self, name: str) -> object:
        return self.fields[name] if name in self.fields else _attr(self.p, name)

    def _batch_size(self) -> int:
        return int(self._field("batch_size") or 1)

    def _replacements(self) -> dict[str, Callable[..., object]]:
        p, field = self.p, self._field
        return {
            "basename": lambda: self.basename or "img",
            "seed": lambda: self.seed if self.seed is not None else "",
            "seed_first": lambda: self.seed if self._batch_size() == 1 else field("all_seeds")[0],
            "seed_last": lambda: SKIP_PREVIOUS_TEXT if self._batch_size() == 1 else field("all_seeds")[-1],
            "steps": lambda: field("steps"),
            "cfg": lambda: field("cfg_scale"),
            "width": lambda: self.image.width if self.image is not None else None,
            "height": lambda: self.image.height if self.image is not None else None,
            "styles": lambda: None if p is None else sanitize_filename_part(
                ", ".join(style for style in (field("styles") or []) if style != "None") or "None",
                replace_spaces=False),
            "sampler": lambda: sanitize_filename_part(field("sampler_name"), replace_spaces=False),
            "scheduler": lambda: sanitize_filename_part(field("scheduler"), replace_spaces=False),
            "model_hash": lambda: field("sd_model_hash"),
            "model_name": lambda: sanitize_filename_part(field("sd_model_name"), replace_spaces=False),
            "date": lambda: self.now.strftime("%Y-%m-%d"),
            "datetime": self._datetime,
            "job_timestamp": lambda: field("job_timestamp"),
            "prompt_hash": lambda *args: self._string_hash(self.prompt, *args),
            "negative_prompt_hash": lambda *args: self._string_hash(field("negative_prompt"), *args),
            "full_prompt_hash": lambda *args: self._string_hash(
                f"{field('prompt')} {field('negative_prompt')}", *args),
            "prompt": lambda: sanitize_filename_part(self.prompt),
            "prompt_no_styles": lambda: sanitize_filename_part(self.prompt, replace_spaces=False),
            "prompt_spaces": lambda: sanitize_filename_part(self.prompt, replace_spaces=False),
            "prompt_words": self._prompt_words,
            "batch_number": lambda: SKIP_PREVIOUS_TEXT if self._batch_size() == 1 or self.zip
            else int(field("batch_index") or 0) + 1,
            "batch_size": lambda: self._batch_size(),
            "generation_number": self._generation_number,
            "hasprompt": self._hasprompt,
            "clip_skip": lambda: field("clip_skip"),
            "denoising": lambda: field("denoising_strength") or SKIP_PREVIOUS_TEXT,
            "user": lambda: field("user"),
            "none": lambda: "",  # gives just the sequence number
            "image_hash": self._image_hash,
        }

    def _generation_number(self) -> object:
        if (int(self._field("n_iter") or 1) == 1 and self._batch_size() == 1) or self.zip:
            return SKIP_PREVIOUS_TEXT
        iteration = int(self._field("iteration") or 0)
        return iteration * self._batch_size() + int(self._field("batch_index") or 0) + 1

    def _prompt_words(self) -> str | None:
        words = [word for word in RE_NONLETTERS.split(self.prompt or "") if word] or ["empty"]
        return sanitize_filename_part(" ".join(words[:self.max_prompt_words]), replace_spaces=False)

    def _hasprompt(self, *args: str) -> str | None:
        if self.prompt is None:
            return None
        lower = self.prompt.lower()
        result = ""
        for arg in args:
            if arg == "":
                continue
            expected, _, default = arg.partition("|")
            if expected.lower() in lower:
                result += expected.lower()
            else:
                result += default
        return sanitize_filename_part(result)

    def _datetime(self, *args: str) -> str | None:
        time_format = args[0] if args and args[0] != "" else DEFAULT_DATETIME_FORMAT
        time_zone = None
        if len(args) > 1:
            try:
                time_zone = zoneinfo.ZoneInfo(args[1])
            except (zoneinfo.ZoneInfoNotFoundError, ValueError):
                time_zone = None  # unknown zone: local time, as A1111
        moment = self.now.astimezone(time_zone)
        try:
            formatted = moment.strftime(time_format)
        except (ValueError, TypeError):
            formatted = moment.strftime(DEFAULT_DATETIME_FORMAT)
        return sanitize_filename_part(formatted, replace_spaces=False)

    def _image_hash(self, *args: str) -> str | None:
        if self.image is None:
            return None
        length = int(args[0]) if args and args[0] != "" else None
        return hashlib.sha256(self.image.tobytes()).hexdigest()[:length]

    @staticmethod
    def _string_hash(text: str | None, *args: str) -> str | None:
        if text is None:
            return None
        length = int(args[0]) if args and args[0] != "" else 8
        return hashlib.sha256(text.encode()).hexdigest()[:length]

    def apply(self, pattern: str) -> str:
        """Expand every `[name]` / `[name<arg>...]` in `pattern`; unknown or unavailable ones stay literal."""
        replacements = self._replacements()
        result = ""
        for match in RE_PATTERN.finditer(pattern):
            text, name = match.groups()
            if name is None:
                result += text
                continue

            args: list[str] = []
            while (arg_match := RE_PATTERN_ARG.match(name)) is not None:
                name, arg = arg_match.groups()
                args.insert(0, arg)

            replace = replacements.get(name.lower())
            if replace is not None:
                try:
                    value = replace(*args)
                except (TypeError, ValueError, IndexError, KeyError, AttributeError):
                    # a bad argument or a missing job field leaves the pattern as written, like A1111
                    value = None
                if value is SKIP_PREVIOUS_TEXT:
                    continue
                if value is not None:
                    result += text + str(value)
                    continue
            result += f"{text}[{name}]"
        return result


def get_next_sequence_number(path: str, basename: str = "") -> int:
    """1 + the highest number leading a file name in `path` (0 for an empty or missing folder), as A1111.

    With a basename, only names starting with "<basename>-" count and the number follows that prefix.
    """
    if basename != "":
        basename = f"{basename}-"
    result = -1
    try:
        names = os.listdir(path)
    except FileNotFoundError:
        return 0
    for name in names:
        if name.startswith(basename):
            parts = os.path.splitext(name[len(basename):])[0].split("-")
            try:
                result = max(int(parts[0]), result)
            except ValueError:
                pass
    return result + 1


# --- writing files ---------------------------------------------------------------------------------------------------

_MAX_NAME_ATTEMPTS = 100_000


def _exif_with_user_comment(text: str) -> Image.Exif:
    exif = Image.Exif()
    exif[EXIF_IFD_POINTER] = {EXIF_USER_COMMENT: encode_user_comment(text)}
    return exif


def save_image_with_geninfo(
    image: Image.Image,
    geninfo: str | None,
    filename: str,
    extension: str | None = None,
    existing_pnginfo: Mapping[str, object] | None = None,
    pnginfo_section_name: str = "parameters",
    jpeg_quality: int = 80,
    webp_lossless: bool = False,
) -> None:
    """Write `image` to `filename` with the generation info embedded (A1111's function of that name).

    PNG: a text chunk per item (tEXt, or iTXt when the text is not Latin-1, via Pillow's `add_text`). JPEG, WebP,
    AVIF: EXIF UserComment in piexif's "UNICODE" encoding. GIF: the comment. `extension` (".png", ...) picks the
    format when `filename` has another suffix (a temporary file).
    """
    extension = (extension or os.path.splitext(filename)[1]).lower()
    image_format = Image.registered_extensions().get(extension)
    if image_format is None:
        raise ValueError(f"Unknown image file extension: {extension!r}")

    if extension == ".png":
        pnginfo_items = dict(existing_pnginfo or {})
        if geninfo is not None:
            pnginfo_items[pnginfo_section_name] = geninfo
        pnginfo = PngImagePlugin.PngInfo()
        for key, value in pnginfo_items.items():
            pnginfo.add_text(key, str(value))
        image.save(filename, format=image_format, pnginfo=pnginfo)
    elif extension in (".jpg", ".jpeg", ".webp", ".avif"):
        if image.mode == "I;16":
            image = image.point(lambda v: v * 0.0038910505836576).convert("RGB" if extension == ".webp" else "L")
        kept_modes = ("RGB", "L", "RGBA") if extension == ".avif" else ("RGB", "L")
        if image.mode not in kept_modes:
            # A1111 converts RGBA for JPEG/WebP; other modes (P, LA, CMYK...) would fail or lose colour, so too.
            image = image.convert("RGB")
        extra: dict[str, object] = {"quality": jpeg_quality}
        if extension == ".webp":
            extra["lossless"] = webp_lossless
        if geninfo is not None:
            extra["exif"] = _exif_with_user_comment(geninfo)
        image.save(filename, format=image_format, **extra)
    elif extension == ".gif":
        image.save(filename, format=image_format, comment=geninfo or "")
    else:
        image.save(filename, format=image_format, quality=jpeg_quality)


def _max_name_length(directory: str) -> int:
    try:
        return os.statvfs(directory).f_namemax
    except (AttributeError, OSError):  # no statvfs on Windows
        return 255


def _fit_name(stem: str, extension: str, name_max: int) -> str:
    """`stem.extension`, with the stem cut so the name fits the filesystem (as A1111 cuts long prompts)."""
    return stem[: name_max - max(4, len(extension) + 1)] + "." + extension


_TEMP_PREFIX = ".tmp-"
_TEMP_SUFFIX = ".tmp"
_RESERVE_PREFIX = ".reserve-"
_STALE_RESERVATION_S = 60.0       # a sequence claim is held across one link() call: minutes old means its owner died
_STALE_UNOWNED_TEMP_S = 3600.0    # a temp file without a writer pid in its name (older versions): by age only
_swept_directories: set[str] = set()
_sweep_lock = threading.Lock()


def _temporary_path(directory: str) -> str:
    # Hidden and ending in .tmp: folder watchers skip it and it never parses as a sequence number or an image. The
    # writer's pid tells a later process whether the writer is gone (killed mid-write) so the file can be removed.
    return os.path.join(directory, f"{_TEMP_PREFIX}{os.getpid()}-{uuid.uuid4().hex}{_TEMP_SUFFIX}")


def _temporary_owner(name: str) -> int | None:
    """The writer pid in a temp file name, None for names without one."""
    pid = name[len(_TEMP_PREFIX):].split("-", 1)[0]
    return int(pid) if pid.isdigit() and "-" in name[len(_TEMP_PREFIX):] else None


def remove_stale_temporary_files(directory: str) -> list[str]:
    """Delete what killed writers left in `directory`: temp files of processes that no longer run (or, without a pid
    in the name, older than an hour) and sequence-number claims older than a minute. Returns the removed paths.

    Only hidden files this module creates are touched; a live writer's temp file (this process or another) stays."""
    removed = []
    now = time.time()
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return removed
    for entry in entries:
        name = entry.name
        try:
            age = now - entry.stat(follow_symlinks=False).st_mtime
        except OSError:
            continue  # gone meanwhile
        if name.startswith(_TEMP_PREFIX) and name.endswith(_TEMP_SUFFIX):
            owner = _temporary_owner(name)
            if owner is None:
                stale = age > _STALE_UNOWNED_TEMP_S
            else:
                stale = owner != os.getpid() and not psutil.pid_exists(owner)
        elif name.startswith(_RESERVE_PREFIX):
            stale = age > _STALE_RESERVATION_S
        else:
            continue
        if stale:
            _remove_quietly(entry.path)
            removed.append(entry.path)
    return removed


def _sweep_once(directory: str) -> None:
    """Clean a folder of dead writers' leftovers the first time this process writes into it."""
    key = os.path.abspath(directory)
    with _sweep_lock:
        if key in _swept_directories:
            return
        _swept_directories.add(key)
    remove_stale_temporary_files(directory)


def _fsync_path(path: str, directory: bool = False) -> None:
    """Flush a file (or a folder's entries) to disk, so a power loss cannot publish a name over missing data."""
    try:
        fd = os.open(path, os.O_RDONLY if directory else os.O_RDWR)
    except OSError:
        if directory:
            return  # folders cannot be opened on Windows; there the rename is as durable as it gets
        raise
    try:
        os.fsync(fd)
    except OSError:
        if not directory:
            raise
    finally:
        os.close(fd)


def _write_temporary(directory: str, write: Callable[[str], None]) -> str:
    _sweep_once(directory)
    path = _temporary_path(directory)
    try:
        write(path)
        _fsync_path(path)
    except BaseException:
        _remove_quietly(path)
        raise
    return path


def _remove_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _publish_by_link(temp_path: str, candidate: str) -> bool:
    """Give the finished temp file the name `candidate` unless that name exists; False if it does."""
    try:
        os.link(temp_path, candidate)
    except FileExistsError:
        return False
    os.unlink(temp_path)
    return True


def _publish_by_reservation(temp_path: str, candidate: str) -> bool:
    """Fallback without hard links: claim the name with O_EXCL, then rename the finished file onto it."""
    try:
        fd = os.open(candidate, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)
    except FileExistsError:
        return False
    os.close(fd)
    try:
        os.replace(temp_path, candidate)
    except BaseException:
        _remove_quietly(candidate)
        raise
    return True


def _leading_number_taken(directory: str, basename: str, number: int) -> bool:
    """True if a file in `directory` already carries sequence `number` (read as `get_next_sequence_number` reads it)."""
    prefix = f"{basename}-" if basename else ""
    for name in os.listdir(directory):
        if name.startswith(".") or not name.startswith(prefix):
            continue
        leading = os.path.splitext(name[len(prefix):])[0].split("-")[0]
        try:
            if int(leading) == number:
                return True
        except ValueError:
            pass
    return False


@contextlib.contextmanager
def _sequence_number_claim(directory: str, basename: str, number: int) -> Iterator[bool]:
    """Hold `number` of `basename`'s sequence in `directory` while a file is published under it; yields False if
    another saver holds it or a file already has it.

    File names differ by seed, so a no-clobber publish alone lets two savers both take number n ("00000-1.png",
    "00000-2.png"). The claim is a hidden marker created with O_EXCL and removed after publishing; re-checking the
    folder once the marker is held sees every file published under n by an earlier holder, so n is used once.
    """
    marker = os.path.join(directory, f".reserve-{basename}-{number}")
    try:
        os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
    except FileExistsError:
        yield False
        return
    try:
        yield not _leading_number_taken(directory, basename, number)
    finally:
        _remove_quietly(marker)


def publish_without_overwrite(
    temp_path: str,
    name_for: Callable[[int], str],
    first_number: int,
    use_hard_links: bool = True,
    sequence: tuple[str, str] | None = None,
) -> str:
    """Move the finished `temp_path` to `name_for(n)` for the first n >= first_number whose name is free.

    Atomic against other threads and processes doing the same: each name is claimed by an operation that fails if
    it exists, so two savers never share a name and nothing is overwritten. A hard link publishes the complete file
    in one step; without hard links (`use_hard_links` False, or a filesystem that refuses them) the name is claimed
    as an empty file with O_EXCL and the finished file renamed onto it. With `sequence` = (directory, basename), n is
    a sequence number that must be unique in that folder whatever the rest of the name, and it is claimed as well.
    """
    publish = _publish_by_link if use_hard_links else _publish_by_reservation
    number = first_number
    for _ in range(_MAX_NAME_ATTEMPTS):
        candidate = name_for(number)
        claim = _sequence_number_claim(*sequence, number) if sequence else contextlib.nullcontext(True)
        with claim as claimed:
            while claimed:
                try:
                    if publish(temp_path, candidate):
                        return candidate
                    break
                except OSError as error:
                    # Filesystems without hard links (FAT, some network shares) say so with these codes.
                    if publish is _publish_by_link and error.errno in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP,
                                                                       errno.EXDEV, errno.EMLINK, errno.ENOSYS):
                        publish = _publish_by_reservation
                        continue
                    raise
        number += 1
    raise FileExistsError(f"No free file name found after {_MAX_NAME_ATTEMPTS} tries, last {name_for(number)!r}")


def write_text_atomically(path: str, text: str) -> None:
    """Write `text` to `path` (UTF-8) through a temporary file, replacing what was there in one step."""
    directory = os.path.dirname(path) or "."

    def write(temp: str) -> None:
        with open(temp, "w", encoding="utf8") as file:
            file.write(text)

    os.replace(_write_temporary(directory, write), path)
    _fsync_path(directory, directory=True)


def publish_file(
    directory: str,
    write: Callable[[str], None],
    stem: str,
    extension: str,
    *,
    numbered: bool,
    basename: str = "",
    replace_existing: bool = True,
) -> str:
    """Write a file with `write(temp_path)` into `directory` and publish it atomically; returns its path.

    - `numbered`: A1111's sequence names, `{n:05}{stem}.{extension}` (or `{basename}-{n:04}{stem}` with a
      basename), n one above the highest number in the folder, never shared with another saver, never overwriting.
    - otherwise `{stem}.{extension}`: replaced in one step when it exists and `replace_existing`, else published as
      `{stem}-1`, `{stem}-2`, ... (A1111's "Add number suffix").
    Names are cut to the filesystem's limit. A failed write leaves nothing behind.
    """
    extension = extension.lstrip(".")
    name_max = _max_name_length(directory)

    def name_for(number: int) -> str:
        if not numbered:
            name = stem if number == 0 else f"{stem}-{number}"
        elif basename == "":
            name = f"{number:05}{stem}"
        else:
            name = f"{basename}-{number:04}{stem}"
        return os.path.join(directory, _fit_name(name, extension, name_max))

    temp_path = _write_temporary(directory, write)
    try:
        if not numbered and replace_existing:
            path = name_for(0)
            os.replace(temp_path, path)
        else:
            first = get_next_sequence_number(directory, basename) if numbered else 0
            path = publish_without_overwrite(temp_path, name_for, first,
                                             sequence=(directory, basename) if numbered else None)
    except BaseException:
        _remove_quietly(temp_path)
        raise
    _fsync_path(directory, directory=True)  # the new name itself survives a power loss
    return path
