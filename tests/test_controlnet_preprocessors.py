"""ControlNet preprocessors (issue 16): sd-webui-controlnet's module names, sliders and control types, the control
maps of the weight-free ones on drawn pictures, and the annotator path (weights read offline from a folder, through
the restricted unpickler) on tiny random-weight files built here."""

from __future__ import annotations

import os
import pickle
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "extensions-builtin" / "sd-webui-controlnet"))

from lib_controlnet import annotators, preprocessors  # noqa: E402
from lib_controlnet.preprocessors import get  # noqa: E402


def white_square(size: int = 256, start: int = 64, stop: int = 192) -> np.ndarray:
    picture = np.zeros((size, size, 3), np.uint8)
    picture[start:stop, start:stop] = 255
    return picture


def black_line_on_white(size: int = 128, row: int = 64) -> np.ndarray:
    picture = np.full((size, size, 3), 255, np.uint8)
    picture[row - 1:row + 2, 16:112] = 0
    return picture


# ---------------------------------------------------------------------------------------------------------------
# Names, sliders, aliases, control types


def test_names_order_and_sliders_follow_the_extension():
    names = list(preprocessors.PREPROCESSORS)
    assert names[0] == "none"
    # priority 100 first, then by label descending (the extension's get_sorted_preprocessors)
    assert names.index("tile_resample") < names.index("canny") < names.index("invert (from white bg & black line)")
    for name in ("canny", "invert (from white bg & black line)", "threshold", "scribble_xdog", "blur_gaussian",
                 "tile_resample", "t2ia_color_grid", "shuffle", "reference_only", "inpaint_only",
                 "inpaint_global_harmonious", "inpaint_only+lama", "depth_midas", "openpose_full", "softedge_hed",
                 "lineart_standard (from white bg & black line)", "lineart_realistic", "mlsd", "normal_bae"):
        assert name in preprocessors.PREPROCESSORS, name
    canny = get("canny")
    assert canny.resolution == ("Resolution", 64, 2048, 512, 8)
    assert (canny.threshold_a.label, canny.threshold_a.default) == ("Low Threshold", 100)
    assert canny.threshold_b[:4] == ("High Threshold", 1, 255, 200)
    assert get("scribble_xdog").threshold_a[:4] == ("XDoG Threshold", 1, 64, 32)
    assert get("mlsd").threshold_b[:4] == ("MLSD Distance Threshold", 0.01, 20.0, 0.1)
    assert get("invert (from white bg & black line)").resolution is None
    assert get("canny").needs_files == () and get("softedge_hed").needs_files == ("ControlNetHED.pth",)
    assert get("openpose_full").needs_files == ("body_pose_model.pth", "hand_pose_model.pth", "facenet.pth")
    assert all(get(n).is_reference for n in ("reference_only", "reference_adain", "reference_adain+attn"))
    assert all(get(n).is_inpaint for n in ("inpaint_only", "inpaint_global_harmonious", "inpaint_only+lama"))
    assert not get("canny").is_inpaint and not get("canny").is_reference


def test_aliases_resolve_the_extensions_internal_and_older_names():
    assert get("depth") is get("depth_midas")
    assert get("invert") is get("invert (from white bg & black line)")
    assert get("inpaint").name == "inpaint_global_harmonious"
    assert get("hed").name == "softedge_hed" and get("pidinet_scribble").name == "scribble_pidinet"
    assert get("color").name == "t2ia_color_grid" and get("lineart").name == "lineart_realistic"
    assert get("None").name == "none" and get("fake_scribble").name == "scribble_hed"
    assert preprocessors.ALIASES["normal_map"] == "normal_midas"
    # /controlnet/module_list: internal keys by default, shown names with alias_names
    assert "depth" in preprocessors.module_list() and "depth_midas" in preprocessors.module_list(alias_names=True)
    detail = preprocessors.module_detail()["canny"]
    assert detail["model_free"] is False
    assert [s["name"] for s in detail["sliders"]] == ["Resolution", "Low Threshold", "High Threshold"]
    assert preprocessors.module_detail(alias_names=True)["reference_only"]["model_free"] is True


def test_unknown_name_lists_the_valid_ones():
    with pytest.raises(ValueError) as error:
        get("cany")
    message = str(error.value)
    assert "'cany'" in message and "canny" in message and "depth_midas" in message


def test_control_types_answer():
    types = preprocessors.control_types()
    assert list(types)[0] == "All" and list(types)[1:] == sorted(list(types)[1:])
    assert types["Canny"] == {"module_list": ["none", "canny", "invert (from white bg & black line)"],
                              "model_list": ["None"], "default_option": "canny", "default_model": "None"}
    assert types["Depth"]["default_option"] == "depth_midas"
    assert types["OpenPose"]["default_option"] == "openpose_full"
    assert types["Inpaint"]["module_list"][:2] == ["none", "inpaint_only"]
    assert types["All"]["module_list"] == [p.label for p in preprocessors.PREPROCESSORS.values()]
    assert types["All"]["default_option"] == "none"
    assert all(entry["module_list"][0] == "none" for entry in types.values())


# ---------------------------------------------------------------------------------------------------------------
# Weight-free maps


def test_canny_draws_the_squares_border():
    result = get("canny").run(white_square(), 256, 100, 200)
    assert result.shape == (256, 256, 3) and result.dtype == np.uint8
    assert (result[:, :, 0] == result[:, :, 1]).all() and set(np.unique(result)) == {0, 255}
    edges = result[:, :, 0] > 0
    assert edges.sum() == 4 * 127  # one closed one-pixel ring around the 128-pixel square
    ys, xs = np.nonzero(edges)
    # every edge pixel lies on the square's border (the last row/column inside or the first outside)
    on_border = (np.isin(ys, (63, 64, 191, 192)) & (xs >= 63) & (xs <= 192)) | \
                (np.isin(xs, (63, 64, 191, 192)) & (ys >= 63) & (ys <= 192))
    assert on_border.all()
    for side in (edges[63:65, 70:186], edges[191:193, 70:186], edges[70:186, 63:65].T, edges[70:186, 191:193].T):
        assert side.any(axis=0).all()  # each side traced without a gap
    assert not edges[70:186, 70:186].any() and not edges[:60].any()


def test_canny_thresholds_change_the_result():
    picture = np.zeros((128, 128, 3), np.uint8)
    picture[:, 64:] = 255  # a strong edge
    picture[:, :32] = 30  # a weak edge at column 32
    strong_only = get("canny").run(picture, 128, 100, 200)[:, :, 0] > 0
    both = get("canny").run(picture, 128, 5, 20)[:, :, 0] > 0
    assert strong_only[:, 60:68].any() and not strong_only[:, 28:36].any()
    assert both[:, 28:36].any(axis=1).all() and both.sum() > strong_only.sum()
    defaults = get("canny").run(picture)  # None: the sliders' defaults (512, 100, 200)
    assert defaults.shape == (512, 512, 3)


def test_resolution_sets_the_short_side():
    picture = np.zeros((300, 400, 3), np.uint8)
    assert get("canny").run(picture, 256).shape == (256, 341, 3)
    assert get("threshold").run(picture, 512).shape == (512, 683, 3)
    assert get("blur_gaussian").run(picture[:, :200], 100).shape == (150, 100, 3)
    # no resolution slider: the input size
    assert get("invert").run(picture, 256).shape == (300, 400, 3)


def test_invert_threshold_and_input_channels():
    gradient = np.tile(np.arange(256, dtype=np.uint8), (4, 1))
    inverted = get("invert").run(gradient)
    assert inverted.shape == (4, 256, 3) and (inverted[:, :, 1] == 255 - gradient).all()
    rgba = np.zeros((2, 2, 4), np.uint8)
    rgba[0, 0] = (10, 20, 30, 255)  # opaque; the others transparent, so white (as the extension's HWC3)
    assert get("none").run(rgba)[0, 0].tolist() == [10, 20, 30] and get("none").run(rgba)[1, 1].tolist() == [255] * 3
    binary = get("threshold").run(np.dstack([gradient] * 3), 4, 127)  # short side 4: the size kept
    assert (binary[:, 128:] == 255).all() and (binary[:, :128] == 0).all()
    assert (get("threshold").run(np.dstack([gradient] * 3), 4, 200)[:, :201] == 0).all()
    with pytest.raises(ValueError, match="uint8"):
        get("canny").run(np.zeros((8, 8, 3), np.float32))


def test_color_grid_is_one_colour_per_64_pixel_cell():
    picture = np.zeros((512, 512, 3), np.uint8)
    picture[:256, :256] = (255, 0, 0)
    picture[:256, 256:] = (0, 255, 0)
    picture[256:, :256] = (0, 0, 255)
    picture[256:, 256:] = (200, 200, 200)
    grid = get("t2ia_color_grid").run(picture, 512)
    assert grid.shape == (512, 512, 3)
    cells = grid.reshape(8, 64, 8, 64, 3)
    assert (cells == cells[:, :1, :, :1]).all()  # constant within every 64x64 cell
    assert grid[0, 0].tolist() == [255, 0, 0] and grid[511, 511].tolist() == [200, 200, 200]
    assert grid[0, 511].tolist() == [0, 255, 0] and grid[511, 0].tolist() == [0, 0, 255]


def test_shuffle_is_deterministic_per_seed():
    rng = np.random.default_rng(1)
    picture = rng.integers(0, 256, (256, 256, 3), dtype=np.uint8)
    first = get("shuffle").run(picture, seed=7)
    assert first.shape == (512, 512, 3)  # fixed at 512, as the extension
    assert (get("shuffle").run(picture, seed=7) == first).all()
    assert (get("shuffle").run(picture, seed=8) != first).any()
    assert (get("shuffle").run(picture) == get("shuffle").run(picture, seed=0)).all()
    flat = np.full((100, 100, 3), 77, np.uint8)
    assert (get("shuffle").run(flat, seed=3) == 77).all()  # moves pixels, never invents colours


def test_blur_tile_and_recolor():
    picture = np.zeros((128, 128, 3), np.uint8)
    picture[::8] = 255  # stripes
    light = get("blur_gaussian").run(picture, 128, 1.0)
    heavy = get("blur_gaussian").run(picture, 128, 9.0)
    assert heavy.std() < light.std() < picture.std()
    assert abs(float(heavy.mean()) - float(picture.mean())) < 2.0  # blurring keeps the average
    assert (get("tile_resample").run(picture, 512, 1.0) == picture).all()
    assert get("tile_resample").run(picture, 512, 2.0).shape == (64, 64, 3)
    assert get("tile_resample").run(picture, 512, 4.0).shape == (32, 32, 3)
    gray = get("recolor_luminance").run(np.full((4, 4, 3), 255, np.uint8))
    assert (gray == 255).all()
    darker = get("recolor_intensity").run(np.full((4, 4, 3), 128, np.uint8), None, 2.0)
    assert darker[0, 0].tolist() == [64, 64, 64]


def test_xdog_and_lineart_standard_find_a_drawn_line():
    picture = black_line_on_white()
    xdog = get("scribble_xdog").run(picture, 128)[:, :, 0]
    assert set(np.unique(xdog)) == {0, 255}
    assert xdog[63:66, 20:108].all() and not xdog[:50].any() and not xdog[80:].any()
    assert (get("scribble_xdog").run(picture, 128, 64)[:, :, 0] > 0).sum() <= (xdog > 0).sum()
    lines = get("lineart_standard").run(picture, 128)[:, :, 0]
    assert lines[64, 20:108].min() > 100 and lines[:50].max() == 0 and lines[80:].max() == 0


def test_reference_returns_the_picture():
    picture = np.random.default_rng(2).integers(0, 256, (40, 60, 3), dtype=np.uint8)
    for name in ("reference_only", "reference_adain", "reference_adain+attn", "tile_colorfix"):
        assert (get(name).run(picture, 512, 0.5) == picture).all()


def test_inpaint_hint_marks_masked_pixels_minus_one():
    picture = np.full((32, 48, 3), 102, np.uint8)
    mask = np.zeros((32, 48), np.uint8)
    mask[8:16, 10:20] = 255
    hint = get("inpaint_only").run(picture, mask=mask)
    assert hint.dtype == np.float32 and hint.shape == (32, 48, 3)
    assert (hint[8:16, 10:20] == -1.0).all()
    assert np.allclose(hint[mask == 0], 0.4)
    rgba = np.dstack([picture, mask])  # the extension's way: the mask as alpha
    assert (get("inpaint_global_harmonious").run(rgba) == hint).all()
    assert (get("inpaint_only+lama").run(picture, mask=mask > 0) == hint).all()
    with pytest.raises(ValueError, match="need a mask"):
        get("inpaint_only").run(picture)


# ---------------------------------------------------------------------------------------------------------------
# Annotators: weights from the folder, never downloaded


def test_missing_annotator_file_names_file_and_folder(tmp_path):
    with pytest.raises(preprocessors.MissingAnnotatorError) as error:
        get("softedge_hed").run(white_square(), 256, annotators_dir=str(tmp_path))
    assert isinstance(error.value, FileNotFoundError)
    assert str(error.value) == (f'Preprocessor "softedge_hed" needs ControlNetHED.pth: put it in {tmp_path} '
                                "(from lllyasviel/Annotators)")
    (tmp_path / "body_pose_model.pth").write_bytes(b"")
    with pytest.raises(preprocessors.MissingAnnotatorError, match="needs hand_pose_model.pth"):
        get("openpose_hand").run(white_square(), 256, annotators_dir=str(tmp_path))


@pytest.fixture(scope="module")
def pidinet_dir(tmp_path_factory):
    """A table5_pidinet.pth of random weights, saved as the published file is (under "state_dict", with the
    DataParallel "module." prefix)."""
    pytest.importorskip("controlnet_aux")
    import torch
    from controlnet_aux.pidi.model import pidinet

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("annotators")
    state = {f"module.{key}": value for key, value in pidinet().state_dict().items()}
    torch.save({"state_dict": state}, folder / "table5_pidinet.pth")
    return folder


def test_annotator_runs_offline_from_a_local_file(pidinet_dir, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    annotators.clear_cache()
    picture = np.random.default_rng(3).integers(0, 256, (150, 200, 3), dtype=np.uint8)
    soft = get("softedge_pidinet").run(picture, 128, annotators_dir=str(pidinet_dir))
    assert soft.shape == (128, 171, 3) and soft.dtype == np.uint8
    assert (soft[:, :, 0] == soft[:, :, 2]).all() and soft.std() > 0
    assert (get("pidinet").run(picture, 128, annotators_dir=str(pidinet_dir)) == soft).all()  # same weights
    scribble = get("scribble_pidinet").run(picture, 128, annotators_dir=str(pidinet_dir))
    assert set(np.unique(scribble)) <= {0, 255}
    detector = annotators.load_detector("softedge_pidinet", str(pidinet_dir))
    assert annotators.load_detector("t2ia_sketch_pidi", str(pidinet_dir)) is detector  # cached, one load
    assert next(detector.netNetwork.parameters()).device.type == "cpu"


def test_annotator_cache_keeps_two(pidinet_dir, tmp_path):
    pytest.importorskip("controlnet_aux")
    annotators.clear_cache()
    folders = []
    for index in range(3):
        folder = tmp_path / str(index)
        folder.mkdir()
        os.link(pidinet_dir / "table5_pidinet.pth", folder / "table5_pidinet.pth")
        folders.append(str(folder))
    first = annotators.load_detector("softedge_pidinet", folders[0])
    annotators.load_detector("softedge_pidinet", folders[1])
    assert annotators.load_detector("softedge_pidinet", folders[0]) is first
    annotators.load_detector("softedge_pidinet", folders[2])  # evicts folders[1], the least recently used
    assert len(annotators._cache) == 2
    assert annotators.load_detector("softedge_pidinet", folders[0]) is first


def test_annotator_files_in_the_extensions_download_layout_are_found(pidinet_dir, tmp_path):
    """sd-webui-controlnet keeps one folder per annotator (annotator/downloads/pidinet/table5_pidinet.pth)."""
    (tmp_path / "pidinet").mkdir()
    os.link(pidinet_dir / "table5_pidinet.pth", tmp_path / "pidinet" / "table5_pidinet.pth")
    assert annotators.weight_paths("softedge_pidinet", str(tmp_path)) == (
        str(tmp_path / "pidinet" / "table5_pidinet.pth"),)
    picture = np.zeros((64, 64, 3), np.uint8)
    assert get("softedge_pidinet").run(picture, 64, annotators_dir=str(tmp_path)).shape == (64, 64, 3)


class _RunsCode:
    def __reduce__(self):
        return (os.getcwd, ())


def test_annotator_file_that_would_run_code_is_refused(tmp_path):
    from modules.models.safe_load import CheckpointLoadError

    (tmp_path / "ControlNetHED.pth").write_bytes(pickle.dumps({"weight": _RunsCode()}, protocol=2))
    with pytest.raises(CheckpointLoadError, match="refused to load"):
        get("softedge_hed").run(white_square(), 256, annotators_dir=str(tmp_path))
