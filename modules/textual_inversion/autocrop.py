"""A1111's `modules.textual_inversion.autocrop` as extensions use it: `download_and_cache_models`, the OpenCV face
detector (YuNet) file they hand to `cv2.FaceDetectorYN`. The cropping itself belonged to A1111's training
preprocessing, which this WebUI does not have."""

from __future__ import annotations

import os

from modules import modelloader

FACE_DETECTOR_URL = ("https://github.com/opencv/opencv_zoo/blob/91fb0290f50896f38a0ab1e558b74b16bc009428/models/"
                     "face_detection_yunet/face_detection_yunet_2022mar.onnx?raw=true")
FACE_DETECTOR_FILE = "face_detection_yunet_2022mar.onnx"


def download_and_cache_models(dirname: str | None = None) -> str:
    """The face detector's path in `dirname` (default: <models>/opencv), downloaded when missing; offline, a
    ModelDownloadError says where to put the file."""
    if dirname is None:
        from modules import paths

        dirname = os.path.join(paths.models_path, "opencv")
    return modelloader.load_file_from_url(FACE_DETECTOR_URL, model_dir=dirname, file_name=FACE_DETECTOR_FILE)
