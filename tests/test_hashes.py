import hashlib
import json
import os
import struct
import threading

import pytest

from modules import hashes


def make_file(path, size: int, seed: int = 0) -> bytes:
    content = bytes((index * 31 + seed) % 251 for index in range(size))
    path.write_bytes(content)
    return content


def test_sha256_matches_hashlib_across_block_boundaries(tmp_path):
    # Larger than the 1 MiB block so the loop runs more than once; odd size so the last block is partial.
    path = tmp_path / "model.safetensors"
    content = make_file(path, hashes.BLOCK_SIZE * 2 + 123)
    assert hashes.file_sha256(str(path), cache_path=None) == hashlib.sha256(content).hexdigest()


def test_known_values():
    assert hashes.short_hash("6ce0161689b3853acaa03779ec93eafe75a02f4ced659bee03f50797806fa2fa") == "6ce0161689"


def test_empty_file(tmp_path):
    path = tmp_path / "empty.ckpt"
    path.write_bytes(b"")
    expected = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    assert hashes.file_sha256(str(path), cache_path=None) == expected


def test_cache_entry_written_with_mtime_and_size(tmp_path):
    path = tmp_path / "a.bin"
    content = make_file(path, 1000)
    cache_path = tmp_path / "cache.json"

    value = hashes.file_sha256(str(path), str(cache_path), title="checkpoint/a")
    assert value == hashlib.sha256(content).hexdigest()

    cache = json.loads(cache_path.read_text(encoding="utf-8"))
    entry = cache["hashes"][str(path.resolve())]
    assert entry == {"mtime": os.stat(path).st_mtime, "size": 1000, "sha256": value}
    assert [name for name in os.listdir(tmp_path) if name.endswith(".tmp")] == []


def test_cached_value_used_while_mtime_and_size_unchanged(tmp_path):
    path = tmp_path / "a.bin"
    make_file(path, 1000)
    cache_path = tmp_path / "cache.json"
    hashes.file_sha256(str(path), str(cache_path))

    # Plant a fake hash: it is returned, which proves the file was not re-read.
    cache = json.loads(cache_path.read_text(encoding="utf-8"))
    cache["hashes"][str(path.resolve())]["sha256"] = "f" * 64
    cache_path.write_text(json.dumps(cache), encoding="utf-8")
    assert hashes.file_sha256(str(path), str(cache_path)) == "f" * 64
    assert hashes.cached_sha256(str(path), str(cache_path)) == "f" * 64

    # use_cache=False re-hashes and refreshes the entry.
    real = hashes.file_sha256(str(path), str(cache_path), use_cache=False)
    assert real == hashlib.sha256(path.read_bytes()).hexdigest()
    assert hashes.cached_sha256(str(path), str(cache_path)) == real


def test_changed_mtime_triggers_rehash(tmp_path):
    path = tmp_path / "a.bin"
    make_file(path, 1000)
    cache_path = tmp_path / "cache.json"
    first = hashes.file_sha256(str(path), str(cache_path))

    new_content = make_file(path, 1000, seed=7)  # same size, different bytes
    stat = os.stat(path)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 5_000_000_000))
    assert hashes.cached_sha256(str(path), str(cache_path)) is None
    second = hashes.file_sha256(str(path), str(cache_path))
    assert second == hashlib.sha256(new_content).hexdigest() != first


def test_changed_size_triggers_rehash(tmp_path):
    path = tmp_path / "a.bin"
    make_file(path, 1000)
    cache_path = tmp_path / "cache.json"
    hashes.file_sha256(str(path), str(cache_path))
    mtime_ns = os.stat(path).st_mtime_ns

    new_content = make_file(path, 1001)
    os.utime(path, ns=(mtime_ns, mtime_ns))  # same mtime: only the size differs
    assert hashes.file_sha256(str(path), str(cache_path)) == hashlib.sha256(new_content).hexdigest()
    cache = json.loads(cache_path.read_text(encoding="utf-8"))
    assert cache["hashes"][str(path.resolve())]["size"] == 1001


@pytest.mark.parametrize("content", ["{broken", "[]", '{"hashes": [1, 2]}'])
def test_corrupt_cache_is_ignored_and_rewritten(tmp_path, content, caplog):
    path = tmp_path / "a.bin"
    data = make_file(path, 500)
    cache_path = tmp_path / "cache.json"
    cache_path.write_text(content, encoding="utf-8")

    assert hashes.file_sha256(str(path), str(cache_path)) == hashlib.sha256(data).hexdigest()
    cache = json.loads(cache_path.read_text(encoding="utf-8"))
    assert cache["hashes"][str(path.resolve())]["sha256"] == hashlib.sha256(data).hexdigest()


def test_other_cache_sections_are_preserved(tmp_path):
    path = tmp_path / "a.bin"
    make_file(path, 10)
    cache_path = tmp_path / "cache.json"
    cache_path.write_text(json.dumps({"safetensors-metadata": {"x": {"mtime": 1, "value": {"k": "v"}}}}))
    hashes.file_sha256(str(path), str(cache_path))
    cache = json.loads(cache_path.read_text(encoding="utf-8"))
    assert cache["safetensors-metadata"] == {"x": {"mtime": 1, "value": {"k": "v"}}}
    assert str(path.resolve()) in cache["hashes"]


def test_concurrent_hashing_keeps_every_entry(tmp_path):
    cache_path = tmp_path / "cache.json"
    paths = []
    for index in range(8):
        path = tmp_path / f"m{index}.bin"
        make_file(path, 2000 + index, seed=index)
        paths.append(path)

    threads = [threading.Thread(target=hashes.file_sha256, args=(str(path), str(cache_path))) for path in paths]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    cache = json.loads(cache_path.read_text(encoding="utf-8"))
    for path in paths:
        assert cache["hashes"][str(path.resolve())]["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()


def test_missing_file_raises(tmp_path):
    with pytest.raises(FileNotFoundError):
        hashes.file_sha256(str(tmp_path / "absent.bin"), str(tmp_path / "cache.json"))


def make_safetensors(path, header: dict, payload: bytes) -> None:
    header_bytes = json.dumps(header).encode("utf-8")
    path.write_bytes(struct.pack("<Q", len(header_bytes)) + header_bytes + payload)


def test_addnet_hash_skips_header(tmp_path):
    payload = bytes(range(256)) * 10
    first = tmp_path / "lora_a.safetensors"
    second = tmp_path / "lora_b.safetensors"
    make_safetensors(first, {"__metadata__": {"ss_output_name": "a"}}, payload)
    make_safetensors(second, {"__metadata__": {"ss_output_name": "a much longer name"}}, payload)

    expected = hashlib.sha256(payload).hexdigest()
    assert hashes.addnet_hash_safetensors(str(first)) == expected
    assert hashes.addnet_hash_safetensors(str(second)) == expected  # metadata does not change it
    assert hashes.file_sha256(str(first), None) != expected

    cache_path = tmp_path / "cache.json"
    assert hashes.addnet_hash_safetensors(str(first), cache_path=str(cache_path)) == expected
    cache = json.loads(cache_path.read_text(encoding="utf-8"))
    assert cache["hashes-addnet"][str(first.resolve())]["sha256"] == expected


def test_addnet_hash_rejects_non_safetensors(tmp_path):
    short = tmp_path / "short.safetensors"
    short.write_bytes(b"abc")
    with pytest.raises(ValueError, match="shorter than 8 bytes"):
        hashes.addnet_hash_safetensors(str(short))
    lying = tmp_path / "lying.safetensors"
    lying.write_bytes(struct.pack("<Q", 10_000) + b"{}")
    with pytest.raises(ValueError, match="exceeds the file"):
        hashes.addnet_hash_safetensors(str(lying))


def test_model_hash_legacy(tmp_path):
    path = tmp_path / "old.ckpt"
    content = make_file(path, 0x100000 + 0x10000 + 500)
    expected = hashlib.sha256(content[0x100000 : 0x100000 + 0x10000]).hexdigest()[:8]
    assert hashes.model_hash_legacy(str(path)) == expected
    assert len(expected) == 8

    small = tmp_path / "small.ckpt"
    make_file(small, 100)
    assert hashes.model_hash_legacy(str(small)) == hashlib.sha256(b"").hexdigest()[:8]  # A1111 reads past EOF
    assert hashes.model_hash_legacy(str(tmp_path / "absent.ckpt")) == "NOFILE"


def test_a1111_two_argument_forms_use_the_configured_cache(tmp_path):
    """Extensions call A1111's `hashes.sha256(filename, title)`: the second argument is a title, never a cache path."""
    path = tmp_path / "model.bin"
    path.write_bytes(b"x" * 1000)
    cache_path = tmp_path / "cache.json"
    hashes.configure(str(cache_path))
    try:
        assert hashes.sha256_from_cache(str(path), "checkpoint/model") is None  # nothing hashed yet
        value = hashes.sha256(str(path), "checkpoint/model")
        assert value == hashlib.sha256(b"x" * 1000).hexdigest()
        assert hashes.sha256_from_cache(str(path), "checkpoint/model") == value
        assert cache_path.is_file() and not (tmp_path / "checkpoint").exists()
    finally:
        hashes.configure(None)
