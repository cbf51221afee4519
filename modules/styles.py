"""Prompt styles in `styles.csv` (name, prompt, negative_prompt), applied the A1111 way.

A style's text containing `{prompt}` wraps the user's prompt; otherwise it is appended after ", ".
"""

from __future__ import annotations

import csv
import io
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("webui")
FIELDS = ("name", "prompt", "negative_prompt")


@dataclass(frozen=True)
class PromptStyle:
    name: str
    prompt: str
    negative_prompt: str


def merge_prompts(style_prompt: str, prompt: str) -> str:
    if "{prompt}" in style_prompt:
        return style_prompt.replace("{prompt}", prompt)
    return ", ".join(part for part in (prompt.strip(), style_prompt.strip()) if part)


def _strip_style_text(style_text: str, prompt: str) -> tuple[bool, str]:
    """Undo one `merge_prompts`: (matched, prompt without the style's text)."""
    prompt, style_text = prompt.strip(), style_text.strip()
    if "{prompt}" in style_text:
        left, _, right = style_text.partition("{prompt}")
        if prompt.startswith(left) and prompt.endswith(right) and len(prompt) >= len(left) + len(right):
            return True, prompt[len(left):len(prompt) - len(right)]
        return False, prompt
    if prompt.endswith(style_text):
        prompt = prompt[:len(prompt) - len(style_text)]
        return True, prompt[:-2] if prompt.endswith(", ") else prompt
    return False, prompt


class StyleDatabase:
    def __init__(self, path: str) -> None:
        self.path = path
        self.styles: dict[str, PromptStyle] = {}
        self.reload()

    def reload(self) -> None:
        self.styles = {}
        if not os.path.isfile(self.path):
            return
        try:
            with open(self.path, encoding="utf-8-sig", newline="") as f:
                for row in csv.DictReader(f, skipinitialspace=True):
                    name = (row.get("name") or "").strip()
                    if name:  # A1111 also skips rows without a name
                        self.styles[name] = PromptStyle(name, row.get("prompt") or "",
                                                        row.get("negative_prompt") or "")
        except (UnicodeDecodeError, csv.Error, OSError) as error:
            # a damaged file must not stop the app, nor be overwritten by the next save: keep it aside for the user
            from modules.options import backup_corrupt_file

            self.styles = {}
            backup = backup_corrupt_file(self.path)
            log.warning("styles file %s is unreadable (%s); moved it to %s and starting without styles",
                        self.path, error, backup)

    def _selected(self, names: list[str]) -> list[PromptStyle]:
        missing = [n for n in names if n not in self.styles]
        if missing:
            log.warning("Unknown style(s) ignored: %s", ", ".join(missing))
        return [self.styles[n] for n in names if n in self.styles]

    def apply_styles_to_prompt(self, prompt: str, names: list[str]) -> str:
        for style in self._selected(names):
            prompt = merge_prompts(style.prompt, prompt)
        return prompt

    def apply_negative_styles_to_prompt(self, prompt: str, names: list[str]) -> str:
        for style in self._selected(names):
            prompt = merge_prompts(style.negative_prompt, prompt)
        return prompt

    def extract_styles_from_prompt(self, prompt: str, negative_prompt: str) -> tuple[list[str], str, str]:
        """Which styles a (pasted) prompt pair was made with, and the prompts without them (A1111's rule:
        peel off, last applied first, every style whose prompt AND negative prompt both match)."""
        found: list[str] = []
        candidates = [s for s in self.styles.values() if s.prompt or s.negative_prompt]
        while True:
            for style in candidates:
                matched, positive = _strip_style_text(style.prompt, prompt)
                if not matched:
                    continue
                matched, negative = _strip_style_text(style.negative_prompt, negative_prompt)
                if matched:
                    prompt, negative_prompt = positive, negative
                    found.append(style.name)
                    candidates.remove(style)
                    break
            else:
                return list(reversed(found)), prompt, negative_prompt

    def save_style(self, style: PromptStyle) -> None:
        """Add or replace a style and write the file atomically (a crash never leaves half a file)."""
        if not style.name.strip():
            raise ValueError("a style needs a name")
        self.styles[style.name] = style
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=FIELDS, lineterminator="\n")
        writer.writeheader()
        for item in self.styles.values():
            writer.writerow({"name": item.name, "prompt": item.prompt, "negative_prompt": item.negative_prompt})
        folder = Path(self.path).parent
        folder.mkdir(parents=True, exist_ok=True)
        fd, temp = tempfile.mkstemp(prefix=".styles-", suffix=".tmp", dir=folder)
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            f.write(buffer.getvalue())
        os.replace(temp, self.path)
