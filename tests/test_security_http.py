"""Host allow-list (DNS rebinding), security headers and CORS on the real server: UI (Gradio) and API-only."""

from __future__ import annotations

import pytest
import requests

from modules.security import allowed_hosts_from_flags, host_name
from tests.servers import running_webui


@pytest.fixture(scope="module")
def ui_server(webui_server):
    """The run's shared UI server with the API (tests/conftest.py); these tests only read from it."""
    return webui_server[0]


@pytest.fixture(scope="module")
def cors_server(tmp_path_factory):
    with running_webui(tmp_path_factory.mktemp("sec-cors"), "--api", "--nowebui", "--cors-allow-origins",
                       "https://good.example", "--allowed-hosts", "webui.lan:7860") as (url, _):
        yield url


def test_host_parsing_and_flags():
    import argparse

    assert host_name("[::1]:7860") == "::1" and host_name("LocalHost:80") == "localhost"
    assert host_name("example.com") == "example.com"
    args = argparse.Namespace(server_name=None, listen=False, allowed_hosts="a.lan, b.lan:9000")
    assert allowed_hosts_from_flags(args) >= {"127.0.0.1", "localhost", "::1", "a.lan", "b.lan"}
    assert "evil.example" not in allowed_hosts_from_flags(args)


@pytest.mark.parametrize("path", ["/", "/config", "/sdapi/v1/samplers"])
def test_foreign_host_is_refused_and_loopback_served_with_headers(ui_server, path):
    rebinding = requests.get(ui_server + path, headers={"Host": "evil.example:7860"}, timeout=30)
    assert rebinding.status_code == 421 and "not allowed" in rebinding.text
    ok = requests.get(ui_server + path, timeout=30)
    assert ok.status_code == 200
    assert ok.headers["X-Frame-Options"] == "SAMEORIGIN"
    assert ok.headers["X-Content-Type-Options"] == "nosniff"
    assert ok.headers["Referrer-Policy"] == "same-origin"


def test_no_cors_for_foreign_origins_by_default(ui_server):
    foreign = {"Origin": "https://evil.example"}
    response = requests.get(f"{ui_server}/sdapi/v1/samplers", headers=foreign, timeout=30)
    assert "Access-Control-Allow-Origin" not in response.headers
    preflight = requests.options(f"{ui_server}/sdapi/v1/txt2img", headers={
        **foreign, "Access-Control-Request-Method": "POST"}, timeout=30)
    assert "Access-Control-Allow-Origin" not in preflight.headers  # (Gradio's own CORS layer answers it)
    config = requests.get(f"{ui_server}/config", headers=foreign, timeout=30)
    assert "Access-Control-Allow-Origin" not in config.headers


def test_cors_opt_in_and_allowed_hosts(cors_server):
    good = requests.get(f"{cors_server}/sdapi/v1/samplers", headers={"Origin": "https://good.example"}, timeout=30)
    assert good.headers["Access-Control-Allow-Origin"] == "https://good.example"
    preflight = requests.options(f"{cors_server}/sdapi/v1/txt2img", headers={
        "Origin": "https://good.example", "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type"}, timeout=30)
    assert preflight.status_code == 200 and preflight.headers["Access-Control-Allow-Origin"] == "https://good.example"
    bad = requests.get(f"{cors_server}/sdapi/v1/samplers", headers={"Origin": "https://evil.example"}, timeout=30)
    assert "Access-Control-Allow-Origin" not in bad.headers
    refused = requests.options(f"{cors_server}/sdapi/v1/txt2img", headers={
        "Origin": "https://evil.example", "Access-Control-Request-Method": "POST"}, timeout=30)
    assert refused.status_code == 400 and "Access-Control-Allow-Origin" not in refused.headers
    named = requests.get(f"{cors_server}/sdapi/v1/samplers", headers={"Host": "webui.lan:7860"}, timeout=30)
    assert named.status_code == 200
    assert requests.get(f"{cors_server}/sdapi/v1/samplers", headers={"Host": "other.lan"},
                        timeout=30).status_code == 421


def test_listen_without_login_warns_at_start_and_on_the_settings_page(tmp_path):
    with running_webui(tmp_path, "--listen") as (url, log_path):
        assert "reachable from the network" in log_path.read_text()
        assert "settings_exposed_warning" in requests.get(f"{url}/config", timeout=60).text
    # a UI login does not protect /sdapi: without --api-auth the API is warned about on its own
    with running_webui(tmp_path, "--listen", "--gradio-auth", "a:b", "--api") as (url, log_path):
        log = log_path.read_text()
        assert "the server is reachable from the network" not in log
        assert "the API (/sdapi) is reachable from the network" in log and "--api-auth" in log


def test_file_routes_serve_no_files_outside_results(webui_server, tmp_path):
    """Gradio's file routes: absolute paths, `..`, encoded traversal, settings files, non-images and a symlink
    pointing outside are refused. On the run's shared UI server: the symlink is put into its outputs folder."""
    from gradio_client import Client

    url, data_dir, _ = webui_server
    secret = tmp_path / "secret.txt"
    secret.write_text("TOPSECRET")
    outputs = data_dir / "outputs"
    outputs.mkdir(exist_ok=True)
    (outputs / "link.png").symlink_to(secret)
    try:
        Client(url, verbose=False).predict("a red circle", "", "Euler", "Automatic", 2, 7, 1, 64, 64, 1, 1, [],
                                           api_name="/txt2img")
        attempts = [f"/file={secret}", f"/gradio_api/file={secret}", "/gradio_api/file=/etc/passwd",
                    "/gradio_api/file=..%2F..%2F..%2F..%2Fetc%2Fpasswd", "/gradio_api/file=../../../../etc/passwd",
                    f"/gradio_api/file={data_dir / 'config.json'}", f"/gradio_api/file={outputs / 'link.png'}",
                    "/gradio_api/file=%2Fetc%2Fpasswd", f"/gradio_api/file={data_dir / 'server.log'}"]
        for path in attempts:
            response = requests.get(url + path, timeout=30)
            assert response.status_code in (400, 403, 404), (path, response.status_code)
            assert "TOPSECRET" not in response.text and "root:" not in response.text, path
        assert list((outputs / "txt2img-images").rglob("*.png"))  # the job itself ran and saved normally
    finally:
        (outputs / "link.png").unlink()  # the server's later users see only real images


def test_corrupt_settings_styles_and_cache_files_do_not_stop_the_app(tmp_path):
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    (data_dir / "config.json").write_text('{"samples_format": "png", ')  # truncated
    (data_dir / "styles.csv").write_bytes(b"name,prompt\n\xff\xfe\xfa broken")  # not UTF-8
    (data_dir / "cache.json").write_text("[1, 2")
    with running_webui(data_dir, "--api") as (url, log_path):
        assert requests.get(f"{url}/sdapi/v1/prompt-styles", timeout=30).json() == []
        body = requests.post(f"{url}/sdapi/v1/txt2img", json={"prompt": "p", "width": 64, "height": 64, "steps": 2},
                             timeout=120)
        assert body.status_code == 200
        log = log_path.read_text()
    assert "settings file" in log and "styles file" in log and "hash cache" in log
    assert len(list(data_dir.glob("config.json.corrupt-*"))) == 1
    assert list(data_dir.glob("styles.csv.corrupt-*"))[0].read_bytes().endswith(b"broken")
    import json

    assert isinstance(json.loads((data_dir / "cache.json").read_text()), dict)  # rewritten as a valid cache
