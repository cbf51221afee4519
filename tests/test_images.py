"""Image saving (A1111 names, folders, metadata, no clobbering under concurrency) and grids."""

from __future__ import annotations

import datetime
import hashlib
import multiprocessing
import os
import threading
import types
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from PIL import Image, features

from modules.images import (
    FilenameGenerator,
    get_next_sequence_number,
    grid_rows,
    image_grid,
    publish_without_overwrite,
    sanitize_filename_part,
    save_image,
)
from modules.infotext import read_info_from_image

NOW = datetime.datetime(2024, 7, 27, 13, 45, 6)
DATE_DIR = "2024-07-27"
INFO = "a cat, 猫 🐱\nNegative prompt: blurry\nSteps: 20, Sampler: Euler a, CFG scale: 7, Seed: 123, Size: 8x8"


def solid(color: str, size: tuple[int, int] = (8, 8)) -> Image.Image:
    return Image.new("RGB", size, color)


def files_in(directory) -> list[str]:
    return sorted(os.listdir(directory))


def test_samples_get_numbered_seed_names_in_the_date_folder(tmp_path):
    first, txt = save_image(solid("red"), str(tmp_path), seed=123, prompt="a cat", info=INFO, now=NOW)
    second, _ = save_image(solid("blue"), str(tmp_path), seed=124, prompt="a cat", info=INFO, now=NOW)
    assert first == str(tmp_path / DATE_DIR / "00000-123.png")
    assert second == str(tmp_path / DATE_DIR / "00001-124.png")
    assert txt is None
    assert files_in(tmp_path / DATE_DIR) == ["00000-123.png", "00001-124.png"]
    with Image.open(second) as reopened:
        assert reopened.getpixel((0, 0)) == (0, 0, 255)


def test_next_number_is_one_above_the_highest_leading_number(tmp_path):
    folder = tmp_path / DATE_DIR
    folder.mkdir()
    for name in ["00007-x.png", "00012-y.png", "grid-0099.png", "notes.txt", ".tmp-abc.tmp", "3.png"]:
        (folder / name).write_bytes(b"")
    assert get_next_sequence_number(str(folder)) == 13
    assert get_next_sequence_number(str(folder), "grid") == 100
    assert get_next_sequence_number(str(tmp_path / "missing")) == 0
    path, _ = save_image(solid("red"), str(tmp_path), seed=5, now=NOW)
    assert os.path.basename(path) == "00013-5.png"


def test_grids_are_named_grid_and_four_digits(tmp_path):
    first, _ = save_image(solid("red"), str(tmp_path), seed=1, prompt="p", grid=True, now=NOW)
    second, _ = save_image(solid("red"), str(tmp_path), seed=1, prompt="p", grid=True, suffix="-x", now=NOW)
    third, _ = save_image(solid("red"), str(tmp_path), "grid", 1, "p", short_filename=False, now=NOW)
    # A1111 puts "-" before a non-empty decoration, even when it is only a suffix that starts with "-".
    assert [os.path.basename(p) for p in (first, second, third)] == ["grid-0000.png", "grid-0001--x.png",
                                                                     "grid-0002-1.png"]
    assert os.path.dirname(first) == str(tmp_path / DATE_DIR)


@pytest.fixture
def app_settings():
    """Registers a settings object as the application's (what shared.initialize does), restored afterwards."""
    from modules import output_writer
    from modules.options import Options

    before = output_writer.app_opts()
    opts = Options()
    output_writer.configure(opts)
    yield opts
    output_writer.configure(before)


def test_suffix_and_no_seed_and_flat_folder_names(tmp_path, app_settings):
    with_suffix, _ = save_image(solid("red"), str(tmp_path), seed=9, suffix="-before-highres-fix", now=NOW)
    no_seed, _ = save_image(solid("red"), str(tmp_path), now=NOW)
    flat_folder = tmp_path / "flat"  # not tmp_path: its "2024-07-27" folder name would count as number 2024
    # A1111: the save_to_dirs argument only picks the folder; the setting save_to_dirs picks the default pattern
    flat, _ = save_image(solid("red"), str(flat_folder), seed=9, prompt="a: cat / dog?", save_to_dirs=False, now=NOW)
    assert os.path.basename(with_suffix) == "00000-9-before-highres-fix.png"
    assert os.path.basename(no_seed) == "00001.png"
    assert flat == str(flat_folder / "00000-9.png")
    # With the setting off, A1111's default pattern is [seed]-[prompt_spaces]; unsafe characters become "_".
    app_settings.set("save_to_dirs", False)
    flat, _ = save_image(solid("red"), str(flat_folder), seed=9, prompt="a: cat / dog?", save_to_dirs=False, now=NOW)
    assert flat == str(flat_folder / "00001-9-a_ cat _ dog_.png")
    # Like A1111, a folder whose name starts with a number counts when numbering flat saves next to it.
    beside_date_folder, _ = save_image(solid("red"), str(tmp_path), seed=9, save_to_dirs=False, now=NOW)
    assert os.path.basename(beside_date_folder) == "02025-9-[prompt_spaces].png"  # no prompt: left literal


def test_filename_patterns(tmp_path):
    path, _ = save_image(solid("red"), str(tmp_path), seed=42, prompt="A photo, of a (red) fox! in snow at dusk now",
                         samples_filename_pattern="[prompt_words]-[date]-[datetime<%H%M%S>]-[steps]",
                         directories_filename_pattern="[datetime<%Y_%m>]", now=NOW)
    assert path == str(tmp_path / "2024_07" / "00000-A photo of a red fox in snow-2024-07-27-134506-[steps].png")
    job = types.SimpleNamespace(steps=20, cfg_scale=7.5, sampler_name="DPM++ 2M", batch_size=1)
    gen = FilenameGenerator(job, 7, "Cat", solid("red", (16, 24)), now=NOW)
    assert gen.apply("[seed]_[steps]_[cfg]_[sampler]_[width]x[height]_[batch_number]") == "7_20_7.5_DPM++ 2M_16x24"
    assert gen.apply("[prompt_hash<4>]-[none]-[unknown]") == hashlib.sha256(b"Cat").hexdigest()[:4] + "--[unknown]"
    aware = datetime.datetime(2024, 1, 1, 12, 0, tzinfo=datetime.UTC)
    tokyo = FilenameGenerator(None, 1, "p", None, now=aware).apply("[datetime<%H><Asia/Tokyo>]")
    assert tokyo == "21"
    assert FilenameGenerator(None, 1, "", None).apply("[prompt_words]") == "empty"


def test_sanitize_filename_part():
    assert sanitize_filename_part('  a<b>c:d"e/f\\g|h?i*j#k\tl. ', replace_spaces=False) == "a_b_c_d_e_f_g_h_i_j_k_l"
    assert sanitize_filename_part(" a b. ") == "_a_b._"  # spaces become "_" before the edges are trimmed
    assert sanitize_filename_part("a b", replace_spaces=False) == "a b"
    assert len(sanitize_filename_part("x" * 300)) == 128
    assert sanitize_filename_part(None) is None


def test_png_parameters_chunk_is_readable_and_uses_itxt_only_for_non_latin1(tmp_path):
    unicode_path, _ = save_image(solid("red"), str(tmp_path), seed=1, info=INFO, now=NOW)
    latin1_info = "café\nSteps: 1, Seed: 1, Size: 8x8"
    latin1_path, _ = save_image(solid("red"), str(tmp_path), seed=2, info=latin1_info,
                                existing_info={"extra": "kept"}, now=NOW)
    with Image.open(unicode_path) as image:
        assert image.text["parameters"] == INFO
        assert read_info_from_image(image)[0] == INFO
    with Image.open(latin1_path) as image:
        assert image.text == {"extra": "kept", "parameters": latin1_info}
    with open(unicode_path, "rb") as file:
        assert b"iTXtparameters" in file.read()
    with open(latin1_path, "rb") as file:
        raw = file.read()
        assert b"tEXtparameters" in raw and b"iTXt" not in raw


@pytest.mark.parametrize("extension", ["jpg", "webp", "avif"])
def test_lossy_formats_carry_the_info_as_exif_user_comment(tmp_path, extension):
    if not features.check({"jpg": "jpg", "webp": "webp", "avif": "avif"}[extension]):
        pytest.skip(f"this Pillow cannot write {extension}")
    rgba = Image.new("RGBA", (16, 16), (0, 200, 0, 128))
    path, _ = save_image(rgba, str(tmp_path), seed=3, info=INFO, extension=extension, now=NOW)
    assert path.endswith(f"00000-3.{extension}")
    with Image.open(path) as image:
        assert read_info_from_image(image)[0] == INFO
        raw_comment = image.getexif().get_ifd(0x8769)[0x9286]
    assert raw_comment == b"UNICODE\x00" + INFO.encode("utf_16_be")


def test_webp_too_large_falls_back_to_png(tmp_path):
    path, _ = save_image(Image.new("RGB", (16384, 1)), str(tmp_path), seed=1, extension="webp", now=NOW)
    assert path.endswith("00000-1.png")


def test_save_txt_writes_the_info_next_to_the_image(tmp_path):
    path, txt = save_image(solid("red"), str(tmp_path), seed=8, info=INFO, save_txt=True, now=NOW)
    assert txt == path[: -len(".png")] + ".txt"
    with open(txt, encoding="utf8") as file:
        assert file.read() == INFO + "\n"
    _path, no_txt = save_image(solid("red"), str(tmp_path), seed=8, info=None, save_txt=True, now=NOW)
    assert no_txt is None


def test_forced_filename_replaces_unless_asked_to_add_a_suffix(tmp_path):
    first, _ = save_image(solid("red"), str(tmp_path), forced_filename="fixed", save_to_dirs=False)
    again, _ = save_image(solid("blue"), str(tmp_path), forced_filename="fixed", save_to_dirs=False)
    kept, _ = save_image(solid("green"), str(tmp_path), forced_filename="fixed", save_to_dirs=False,
                         replace_existing=False)
    assert first == again == str(tmp_path / "fixed.png")
    assert kept == str(tmp_path / "fixed-1.png")
    with Image.open(first) as image:
        assert image.getpixel((0, 0)) == (0, 0, 255)
    assert files_in(tmp_path) == ["fixed-1.png", "fixed.png"]


def test_failed_save_leaves_no_temporary_file(tmp_path):
    with pytest.raises(ValueError, match="Unknown image file extension: '.nope'"):
        save_image(solid("red"), str(tmp_path), seed=1, extension="nope", now=NOW)
    assert files_in(tmp_path / DATE_DIR) == []


def _check_complete_and_distinct(folder, paths: list[str], expected_count: int) -> None:
    assert len(paths) == expected_count
    assert len(set(paths)) == expected_count
    assert sorted(os.path.basename(p) for p in paths) == files_in(folder)  # and no leftover temporary files
    numbers = sorted(int(os.path.basename(p).split("-")[0]) for p in paths)
    assert numbers == list(range(expected_count))
    for path in paths:
        seed = int(os.path.basename(path).split("-")[1].split(".")[0])
        with Image.open(path) as image:
            image.load()  # raises on a truncated file
            assert image.getpixel((5, 5)) == (seed, 0, 0)
            assert image.text["parameters"] == f"{INFO} #{seed}"


def test_eight_threads_saving_at_once_get_distinct_complete_files(tmp_path):
    barrier = threading.Barrier(8)

    def worker(seed: int) -> str:
        barrier.wait()  # all eight pick their number at the same moment
        path, _ = save_image(Image.new("RGB", (64, 64), (seed, 0, 0)), str(tmp_path), seed=seed,
                             info=f"{INFO} #{seed}", now=NOW)
        return path

    with ThreadPoolExecutor(max_workers=8) as pool:
        paths = list(pool.map(worker, range(8)))  # re-raises any worker's exception
    _check_complete_and_distinct(tmp_path / DATE_DIR, paths, 8)


def _save_in_child(folder: str, seed: int, barrier, results) -> None:
    barrier.wait()
    path, _ = save_image(Image.new("RGB", (64, 64), (seed, 0, 0)), folder, seed=seed, info=f"{INFO} #{seed}", now=NOW)
    results.put(path)


def test_processes_saving_at_once_get_distinct_complete_files(tmp_path):
    context = multiprocessing.get_context("fork")
    barrier = context.Barrier(4)
    results = context.Queue()
    workers = [context.Process(target=_save_in_child, args=(str(tmp_path), seed, barrier, results))
               for seed in range(4)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=30)
    assert [worker.exitcode for worker in workers] == [0, 0, 0, 0]
    paths = [results.get(timeout=5) for _ in workers]
    _check_complete_and_distinct(tmp_path / DATE_DIR, paths, 4)


@pytest.mark.parametrize("use_hard_links", [True, False])
def test_publish_without_overwrite_never_shares_a_name(tmp_path, use_hard_links):
    (tmp_path / "03.bin").write_bytes(b"existing")
    barrier = threading.Barrier(6)

    def worker(index: int) -> str:
        temp = tmp_path / f".tmp-{index}.tmp"
        temp.write_bytes(bytes([index]) * 1000)
        barrier.wait()
        return publish_without_overwrite(
            str(temp), lambda n: str(tmp_path / f"{n:02}.bin"), 3, use_hard_links=use_hard_links)

    with ThreadPoolExecutor(max_workers=6) as pool:
        published = list(pool.map(worker, range(6)))
    assert sorted(os.path.basename(p) for p in published) == ["04.bin", "05.bin", "06.bin", "07.bin", "08.bin",
                                                                "09.bin"]
    assert files_in(tmp_path) == ["03.bin", "04.bin", "05.bin", "06.bin", "07.bin", "08.bin", "09.bin"]
    assert (tmp_path / "03.bin").read_bytes() == b"existing"
    contents = sorted((tmp_path / os.path.basename(p)).read_bytes() for p in published)
    assert contents == sorted(bytes([i]) * 1000 for i in range(6))


def test_four_solid_images_make_a_two_by_two_grid_in_order():
    colors = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0)]
    grid = image_grid([Image.new("RGB", (10, 6), color) for color in colors])
    assert grid.size == (20, 12)
    assert [grid.getpixel(xy) for xy in [(2, 2), (12, 2), (2, 8), (12, 8)]] == colors
    assert [grid.getpixel(xy) for xy in [(9, 5), (19, 5), (9, 11), (19, 11)]] == colors


def test_grid_layout_rules():
    assert [grid_rows(n) for n in range(1, 10)] == [1, 1, 2, 2, 2, 2, 3, 3, 3]  # round(sqrt(n)), A1111's default
    assert grid_rows(6, batch_size=3, n_rows=0) == 3
    assert grid_rows(5, n_rows=4) == 4
    assert grid_rows(2, n_rows=5) == 2  # never more rows than images
    assert grid_rows(6, prevent_empty_spots=True) == 2
    assert grid_rows(7, prevent_empty_spots=True) == 1

    three = image_grid([solid("red"), solid("green"), solid("blue")])
    assert three.size == (16, 16)
    assert three.getpixel((12, 12)) == (255, 255, 255)  # the empty cell keeps the white background
    row = image_grid([solid("red"), solid("blue")], rows=1)
    assert row.size == (16, 8)
    assert image_grid([solid("red")] * 6, batch_size=2, n_rows=0).size == (24, 16)


def test_smaller_images_are_centred_in_their_cell():
    grid = image_grid([Image.new("RGB", (10, 10), "red"), Image.new("RGB", (4, 4), "blue")], rows=1)
    assert grid.size == (20, 10)
    assert grid.getpixel((15, 5)) == (0, 0, 255)
    assert grid.getpixel((11, 1)) == (255, 255, 255)


@pytest.mark.parametrize("use_hard_links", [True, False])
def test_sequence_numbers_stay_unique_when_the_rest_of_the_names_differ(tmp_path, use_hard_links):
    # Each worker's names carry its own seed, so without the sequence claim all six would publish number 0.
    (tmp_path / "00000-old.png").write_bytes(b"existing")
    barrier = threading.Barrier(6)

    def worker(index: int) -> str:
        temp = tmp_path / f".tmp-{index}.tmp"
        temp.write_bytes(bytes([index]) * 1000)
        barrier.wait()
        return publish_without_overwrite(str(temp), lambda n: str(tmp_path / f"{n:05}-{index}.png"), 0,
                                         use_hard_links=use_hard_links, sequence=(str(tmp_path), ""))

    with ThreadPoolExecutor(max_workers=6) as pool:
        published = list(pool.map(worker, range(6)))
    numbers = sorted(int(os.path.basename(p).split("-")[0]) for p in published)
    assert numbers == [1, 2, 3, 4, 5, 6]
    assert files_in(tmp_path) == sorted(["00000-old.png", *(os.path.basename(p) for p in published)])  # no markers
    for path in published:
        index = int(os.path.basename(path).split("-")[1].split(".")[0])
        assert Path(path).read_bytes() == bytes([index]) * 1000
