"""The ControlNet preprocessors that run a network ("annotators"): HED, PiDiNet, lineart, MiDaS, NormalBae, MLSD,
OpenPose, through the `controlnet_aux` package's model classes.

Weights are never downloaded: each preprocessor needs the files of `ANNOTATOR_FILES` (as published in the
lllyasviel/Annotators repository, the ones sd-webui-controlnet downloads) in the folder the caller passes (the
WebUI's `models/ControlNet/annotators/`) or one subfolder down (the extension's `annotator/downloads/` copied over);
a missing one raises `MissingAnnotatorError` naming it and the folder.

The files are pickles. They are read here with the restricted unpickler (`modules.models.safe_load.load_pickle`:
tensors and plain containers only) and loaded into networks built from controlnet_aux's classes, never through
controlnet_aux's own `from_pretrained` (which calls `torch.load` itself and may try the Hub). Loaded detectors are
kept in a small LRU cache (the last two), keyed by files, their modification times and device.
"""

from __future__ import annotations

import functools
import os
import threading
import types
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import numpy as np

WEIGHTS_SOURCE = "lllyasviel/Annotators"
CACHE_SIZE = 2

HED = "ControlNetHED.pth"
PIDINET = "table5_pidinet.pth"
MIDAS = "dpt_hybrid-midas-501f0c75.pt"
BODY, HAND, FACE = "body_pose_model.pth", "hand_pose_model.pth", "facenet.pth"

# Preprocessor name -> the weight files it reads.
ANNOTATOR_FILES: dict[str, tuple[str, ...]] = {
    "depth_midas": (MIDAS,),
    "normal_midas": (MIDAS,),
    "normal_bae": ("scannet.pt",),
    "openpose": (BODY,),
    "openpose_face": (BODY, FACE),
    "openpose_faceonly": (BODY, FACE),  # the face is found from the body's keypoints
    "openpose_hand": (BODY, HAND),
    "openpose_full": (BODY, HAND, FACE),
    "lineart_realistic": ("sk_model.pth",),
    "lineart_coarse": ("sk_model2.pth",),
    "lineart_anime": ("netG.pth",),
    "softedge_hed": (HED,),
    "softedge_hedsafe": (HED,),
    "scribble_hed": (HED,),
    "softedge_pidinet": (PIDINET,),
    "softedge_pidisafe": (PIDINET,),
    "scribble_pidinet": (PIDINET,),
    "t2ia_sketch_pidi": (PIDINET,),
    "mlsd": ("mlsd_large_512_fp32.pth",),
}


class MissingAnnotatorError(FileNotFoundError):
    """An annotator weight file is not in the annotators folder; the message names the file and the folder."""


class AnnotatorUnavailableError(RuntimeError):
    """The controlnet_aux package, which holds the annotator networks, is not installed."""


def find_weight_file(folder: str, filename: str) -> str | None:
    """`folder/filename`, else `folder/<subfolder>/filename` (the extension keeps its downloads one folder per
    annotator: `annotator/downloads/hed/ControlNetHED.pth`, so that folder can be copied over as it is)."""
    direct = os.path.join(folder, filename)
    if os.path.isfile(direct):
        return direct
    try:
        subfolders = sorted(entry.path for entry in os.scandir(folder) if entry.is_dir())
    except OSError:
        return None
    return next((os.path.join(sub, filename) for sub in subfolders if os.path.isfile(os.path.join(sub, filename))),
                None)


def weight_paths(name: str, annotators_dir: str) -> tuple[str, ...]:
    """The paths of the files preprocessor `name` needs; MissingAnnotatorError for the first one absent."""
    folder = os.path.abspath(annotators_dir or ".")
    paths = []
    for filename in ANNOTATOR_FILES[name]:
        path = find_weight_file(folder, filename)
        if path is None:
            raise MissingAnnotatorError(f'Preprocessor "{name}" needs {filename}: put it in {folder} '
                                        f"(from {WEIGHTS_SOURCE})")
        paths.append(path)
    return tuple(paths)


def read_weights(path: str) -> dict[str, Any]:
    """A weight file's contents through the restricted unpickler (nothing in the file can run)."""
    from modules.models import safe_load

    loaded = safe_load.load_pickle(path, what="ControlNet annotator weights")
    if not isinstance(loaded, dict):
        raise safe_load.CheckpointLoadError(f"{os.path.basename(path)}: not a state dict ({type(loaded).__name__})")
    return loaded


def without_prefix(state_dict: dict[str, Any], prefix: str = "module.") -> dict[str, Any]:
    """Keys with a DataParallel-style prefix removed (checkpoints saved from a wrapped network carry it)."""
    return {key[len(prefix):] if key.startswith(prefix) else key: value for key, value in state_dict.items()}


def _ready(network: Any, state_dict: dict[str, Any]) -> Any:
    network.load_state_dict(state_dict)
    return network.float().eval()


# ---------------------------------------------------------------------------------------------------------------
# Builders: weight paths -> a controlnet_aux detector. Imports are local: controlnet_aux loads slowly (~5 s).


def _import_aux(module: str) -> types.ModuleType:
    import importlib

    try:
        return importlib.import_module(f"controlnet_aux.{module}")
    except ModuleNotFoundError as e:
        if e.name and e.name.split(".")[0] == "controlnet_aux":
            raise AnnotatorUnavailableError(
                "This ControlNet preprocessor needs the controlnet_aux package: pip install controlnet-aux") from e
        raise


def build_hed(paths: tuple[str, ...]) -> Any:
    hed = _import_aux("hed")
    return hed.HEDdetector(_ready(hed.ControlNetHED_Apache2(), read_weights(paths[0])))


def build_pidinet(paths: tuple[str, ...]) -> Any:
    pidi, pidi_model = _import_aux("pidi"), _import_aux("pidi.model")
    loaded = read_weights(paths[0])
    return pidi.PidiNetDetector(_ready(pidi_model.pidinet(), without_prefix(loaded.get("state_dict", loaded))))


def build_lineart(paths: tuple[str, ...]) -> Any:
    lineart = _import_aux("lineart")
    network = _ready(lineart.Generator(3, 1, 3), read_weights(paths[0]))
    return lineart.LineartDetector(network, network)  # one file per detector: fine and coarse are separate files


def build_lineart_anime(paths: tuple[str, ...]) -> Any:
    import torch

    anime = _import_aux("lineart_anime")
    norm_layer = functools.partial(torch.nn.InstanceNorm2d, affine=False, track_running_stats=False)
    network = anime.UnetGenerator(3, 1, 8, 64, norm_layer=norm_layer, use_dropout=False)
    return anime.LineartAnimeDetector(_ready(network, without_prefix(read_weights(paths[0]))))


def build_mlsd(paths: tuple[str, ...]) -> Any:
    mlsd, large = _import_aux("mlsd"), _import_aux("mlsd.models.mbv2_mlsd_large")
    return mlsd.MLSDdetector(_ready(large.MobileV2_MLSD_Large(), read_weights(paths[0])))


def build_normal_bae(paths: tuple[str, ...]) -> Any:
    normalbae, nnet = _import_aux("normalbae"), _import_aux("normalbae.nets.NNET")
    # The configuration of the scannet.pt checkpoint (controlnet_aux's and the extension's).
    settings = types.SimpleNamespace(mode="client", architecture="BN", pretrained="scannet", sampling_ratio=0.4,
                                     importance_ratio=0.7)
    loaded = read_weights(paths[0])
    return normalbae.NormalBaeDetector(_ready(nnet.NNET(settings), without_prefix(loaded.get("model", loaded))))


def build_midas(paths: tuple[str, ...]) -> Any:
    midas, dpt = _import_aux("midas"), _import_aux("midas.midas.dpt_depth")
    loaded = read_weights(paths[0])
    if "optimizer" in loaded:  # a training checkpoint keeps the weights under "model"
        loaded = loaded["model"]
    network = dpt.DPTDepthModel(path=None, backbone="vitb_rn50_384", non_negative=True)
    return midas.MidasDetector(_ready(network, loaded))


def _estimator(cls: type, network: Any, state_dict: dict[str, Any], **attributes: Any) -> Any:
    """An OpenPose Body/Hand/Face holding `network` loaded from `state_dict`; built without its __init__, which
    would torch.load the file itself."""
    estimator = cls.__new__(cls)
    estimator.model = _ready(network, state_dict)
    for key, value in attributes.items():
        setattr(estimator, key, value)
    return estimator


def _body_keys(network: Any, state_dict: dict[str, Any]) -> dict[str, Any]:
    """The OpenPose body/hand files name each weight without the network's first level (model0.conv1_1 ->
    conv1_1): map every key of the network to the file's."""
    return {key: state_dict[key.split(".", 1)[1]] for key in network.state_dict()}


def build_openpose(paths: tuple[str, ...]) -> Any:
    open_pose, model, face = _import_aux("open_pose"), _import_aux("open_pose.model"), _import_aux("open_pose.face")
    by_name = {os.path.basename(p): p for p in paths}
    body_net = model.bodypose_model()
    body = _estimator(open_pose.Body, body_net, _body_keys(body_net, read_weights(by_name[BODY])))
    hand = face_estimator = None
    if HAND in by_name:
        hand_net = model.handpose_model()
        hand = _estimator(open_pose.Hand, hand_net, _body_keys(hand_net, read_weights(by_name[HAND])))
    if FACE in by_name:
        face_estimator = _estimator(open_pose.Face, face.FaceNet(), read_weights(by_name[FACE]),
                                    inference_size=face.params["inference_img_size"],
                                    sigma=face.params["gaussian_sigma"],
                                    threshold=face.params["heatmap_peak_thresh"])
    return open_pose.OpenposeDetector(body, hand, face_estimator)


# ---------------------------------------------------------------------------------------------------------------
# Running: preprocessor name -> (builder, call on the detector)

Call = Callable[[Any, np.ndarray, dict[str, Any], float, float], Any]


def _plain(**extra: Any) -> Call:
    return lambda detector, image, size, a, b: detector(image, **size, **extra)


def _pose(hand: bool, face: bool, body: bool = True) -> Call:
    return _plain(include_body=body, include_hand=hand, include_face=face)


RUNNERS: dict[str, tuple[Callable[[tuple[str, ...]], Any], Call]] = {
    "softedge_hed": (build_hed, _plain()),
    "softedge_hedsafe": (build_hed, _plain(safe=True)),
    "scribble_hed": (build_hed, _plain(scribble=True)),
    "softedge_pidinet": (build_pidinet, _plain()),
    "softedge_pidisafe": (build_pidinet, _plain(safe=True)),
    "scribble_pidinet": (build_pidinet, _plain(scribble=True)),
    "t2ia_sketch_pidi": (build_pidinet, _plain(apply_filter=True)),
    "lineart_realistic": (build_lineart, _plain()),
    "lineart_coarse": (build_lineart, _plain(coarse=True)),
    "lineart_anime": (build_lineart_anime, _plain()),
    "mlsd": (build_mlsd, lambda detector, image, size, a, b: detector(image, thr_v=a, thr_d=b, **size)),
    "normal_bae": (build_normal_bae, _plain()),
    "depth_midas": (build_midas, _plain()),
    "normal_midas": (build_midas, lambda detector, image, size, a, b:
                     detector(image, bg_th=a, depth_and_normal=True, **size)[1]),
    "openpose": (build_openpose, _pose(hand=False, face=False)),
    "openpose_face": (build_openpose, _pose(hand=False, face=True)),
    "openpose_faceonly": (build_openpose, _pose(hand=False, face=True, body=False)),
    "openpose_hand": (build_openpose, _pose(hand=True, face=False)),
    "openpose_full": (build_openpose, _pose(hand=True, face=True)),
}

def _to_device(detector: Any, device: str) -> Any:
    """`detector` moved to `device`. OpenposeDetector.to would fail on the hand/face estimators it was built
    without, so its estimators are moved one by one."""
    estimators = [getattr(detector, f"{part}_estimation", None) for part in ("body", "hand", "face")]
    if not any(estimators):
        return detector.to(device)
    for estimator in estimators:
        if estimator is not None:
            estimator.to(device)
    return detector


_cache: OrderedDict[tuple, Any] = OrderedDict()
_cache_lock = threading.Lock()


def load_detector(name: str, annotators_dir: str, device: str = "cpu") -> Any:
    """The detector of preprocessor `name`, from the LRU cache or built from its files (then moved to `device`)."""
    paths = weight_paths(name, annotators_dir)
    builder = RUNNERS[name][0]
    key = (builder.__name__, paths, tuple(os.path.getmtime(p) for p in paths), str(device))
    with _cache_lock:
        if key in _cache:
            _cache.move_to_end(key)
            return _cache[key]
        detector = builder(paths)
        if str(device) != "cpu":
            detector = _to_device(detector, device)
        _cache[key] = detector
        while len(_cache) > CACHE_SIZE:
            _cache.popitem(last=False)
        return detector


def clear_cache() -> None:
    """Drop every loaded detector (frees their memory)."""
    with _cache_lock:
        _cache.clear()


def detect(name: str, image: np.ndarray, threshold_a: float, threshold_b: float, annotators_dir: str,
           device: str = "cpu") -> np.ndarray:
    """Run preprocessor `name`'s network on `image` (HxWx3 uint8, sides multiples of 64) and return its uint8
    map at the same size."""
    detector = load_detector(name, annotators_dir, device)
    height, width = image.shape[:2]
    # The detectors scale the short side to detect_resolution and round to multiples of 64: the picture's own
    # size keeps them from resizing at all.
    size = {"detect_resolution": min(height, width), "image_resolution": min(height, width), "output_type": "np"}
    result = np.asarray(RUNNERS[name][1](detector, image, size, threshold_a, threshold_b))
    if result.shape[:2] != (height, width):
        import cv2

        result = cv2.resize(result, (width, height), interpolation=cv2.INTER_LINEAR)
    return result.astype(np.uint8, copy=False)
