"""Untrusted model files: code-running pickles are refused wherever a pickle is read, and damaged or hostile
`.safetensors` headers give a CheckpointLoadError naming the file, never a crash (explicit cases plus hypothesis).

Pickle paths already covered elsewhere (crafted pickle writes a marker, refused, marker absent): checkpoint `.ckpt`
(test_models), hypernetwork `.pt` (test_hypernetwork), LoRA `.pt` (test_lora), upscaler `.pth` (test_upscaling),
TAESD `.pth` (test_previews), merger inputs (test_merger). This file adds the VAE and embedding paths and an audit
that no code outside modules/models/safe_load.py unpickles anything itself.
"""

from __future__ import annotations

import ast
import json
import os
import pickle
import struct
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.torch import save_file

from modules.devices import choose_policy
from modules.models.loader import VaeInfo, load_vae_file
from modules.models.safe_load import (
    MAX_SAFETENSORS_HEADER,
    SAFETENSORS_DTYPE_BITS,
    CheckpointLoadError,
    load_state_dict,
    read_safetensors_metadata,
)
from modules.networks import lora
from modules.prompts.textual_inversion import EmbeddingLoadError, load_embedding_file

ROOT = Path(__file__).resolve().parents[1]
CPU = choose_policy(use_cpu=["all"])


class _TouchesMarker:
    """Unpickling this runs `touch <marker>`: the proof that a loader executed code from the file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def _evil_pickle(path: Path, marker: Path, container: str) -> Path:
    """A file that runs code when unpickled: torch's zip container, or a bare pickle as old `.ckpt` files are."""
    payload = {"state_dict": {"decoder.conv_in.weight": torch.zeros(1)}, "x": _TouchesMarker(marker)}
    if container == "torch":
        torch.save(payload, path)
    else:
        path.write_bytes(pickle.dumps(payload, protocol=2))  # torch.load's own protocol
    return path


def test_the_payload_really_runs_code_when_unpickled_unrestricted(tmp_path):
    # the control for the tests below: without the restricted loader this file creates its marker
    marker = tmp_path / "ran"
    pickle.loads(_evil_pickle(tmp_path / "evil.ckpt", marker, "raw").read_bytes())
    assert marker.exists()


@pytest.mark.parametrize("name, container", [("evil-vae.pt", "torch"), ("evil-vae.ckpt", "raw"),
                                             ("evil.vae.ckpt", "torch")])
def test_crafted_vae_pickle_is_refused_and_nothing_runs(tmp_path, name, container):
    marker = tmp_path / "pwned"
    path = _evil_pickle(tmp_path / name, marker, container)
    with pytest.raises(CheckpointLoadError, match=rf"{name}: refused to load"):
        load_vae_file(VaeInfo(str(path), name), "sd1", CPU, None)
    assert not marker.exists()


@pytest.mark.parametrize("container", ["torch", "raw"])
def test_crafted_embedding_pickle_is_refused_and_nothing_runs(tmp_path, container):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil-embedding.pt"
    data = {"string_to_param": {"*": torch.zeros(1, 64)}, "name": _TouchesMarker(marker)}
    if container == "torch":
        torch.save(data, path)
    else:
        path.write_bytes(pickle.dumps(data, protocol=2))
    with pytest.raises(EmbeddingLoadError, match=r"evil-embedding\.pt: refused to load"):
        load_embedding_file(path)
    assert not marker.exists()


def _unpickling_calls(tree: ast.AST) -> list[tuple[int, str]]:
    """Calls that would unpickle: torch.load, pickle.load(s), pickle.Unpickler, numpy.load with allow_pickle."""
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        name = ast.unparse(func)
        if name in ("torch.load", "pickle.load", "pickle.loads", "pickle.Unpickler", "cPickle.load", "joblib.load",
                    "dill.load", "dill.loads", "torch.serialization.load"):
            found.append((node.lineno, name))
        elif name.endswith("load") and any(k.arg == "allow_pickle" for k in node.keywords):
            found.append((node.lineno, name))
    return found


def test_only_safe_load_unpickles():
    # every pickle path must go through modules/models/safe_load.py (restricted unpickler); a new torch.load or
    # pickle.load anywhere else in our code would bypass it
    offenders = []
    for folder in ("modules", "scripts"):
        for file in sorted((ROOT / folder).rglob("*.py")):
            if file == ROOT / "modules" / "models" / "safe_load.py":
                continue
            for line, name in _unpickling_calls(ast.parse(file.read_text(encoding="utf-8"))):
                offenders.append(f"{file.relative_to(ROOT)}:{line} {name}")
    assert offenders == []


def test_safe_load_itself_uses_weights_only():
    tree = ast.parse((ROOT / "modules" / "models" / "safe_load.py").read_text(encoding="utf-8"))
    loads = [node for node in ast.walk(tree) if isinstance(node, ast.Call) and ast.unparse(node.func) == "torch.load"]
    assert loads and all(any(k.arg == "weights_only" and ast.unparse(k.value) == "True" for k in node.keywords)
                         for node in loads)


# --- safetensors headers -------------------------------------------------------------------------------------------

def _file(header: object, data: bytes = b"", header_bytes: bytes | None = None, length: int | None = None) -> bytes:
    raw = header_bytes if header_bytes is not None else json.dumps(header).encode()
    return struct.pack("<Q", len(raw) if length is None else length) + raw + data


F32_2x2 = {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]}


@pytest.mark.parametrize("content, reason", [
    pytest.param(b"", "too short", id="empty"),
    pytest.param(b"\x10\x00\x00", "too short", id="cut-in-length"),
    pytest.param(_file({"w": F32_2x2}, b"\x00" * 16)[:20], "header length", id="cut-in-header"),
    pytest.param(_file({"w": F32_2x2}, b"\x00" * 10), "outside the file", id="cut-in-data"),
    pytest.param(_file({}, length=MAX_SAFETENSORS_HEADER + 1) + b"{}", "header length", id="header-over-limit"),
    pytest.param(_file({}, length=2**64 - 1), "header length", id="header-length-2**64-1"),
    pytest.param(_file(None, header_bytes=b"not json at all"), "not valid JSON", id="not-json"),
    pytest.param(_file(None, header_bytes=b"\xff\xfe{}"), "not valid JSON", id="not-utf8"),
    pytest.param(_file(None, header_bytes=b"[" * 100_000), "not valid JSON", id="deeply-nested"),
    pytest.param(_file([1, 2, 3]), "not a JSON object", id="json-list"),
    pytest.param(_file(7), "not a JSON object", id="json-number"),
    pytest.param(_file({"w": [0, 16]}, b"\x00" * 16), "not an object", id="entry-not-object"),
    pytest.param(_file({"w": {**F32_2x2, "data_offsets": [0, 10**12]}}, b"\x00" * 16), "outside the file",
                 id="offset-beyond-file"),
    pytest.param(_file({"w": {**F32_2x2, "data_offsets": [-16, 0]}}, b"\x00" * 16), "outside the file",
                 id="negative-offset"),
    pytest.param(_file({"w": {**F32_2x2, "data_offsets": [16, 0]}}, b"\x00" * 16), "outside the file",
                 id="reversed-offsets"),
    pytest.param(_file({"w": {**F32_2x2, "data_offsets": ["0", 16]}}, b"\x00" * 16), "invalid data offsets",
                 id="offset-not-int"),
    pytest.param(_file({"w": {**F32_2x2, "data_offsets": [0]}}, b"\x00" * 16), "invalid data offsets",
                 id="one-offset"),
    pytest.param(_file({"w": {**F32_2x2, "dtype": "F33"}}, b"\x00" * 16), "unknown dtype", id="dtype-F33"),
    pytest.param(_file({"w": {**F32_2x2, "dtype": "float32"}}, b"\x00" * 16), "unknown dtype", id="dtype-torch-name"),
    pytest.param(_file({"w": {**F32_2x2, "dtype": 4}}, b"\x00" * 16), "unknown dtype", id="dtype-number"),
    pytest.param(_file({"w": {"shape": [2, 2], "data_offsets": [0, 16]}}, b"\x00" * 16), "unknown dtype",
                 id="dtype-missing"),
    pytest.param(_file({"w": {**F32_2x2, "shape": [2, 3]}}, b"\x00" * 16), "needs 24 bytes", id="shape-too-big"),
    pytest.param(_file({"w": {**F32_2x2, "dtype": "F16"}}, b"\x00" * 16), "needs 8 bytes", id="dtype-size-mismatch"),
    pytest.param(_file({"w": {**F32_2x2, "shape": [-2, -2]}}, b"\x00" * 16), "invalid shape", id="negative-shape"),
    pytest.param(_file({"w": {**F32_2x2, "shape": "2x2"}}, b"\x00" * 16), "invalid shape", id="shape-string"),
    pytest.param(_file({"w": {**F32_2x2, "shape": [2**62, 2**62]}}, b"\x00" * 16), "needs", id="shape-huge"),
    pytest.param(_file({"a": F32_2x2, "b": F32_2x2}, b"\x00" * 16), "overlap", id="overlapping-tensors"),
    pytest.param(_file({"w": {**F32_2x2, "data_offsets": [8, 24]}}, b"\x00" * 24), "gaps", id="gap-before"),
    pytest.param(_file({"w": F32_2x2}, b"\x00" * 20), "cover 16", id="trailing-bytes"),
    pytest.param(_file({"__metadata__": {"a": 1}}), "__metadata__", id="metadata-not-strings"),
    pytest.param(_file({"__metadata__": "text"}), "__metadata__", id="metadata-not-a-map"),
])
def test_damaged_safetensors_give_a_clear_error_naming_the_file(tmp_path, content, reason):
    path = tmp_path / "damaged.safetensors"
    path.write_bytes(content)
    for read in (load_state_dict, read_safetensors_metadata):
        with pytest.raises(CheckpointLoadError, match=rf"damaged\.safetensors: .*{reason}"):
            read(path)


def test_a_valid_file_with_every_torch_dtype_still_loads(tmp_path):
    tensors = {str(dtype): torch.ones(3, 2, dtype=dtype) for dtype in
               (torch.float32, torch.float16, torch.bfloat16, torch.float64, torch.int8, torch.uint8, torch.int16,
                torch.int32, torch.int64, torch.bool, torch.float8_e4m3fn, torch.float8_e5m2)}
    tensors["empty"] = torch.zeros(0, 5)
    tensors["scalar"] = torch.tensor(2.5)
    save_file(tensors, str(tmp_path / "ok.safetensors"), metadata={"format": "pt"})
    loaded = load_state_dict(tmp_path / "ok.safetensors")
    assert set(loaded) == set(tensors)
    assert all(torch.equal(loaded[k].float(), tensors[k].float()) for k in tensors)
    assert read_safetensors_metadata(tmp_path / "ok.safetensors") == {"format": "pt"}


@pytest.mark.parametrize("consumer, error", [
    (lambda p: lora.load_lora_file(p), CheckpointLoadError),
    (lambda p: load_vae_file(VaeInfo(str(p), p.name), "sd1", CPU, None), CheckpointLoadError),
    (lambda p: lora.read_metadata(p), CheckpointLoadError),
    (lambda p: load_embedding_file(p), EmbeddingLoadError),
], ids=["lora", "vae", "lora-metadata", "embedding"])
def test_consumers_report_a_damaged_file_with_their_error_type(tmp_path, consumer, error):
    path = tmp_path / "damaged.safetensors"
    path.write_bytes(_file({"w": {**F32_2x2, "data_offsets": [0, 10**9]}}, b"\x00" * 16))
    with pytest.raises(error, match=r"damaged\.safetensors"):
        consumer(path)


def _check_never_crashes(path: Path, content: bytes) -> None:
    """Either the file loads (and its tensors match the header) or a CheckpointLoadError names it."""
    path.write_bytes(content)
    try:
        tensors = load_state_dict(path)
    except CheckpointLoadError as e:
        assert path.name in str(e)
        return
    header = json.loads(content[8:8 + struct.unpack("<Q", content[:8])[0]])
    assert set(tensors) == set(header) - {"__metadata__"}
    for name, tensor in tensors.items():
        assert list(tensor.shape) == header[name]["shape"]
    assert isinstance(read_safetensors_metadata(path), dict)


FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@FUZZ
@given(header=st.binary(max_size=200), data=st.binary(max_size=64),
       length=st.one_of(st.none(), st.integers(0, 2**64 - 1)))
def test_random_header_bytes_never_crash(tmp_path, header, data, length):
    _check_never_crashes(tmp_path / "random.safetensors", _file(None, data, header_bytes=header, length=length))


_json_scalar = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70), st.floats(allow_nan=False),
                         st.text(max_size=8))
_dtypes = st.one_of(st.sampled_from(sorted(SAFETENSORS_DTYPE_BITS)), st.sampled_from(["F33", "f32", "", "I128"]),
                    _json_scalar)
_shapes = st.one_of(st.lists(st.integers(-3, 6), max_size=4), _json_scalar)
_offsets = st.one_of(st.lists(st.integers(-8, 200), min_size=2, max_size=2), st.lists(_json_scalar, max_size=3),
                     _json_scalar)
_entries = st.one_of(st.fixed_dictionaries({"dtype": _dtypes, "shape": _shapes, "data_offsets": _offsets}),
                     _json_scalar, st.lists(_json_scalar, max_size=3))
_metadata = st.one_of(st.dictionaries(st.text(max_size=5), st.text(max_size=5), max_size=3),
                      st.dictionaries(st.text(max_size=5), _json_scalar, max_size=3), _json_scalar)


@FUZZ
@given(entries=st.dictionaries(st.text(max_size=6), _entries, max_size=4), metadata=st.one_of(st.none(), _metadata),
       data=st.binary(max_size=200))
def test_random_structured_headers_never_crash(tmp_path, entries, metadata, data):
    header = dict(entries)
    if metadata is not None:
        header["__metadata__"] = metadata
    _check_never_crashes(tmp_path / "structured.safetensors", _file(header, data))


@FUZZ
@given(shapes=st.lists(st.tuples(st.sampled_from(["F32", "F16", "I64", "U8", "BOOL"]),
                                 st.lists(st.integers(0, 4), max_size=3)), min_size=1, max_size=4),
       cut=st.integers(0, 400), flip=st.integers(0, 400))
def test_truncated_or_bit_flipped_real_files_never_crash(tmp_path, shapes, cut, flip):
    # files the real writer produced, then cut short or with one byte changed (a damaged download)
    names = {"F32": torch.float32, "F16": torch.float16, "I64": torch.int64, "U8": torch.uint8, "BOOL": torch.bool}
    tensors = {f"t{i}": torch.zeros(shape, dtype=names[dtype]) for i, (dtype, shape) in enumerate(shapes)}
    source = tmp_path / "source.safetensors"
    save_file(tensors, str(source))
    content = bytearray(source.read_bytes())
    if flip < len(content):
        content[flip] ^= 0x5A
    _check_never_crashes(tmp_path / "damaged.safetensors", bytes(content[:len(content) - cut % (len(content) + 1)]))
