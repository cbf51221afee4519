import argparse
import os
import subprocess
import sys

import pytest

from modules import cmd_args

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_defaults_match_a1111():
    args = cmd_args.parse_args([], environ={})
    assert args.port is None
    assert cmd_args.server_port(args) == 7860
    assert args.precision == "autocast"
    assert args.use_cpu == []
    assert args.listen is False and args.api is False and args.nowebui is False
    assert args.ckpt is None and args.vae_path is None
    assert cmd_args.server_name(args) == "127.0.0.1"
    assert cmd_args.extension_access_allowed(args) is True


def test_path_defaults_follow_data_dir_and_models_dir(tmp_path):
    args = cmd_args.parse_args(["--data-dir", str(tmp_path)], environ={})
    assert args.data_dir == str(tmp_path)
    assert args.models_dir == str(tmp_path / "models")
    assert args.ckpt_dir == str(tmp_path / "models" / "Stable-diffusion")
    assert args.vae_dir == str(tmp_path / "models" / "VAE")
    assert args.lora_dir == str(tmp_path / "models" / "Lora")
    assert args.hypernetwork_dir == str(tmp_path / "models" / "hypernetworks")
    assert args.embeddings_dir == str(tmp_path / "embeddings")
    assert args.styles_file == [str(tmp_path / "styles.csv")]

    models = tmp_path / "elsewhere"
    args = cmd_args.parse_args(["--data-dir", str(tmp_path), "--models-dir", str(models), "--vae-dir", "v"], {})
    assert args.ckpt_dir == str(models / "Stable-diffusion")
    assert args.vae_dir == os.path.abspath("v")


def test_default_data_dir_is_repo_root():
    args = cmd_args.parse_args([], environ={})
    assert args.data_dir == REPO_ROOT
    assert args.embeddings_dir == os.path.join(REPO_ROOT, "embeddings")


def test_value_flags():
    args = cmd_args.parse_args(
        [
            "--port", "9000", "--precision", "full", "--use-cpu", "all", "--device-id", "1",
            "--api-auth", "a:b,c:d", "--gradio-auth", "u:p", "--ckpt", "/m/model.safetensors",
            "--styles-file", "/s/one.csv", "--styles-file", "/s/two.csv", "--no-half", "--bf16",
        ],
        environ={},
    )
    assert args.port == 9000 and cmd_args.server_port(args) == 9000
    assert args.precision == "full"
    assert args.use_cpu == ["all"]
    assert args.device_id == "1"
    assert args.api_auth == "a:b,c:d"
    assert args.gradio_auth == "u:p"
    assert args.ckpt == "/m/model.safetensors"
    assert args.styles_file == ["/s/one.csv", "/s/two.csv"]
    assert args.no_half is True and args.bf16 is True


def test_nowebui_uses_port_7861():
    args = cmd_args.parse_args(["--nowebui"], environ={})
    assert cmd_args.server_port(args) == 7861


def test_listen_and_server_name_block_extension_install():
    listen = cmd_args.parse_args(["--listen"], environ={})
    assert cmd_args.server_name(listen) == "0.0.0.0"
    assert cmd_args.extension_access_allowed(listen) is False
    named = cmd_args.parse_args(["--server-name", "box.local"], environ={})
    assert cmd_args.server_name(named) == "box.local"
    assert cmd_args.extension_access_allowed(named) is False
    insecure = cmd_args.parse_args(["--share", "--enable-insecure-extension-access"], environ={})
    assert cmd_args.extension_access_allowed(insecure) is True


def test_commandline_args_env_is_appended_after_argv():
    env = {"COMMANDLINE_ARGS": "--api --port 8000 --styles-file '/a b/styles.csv'"}
    args = cmd_args.parse_args(["--port", "7000", "--listen"], environ=env)
    assert args.api is True and args.listen is True
    assert args.port == 8000  # later occurrence wins, so the env var overrides argv (as in A1111)
    assert args.styles_file == ["/a b/styles.csv"]


def test_argv_defaults_to_sys_argv(monkeypatch):
    monkeypatch.setattr(sys, "argv", ["webui.py", "--api-log"])
    args = cmd_args.parse_args(environ={})
    assert args.api_log is True


def test_extension_preload_adds_flags():
    def preload(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--my-ext-dir", type=str, default="x")

    args = cmd_args.parse_args(["--my-ext-dir", "/y"], environ={}, extra_arg_adders=[preload])
    assert args.my_ext_dir == "/y"


def test_broken_extension_preload_is_logged_not_fatal(caplog):
    def broken(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--api")  # conflicts with a built-in flag

    args = cmd_args.parse_args(["--api"], environ={}, extra_arg_adders=[broken])
    assert args.api is True
    assert "preload(parser) failed" in caplog.text


def test_unknown_flag_exits_2_and_lists_valid_flags(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cmd_args.parse_args(["--api", "--foo"], environ={"COMMANDLINE_ARGS": "--bar"})
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    expected = "webui.py: error: unrecognized arguments: --foo --bar. Valid flags: --allowed-hosts, --api, --api-auth,"
    assert expected in err
    listed = err.split("Valid flags: ")[1].strip().split(", ")
    assert listed == sorted(listed)
    for flag in ("--port", "--listen", "--nowebui", "--no-half-vae", "--freeze-settings", "--bf16", "--lora-dir"):
        assert flag in listed


def test_abbreviations_are_not_accepted(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cmd_args.parse_args(["--lis"], environ={})
    assert exit_info.value.code == 2
    assert "unrecognized arguments: --lis." in capsys.readouterr().err


def test_bad_precision_choice_exits_2(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cmd_args.parse_args(["--precision", "double"], environ={})
    assert exit_info.value.code == 2
    assert "invalid choice: 'double'" in capsys.readouterr().err


def test_unbalanced_quote_in_env_is_reported(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cmd_args.parse_args([], environ={"COMMANDLINE_ARGS": "--ckpt 'unterminated"})
    assert exit_info.value.code == 2
    assert "cannot split COMMANDLINE_ARGS" in capsys.readouterr().err


def test_a1111_compat_flags_accepted():
    args = cmd_args.parse_args(["--xformers", "--opt-sdp-attention", "--skip-torch-cuda-test", "--share"], {})
    assert args.xformers is True and args.skip_torch_cuda_test is True and args.share is True


def test_unknown_flag_exit_status_in_a_real_process():
    code = "from modules import cmd_args; cmd_args.parse_args()"
    result = subprocess.run(
        [sys.executable, "-c", code, "--nope"],
        cwd=REPO_ROOT,
        check=False,
        capture_output=True,
        text=True,
        env={**os.environ, "COMMANDLINE_ARGS": ""},
        timeout=60,
    )
    assert result.returncode == 2
    assert "unrecognized arguments: --nope. Valid flags:" in result.stderr
