"""Build the CLIP BPE tokenizer files under configs/tokenizer/ from open-clip's vocabulary file.

The app never runs this; it is kept so the committed files can be reproduced. Usage:

    pip download --no-deps open-clip-torch==3.3.0 -d /tmp/oc
    python tools/make_tokenizer.py /tmp/oc/open_clip_torch-3.3.0-py3-none-any.whl

The argument may be the wheel (the .gz is read out of the zip) or the extracted bpe_simple_vocab_16e6.txt.gz.
open-clip-torch itself is not installed: it would pull torchvision and a different torch build.
"""

from __future__ import annotations

import argparse
import gzip
import io
import json
import os
import sys
import zipfile

BPE_MEMBER = "open_clip/bpe_simple_vocab_16e6.txt.gz"
# CLIP uses the first 49152 - 256 - 2 merge lines (after the header line): 48,894 merges.
MERGE_COUNT = 49152 - 256 - 2
BOS_TOKEN = "<|startoftext|>"
EOS_TOKEN = "<|endoftext|>"
MODEL_MAX_LENGTH = 77

DEFAULT_OUTPUT_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs", "tokenizer")


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP byte-level mapping: printable bytes map to themselves, the rest to code points from 256 up."""
    printable = (
        list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    )
    byte_values = printable[:]
    code_points = printable[:]
    extra = 0
    for byte in range(256):
        if byte not in byte_values:
            byte_values.append(byte)
            code_points.append(256 + extra)
            extra += 1
    return dict(zip(byte_values, (chr(c) for c in code_points)))


def read_bpe_text(source: str) -> str:
    """Return the decompressed merge list from a wheel or a .txt.gz file."""
    if zipfile.is_zipfile(source):
        with zipfile.ZipFile(source) as wheel:
            compressed = wheel.read(BPE_MEMBER)
    else:
        with open(source, "rb") as handle:
            compressed = handle.read()
    return gzip.GzipFile(fileobj=io.BytesIO(compressed)).read().decode("utf-8")


def build_vocab_and_merges(bpe_text: str) -> tuple[dict[str, int], list[str]]:
    """Apply open-clip's recipe: byte chars, byte chars + '</w>', one token per merge, then the two specials."""
    merge_lines = bpe_text.split("\n")[1 : MERGE_COUNT + 1]  # line 0 is a header
    if len(merge_lines) != MERGE_COUNT:
        raise ValueError(f"expected {MERGE_COUNT} merge lines, found {len(merge_lines)}")
    byte_chars = list(bytes_to_unicode().values())
    tokens = byte_chars + [char + "</w>" for char in byte_chars]
    tokens += ["".join(line.split()) for line in merge_lines]
    tokens += [BOS_TOKEN, EOS_TOKEN]
    vocab = {token: index for index, token in enumerate(tokens)}
    if len(vocab) != len(tokens):
        raise ValueError("duplicate tokens in the generated vocabulary")
    return vocab, merge_lines


def write_tokenizer_files(vocab: dict[str, int], merges: list[str], output_dir: str) -> None:
    os.makedirs(output_dir, exist_ok=True)
    with open(os.path.join(output_dir, "vocab.json"), "w", encoding="utf-8") as handle:
        json.dump(vocab, handle, ensure_ascii=False)
    with open(os.path.join(output_dir, "merges.txt"), "w", encoding="utf-8", newline="\n") as handle:
        # Same header as the Hugging Face CLIP repos; the BPE loader skips it.
        handle.write("#version: 0.2\n")
        handle.write("\n".join(merges) + "\n")

    special_tokens = {
        "bos_token": BOS_TOKEN,
        "eos_token": EOS_TOKEN,
        "unk_token": EOS_TOKEN,
        "pad_token": EOS_TOKEN,
    }
    # model_max_length must be explicit: without it transformers writes 1e30 and pipelines overflow.
    tokenizer_config = {
        "tokenizer_class": "CLIPTokenizer",
        "model_max_length": MODEL_MAX_LENGTH,
        "do_lower_case": True,
        **special_tokens,
    }
    for name, content in (("tokenizer_config.json", tokenizer_config), ("special_tokens_map.json", special_tokens)):
        with open(os.path.join(output_dir, name), "w", encoding="utf-8") as handle:
            json.dump(content, handle, indent=2)
            handle.write("\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", help="open_clip_torch wheel or bpe_simple_vocab_16e6.txt.gz")
    parser.add_argument("--output-dir", default=DEFAULT_OUTPUT_DIR, help="where to write (default: configs/tokenizer)")
    args = parser.parse_args(argv)

    vocab, merges = build_vocab_and_merges(read_bpe_text(args.source))
    write_tokenizer_files(vocab, merges, args.output_dir)
    print(f"wrote {len(vocab)} tokens and {len(merges)} merges to {args.output_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
