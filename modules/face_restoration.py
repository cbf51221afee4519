"""A1111's `modules.face_restoration`: the `FaceRestoration` base class that face restorers (extensions' own, such
as CodeFormer/GFPGAN ports) subclass and add to `shared.face_restorers`, and `restore_faces`, which runs the one
the `face_restoration_model` setting names (the first one when the setting is unset). With none registered,
`restore_faces` returns the image unchanged, as A1111 does. An adapter: nothing in the core uses it."""

from __future__ import annotations

import numpy as np

from modules import shared


class FaceRestoration:
    def name(self) -> str:
        return "None"

    def restore(self, np_image: np.ndarray) -> np.ndarray:
        return np_image


def restore_faces(np_image: np.ndarray) -> np.ndarray:
    """`np_image` (H x W x 3, uint8 RGB) through the chosen face restorer."""
    # A1111's setting names the restorer (default "CodeFormer", which does not ship here): when the named one is not
    # registered, an extension's restorer is used rather than silently none
    wanted = getattr(shared.opts, "face_restoration_model", None)
    restorers = [r for r in shared.face_restorers if r.name() == wanted] or list(shared.face_restorers)
    return restorers[0].restore(np_image) if restorers else np_image
