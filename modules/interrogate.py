"""A1111's `modules.interrogate` (CLIP/BLIP captions, `shared.interrogator`). This WebUI ships no interrogation
model, so every call that would caption an image raises `InterrogatorUnavailable` naming what is missing; calls
that only free memory do nothing. An adapter: nothing in the core uses it."""

from __future__ import annotations

from typing import Any

from PIL import Image

MESSAGE = ("{what} is not available in this WebUI: it ships no {model} model (A1111 downloads it on first use). "
           "Use an extension that brings its own tagger/captioner, or POST /sdapi/v1/interrogate reports the same.")


class InterrogatorUnavailable(RuntimeError):
    """Interrogation was asked for, and no model is installed for it."""


Category = tuple[str, int, list[str]]


class InterrogateModels:
    """A1111's CLIP interrogator interface (`interrogate`, `load`, `unload`, `send_*_to_ram`, `categories`)."""

    blip_model = None
    clip_model = None
    clip_preprocess = None
    dtype = None
    running_on_cpu = None

    def __init__(self, content_dir: str = "interrogate") -> None:
        self.content_dir = content_dir
        self.loaded_categories: list[Category] | None = None
        self.skip_categories: list[str] = []

    def _unavailable(self) -> InterrogatorUnavailable:
        return InterrogatorUnavailable(MESSAGE.format(what="CLIP interrogation", model="BLIP/CLIP"))

    def categories(self) -> list[Category]:
        return []

    def create_fake_fairscale(self) -> None:
        pass

    def load_blip_model(self) -> Any:
        raise self._unavailable()

    def load_clip_model(self) -> Any:
        raise self._unavailable()

    def load(self) -> None:
        raise self._unavailable()

    def send_clip_to_ram(self) -> None:
        pass

    def send_blip_to_ram(self) -> None:
        pass

    def unload(self) -> None:
        pass

    def rank(self, image_features: Any, text_array: list[str], top_count: int = 1) -> list[tuple[str, float]]:
        raise self._unavailable()

    def generate_caption(self, pil_image: Image.Image) -> str:
        raise self._unavailable()

    def interrogate(self, pil_image: Image.Image) -> str:
        raise self._unavailable()


interrogator = InterrogateModels()
