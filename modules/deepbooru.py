"""A1111's `modules.deepbooru` (`deepbooru.model.start()/tag()/stop()`). This WebUI ships no DeepDanbooru model,
so tagging raises `InterrogatorUnavailable` naming what is missing; `stop` (called in `finally` blocks) does
nothing. An adapter: nothing in the core uses it."""

from __future__ import annotations

import re

from PIL import Image

from modules.interrogate import MESSAGE, InterrogatorUnavailable

re_special = re.compile(r"([\\()])")


class DeepDanbooru:
    def __init__(self) -> None:
        self.model = None

    def _unavailable(self) -> InterrogatorUnavailable:
        return InterrogatorUnavailable(MESSAGE.format(what="DeepBooru tagging", model="torch_deepdanbooru"))

    def load(self) -> None:
        raise self._unavailable()

    def start(self) -> None:
        raise self._unavailable()

    def stop(self) -> None:
        pass

    def tag(self, pil_image: Image.Image) -> str:
        raise self._unavailable()

    def tag_multi(self, pil_image: Image.Image, force_disable_ranks: bool = False) -> str:
        raise self._unavailable()


model = DeepDanbooru()
