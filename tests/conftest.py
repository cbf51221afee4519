"""Shared fixtures: offline environment, tiny checkpoints of every family, an initialised app in a temp dir, the
real servers shared by the run; and the test tiers (markers), xdist groups and per-test timeouts, assigned here.

Tiers (exactly one per test; `bash run_tests.sh -m unit` is the quick loop):
  unit         pure logic: no model, no server, no browser
  integration  loads a model (even a tiny one) or starts a real server
  browser      drives Debian's Chromium
  slow         the few tests that take over ~10 s on an idle 2-core machine (most need the trained demo model)
A test file may set its own tier with `pytestmark = pytest.mark.<tier>`, a test with a decorator (the closest one
wins); every other test is given one below, from its file and the fixtures it uses.
"""

from __future__ import annotations

import functools
import os
import socket

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
os.environ.setdefault("TQDM_DISABLE", "1")

# Torch threads. Under pytest-xdist (run_tests.sh) each worker is a process of its own and gets one thread, and so
# do the servers the tests start (OMP_NUM_THREADS is inherited): the models here are tiny, and OpenMP threads that
# wait for each other on an oversubscribed machine make a step many times slower (3 txt2img jobs: 1.0 s with one
# thread, 13.5 s with two, on a 2-core machine also running other work). Without xdist: 2 threads, as before.
# WEBUI_TEST_THREADS sets the number.
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
_THREADS = int(os.environ.get("WEBUI_TEST_THREADS") or (1 if _WORKERS > 1 else min(2, os.cpu_count() or 1)))
if _WORKERS > 1 or os.environ.get("WEBUI_TEST_THREADS"):
    os.environ["OMP_NUM_THREADS"] = str(_THREADS)

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(_THREADS)

TESTS = Path(__file__).resolve().parent
TIERS = ("unit", "integration", "browser", "slow")
_TIER = pytest.StashKey[str]()

# --- tiers --------------------------------------------------------------------------------------------------------
# Files whose tests are pure logic unless a test uses a model or server fixture (or starts a server itself).
UNIT_FILES = {
    "test_api_hardening.py", "test_auth.py", "test_cmd_args.py", "test_hashes.py", "test_infotext.py",
    "test_job_ownership.py", "test_masking.py", "test_options.py", "test_prompt_parser.py",
    "test_prompt_schedule.py", "test_rng.py", "test_samplers.py", "test_security_http.py", "test_styles.py",
    "test_tokenizer.py", "test_untrusted_files.py", "test_textual_inversion.py", "test_controlnet_units.py",
    "test_controlnet_preprocessors.py",
}
# Any other file is `integration`: its tests build or load models (tiny ones included) or talk to a real server.
# Fixtures that load a model or start a server make a test `integration` wherever it is.
MODEL_OR_SERVER_FIXTURES = {
    "app", "tiny_app", "tiny_checkpoints", "webui_server", "webui_api_server", "server", "api_server", "ui_server",
    "cors_server", "killed", "restarted", "models", "unet", "vae", "checkpoints", "ckpts", "medvram_model",
    "decoded", "encoded", "built_ins", "script_env", "recorder",
}
BROWSER_FIXTURES = {"page"}
# Words in a test's own source that mean it drives a browser, or loads a model or starts a server (webui.py) itself.
BROWSER_WORDS = ("sync_playwright", "chromium")
MODEL_OR_SERVER_WORDS = ("load_model(", "write_tiny_checkpoint(", "build_tiny_components(", "running_webui(",
                         '"webui.py"')

# Seconds the slower tests take on a 2-core machine with little other work (one xdist worker of two, one torch
# thread; setup included, e.g. the start of a server the test is the first to use), from --durations and
# WEBUI_TEST_TIMES (below). Those of 10 s or more are the `slow` tier (unless their file sets a tier); each gets a
# timeout of 3x this, never under the global 180 s of pyproject.toml (a machine busy with other work was seen to run
# tests 3-5x slower); the xdist schedule starts the longest first. Every other test takes under 7 s, most under 1 s.
KNOWN_SECONDS: dict[str, float] = {
    "tests/test_demo_model.py::test_cfg_scale_strengthens_adherence": 38,
    "tests/test_tab_close.py::test_closing_the_tab_cancels_its_running_job_only": 32,  # its module's server too
    "tests/test_processing.py::test_every_sampler_and_schedule_gives_finite_distinct_images": 30,
    "tests/test_fast_path.py::test_compiled_unet_follows_lora_and_hypernetwork_changes_and_keeps_sizes_compiled": 28,
    "tests/test_ui_img2img.py::test_inpaint_by_drawing_on_the_editor_in_the_browser": 25,
    "tests/test_extensions.py::test_api_install_refused_with_listen_and_allowed_with_the_flag": 24,
    "tests/test_security_http.py::test_listen_without_login_warns_at_start_and_on_the_settings_page": 21,
    "tests/test_browser.py::test_generate_from_the_page": 17,  # starts the shared UI server
    "tests/test_ui_extra_networks.py::test_clicking_a_lora_card_toggles_the_tag": 15,  # its module's server too
    "tests/test_api.py::test_api_auth_protects_every_route": 13.5,
    "tests/test_demo_model.py::test_negative_prompt_naming_the_colour_lowers_its_share": 13,
    "tests/test_server.py::test_txt2img_tab_generates_and_saves_with_infotext": 13,  # starts the module's server
    "tests/test_extensions.py::test_installed_extension_runs_unchanged_after_restart": 12,
    "tests/test_extensions.py::test_broken_extension_is_reported_and_the_rest_works": 12,
    "tests/test_server.py::test_api_only_server_with_ckpt_flag": 12,
    "tests/test_ui_output_panel.py::test_two_sessions_generating_at_once_each_get_their_own_image": 12,
    "tests/test_security_http.py::test_corrupt_settings_styles_and_cache_files_do_not_stop_the_app": 12,
    "tests/test_api.py::test_txt2img_with_webuiapi": 12,  # starts the shared API server
    "tests/test_faults.py::test_sigkill_while_saving_leaves_only_complete_images_and_intact_settings": 12,
    "tests/test_auth.py::test_server_requires_the_login": 11.5,
    "tests/test_extensions.py::test_the_reference_minimal_extension_runs_unchanged": 11.5,
    "tests/test_security_http.py::test_cors_opt_in_and_allowed_hosts": 11,  # starts the module's CORS server
    "tests/test_runner.py::test_override_settings_never_show_in_the_global_options": 11,  # its module's server
    "tests/test_faults.py::test_restart_after_sigkill_keeps_settings_numbers_and_cleans_leftovers": 10,
    "tests/test_processing.py::test_batch_of_four_equals_four_single_runs": 9.5,
    "tests/test_prompt_meaning.py::test_lora_changes_the_style_and_weight_zero_does_not": 9,
    "tests/test_prompt_meaning.py::test_prompt_editing_lands_between_the_two_prompts": 8,
}
SLOW_SECONDS = 10.0


@functools.cache
def _source_of(function: object) -> str:
    """A test function's source (parametrized tests share one function: read once, not per case)."""
    import inspect

    try:
        return inspect.getsource(function)
    except (OSError, TypeError):
        return ""


def _tier_of(item: pytest.Item) -> str:
    source = _source_of(getattr(item, "function", None))
    if (BROWSER_FIXTURES & set(item.fixturenames) or item.path.name == "test_browser.py"
            or any(word in source for word in BROWSER_WORDS)):
        return "browser"
    if KNOWN_SECONDS.get(_base_nodeid(item), 0.0) >= SLOW_SECONDS:
        return "slow"
    if (MODEL_OR_SERVER_FIXTURES & set(item.fixturenames) or item.path.name not in UNIT_FILES
            or any(word in source for word in MODEL_OR_SERVER_WORDS)):
        return "integration"
    return "unit"


def _base_nodeid(item: pytest.Item) -> str:
    """The node id without xdist's `@group` suffix."""
    return item.nodeid.rsplit("@", 1)[0] if "@" in item.nodeid.rpartition("]")[2] else item.nodeid


def _keep_one_tier(item: pytest.Item, tier: str) -> None:
    """A test that got tier markers at two levels (module `pytestmark` and a decorator) keeps the closest only, so
    `-m` expressions see exactly one."""
    original = item.iter_markers_with_node

    def iter_markers_with_node(name=None):
        for node, mark in original(name):
            if mark.name not in TIERS or mark.name == tier:
                yield node, mark

    item.iter_markers_with_node = iter_markers_with_node


# --- xdist groups -------------------------------------------------------------------------------------------------
# Tests of a group run on one worker, in order: those sharing a session server, and each file whose tests share a
# module-scoped fixture (a server or models built once for the file).
SHARED_SERVER_GROUPS = {"webui_server": "webui-ui-server", "webui_api_server": "webui-api-server"}
CHEAP_SHARED_FIXTURES = {"tmp_path_factory", "tiny_checkpoints", "worker_id", "testrun_uid", "monkeypatch"}


def _group_of(item: pytest.Item) -> str | None:
    names = set(item.fixturenames)
    for fixture, group in SHARED_SERVER_GROUPS.items():
        if fixture in names:
            return group
    info = getattr(item, "_fixtureinfo", None)
    for name, definitions in (info.name2fixturedefs.items() if info else ()):
        if name not in CHEAP_SHARED_FIXTURES and any(d.scope != "function" for d in definitions):
            return item.path.name
    return None


@pytest.hookimpl(tryfirst=True)  # before xdist reads the xdist_group markers
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        tiers = [mark.name for mark in item.iter_markers() if mark.name in TIERS]
        if tiers:
            if len(set(tiers)) > 1:
                _keep_one_tier(item, tiers[0])
            tier = tiers[0]
        else:
            tier = _tier_of(item)
            item.add_marker(getattr(pytest.mark, tier))
        item.stash[_TIER] = tier
        seconds = KNOWN_SECONDS.get(_base_nodeid(item))
        if seconds and item.get_closest_marker("timeout") is None:
            item.add_marker(pytest.mark.timeout(max(180, int(3 * seconds))))
        group = _group_of(item)
        if group and item.get_closest_marker("xdist_group") is None:
            item.add_marker(pytest.mark.xdist_group(group))
    if os.environ.get("PYTEST_XDIST_WORKER"):
        _longest_first(items)


class _XdistGroupIds:
    """pytest-xdist 3.8 puts a test's xdist_group into its node id (`...::test@group`, which --dist loadgroup
    schedules by) by setting `item._nodeid`, which pytest 9 no longer reads: done here, after xdist's hook, for the
    tests it did not change."""

    @pytest.hookimpl(trylast=True)
    def pytest_collection_modifyitems(self, config: pytest.Config, items: list[pytest.Item]) -> None:
        if not config.getvalue("loadgroup"):
            return
        from _pytest.nodeid import NodeId

        for item in items:
            names = sorted({str(m.args[0] if m.args else m.kwargs.get("name", "default"))
                            for m in item.iter_markers("xdist_group")})
            if names and "@" not in item.nodeid.rpartition("]")[2]:
                item._id = NodeId.parse(f"{item.nodeid}@{'_'.join(names)}")


def pytest_configure(config: pytest.Config) -> None:
    if os.environ.get("PYTEST_XDIST_WORKER"):
        config.pluginmanager.register(_XdistGroupIds(), "webui-xdist-group-ids")


def pytest_collection_finish(session: pytest.Session) -> None:
    """Move everything imported so far (torch, diffusers, gradio, the test modules) out of the garbage collector's
    sight: the model manager runs gc.collect() on every load and unload, which otherwise walks ~500k long-lived
    objects each time (0.35 s a call; with the `app` fixture's load and unload, most of a short test)."""
    import gc

    gc.collect()
    gc.freeze()


def _longest_first(items: list[pytest.Item]) -> None:
    """Order the work for xdist (run with --no-loadscope-reorder): groups and single tests by their known seconds,
    longest first, so that no long one starts last. Each group and each file keeps its own order."""
    units: dict[str, list[pytest.Item]] = {}
    for item in items:
        group = item.get_closest_marker("xdist_group")
        key = f"group:{group.args[0]}" if group else f"test:{item.nodeid}"
        units.setdefault(key, []).append(item)
    first_position = {key: index for index, key in enumerate(units)}

    def cost(key: str) -> float:
        return sum(KNOWN_SECONDS.get(_base_nodeid(item), 0.3) for item in units[key])  # most take well under 1 s

    ordered = sorted(units, key=lambda key: (-cost(key), first_position[key]))
    items[:] = [item for key in ordered for item in units[key]]


# --- per-test CPU time (WEBUI_TEST_TIMES=<file>): wall, own CPU and children's CPU seconds of each test -----------
# On a machine shared with other work the wall-clock durations are inflated; CPU seconds show what a test costs.
_TIMES_FILE = os.environ.get("WEBUI_TEST_TIMES")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    if not _TIMES_FILE:
        yield
        return
    import resource
    import time

    def cpu(who: int) -> float:
        usage = resource.getrusage(who)
        return usage.ru_utime + usage.ru_stime

    start = (time.perf_counter(), cpu(resource.RUSAGE_SELF), cpu(resource.RUSAGE_CHILDREN))
    yield
    end = (time.perf_counter(), cpu(resource.RUSAGE_SELF), cpu(resource.RUSAGE_CHILDREN))
    worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
    with open(f"{_TIMES_FILE}.{worker}", "a") as out:
        out.write(f"{_base_nodeid(item)}\t{item.stash.get(_TIER, '?')}\t"
                  + "\t".join(f"{e - s:.2f}" for s, e in zip(start, end)) + "\n")


# --- fixtures -----------------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def tiny_checkpoints(tmp_path_factory) -> dict[str, Path]:
    """One tiny random checkpoint per family, in the original single-file layout, made once per session."""
    from modules.models.tiny import write_tiny_checkpoint

    folder = tmp_path_factory.mktemp("tiny-checkpoints")
    made: dict[str, Path] = {}
    for family in ("sd1", "sd1-inpaint", "sd2", "sd2-v", "sd2-inpaint", "sdxl", "sdxl-refiner", "sdxl-inpaint"):
        base = "sd2" if family == "sd2-v" else family
        made[family] = write_tiny_checkpoint(base, folder / f"tiny-{family}.safetensors", seed=1,
                                             v_prediction=family == "sd2-v")
    return made


@pytest.fixture(scope="session")
def webui_server(tmp_path_factory):
    """The real WebUI with its UI and API (`--api --api-log`), shared by the UI test modules of the run (they run on
    one xdist worker, in file order). Tests that need a server to themselves (one they switch the model of, stop
    or start with other flags) start their own with tests.servers.running_webui."""
    from tests.servers import running_webui

    data_dir = tmp_path_factory.mktemp("webui-server")
    with running_webui(data_dir, "--api", "--api-log") as (url, log_path):
        yield url, data_dir, log_path


@pytest.fixture(scope="session")
def webui_api_server(tmp_path_factory):
    """The real API-only server (`--api --nowebui --api-log`), shared by the API test modules of the run."""
    from tests.servers import running_webui

    data_dir = tmp_path_factory.mktemp("webui-api-server")
    with running_webui(data_dir, "--api", "--nowebui", "--api-log") as (url, log_path):
        yield url, data_dir, log_path


class NetworkGuard:
    """Fails any connection attempt to a non-loopback address, recording it."""

    def __init__(self) -> None:
        self.attempts: list[object] = []
        self._original = socket.socket.connect

    def __enter__(self) -> NetworkGuard:
        guard = self

        def connect(sock, address):  # noqa: ANN001
            host = address[0] if isinstance(address, tuple) else str(address)
            if isinstance(address, tuple) and host not in ("127.0.0.1", "::1", "localhost"):
                guard.attempts.append(address)
                raise OSError(f"network access attempted during an offline test: {address}")
            return guard._original(sock, address)

        socket.socket.connect = connect
        return self

    def __exit__(self, *exc: object) -> None:
        socket.socket.connect = self._original


@pytest.fixture
def network_guard():
    with NetworkGuard() as guard:
        yield guard


@pytest.fixture
def tiny_app(tmp_path, tiny_checkpoints):
    """Like `app`, with the tiny random SD1 checkpoint as the only model instead of the demo one: for tests of
    plumbing that run many jobs and check no meaning (about half the work per step)."""
    from modules import cmd_args, shared

    folder = tmp_path / "models" / "Stable-diffusion"
    folder.mkdir(parents=True)
    (folder / "tiny-sd1.safetensors").write_bytes(tiny_checkpoints["sd1"].read_bytes())
    args = cmd_args.parse_args(["--data-dir", str(tmp_path), "--use-cpu", "all"], environ={})
    shared.initialize(args)
    yield shared
    shared.models.unload()


@pytest.fixture
def app(tmp_path, monkeypatch):
    """An initialised application (settings, model manager) whose data dir is a temp folder."""
    from modules import cmd_args, shared

    args = cmd_args.parse_args(["--data-dir", str(tmp_path), "--use-cpu", "all"], environ={})
    shared.initialize(args)
    yield shared
    shared.models.unload()
