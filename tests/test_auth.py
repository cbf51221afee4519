"""UI logins: --gradio-auth / --gradio-auth-path parsing, constant-time check, and the real server refusing the
app without a login."""

from __future__ import annotations

import pytest

from modules import auth
from tests.servers import running_webui


def test_parse_credentials_a1111_format():
    assert auth.parse_credentials("alice:secret, bob:pa:ss\ncarol:") == {"alice": "secret", "bob": "pa:ss",
                                                                         "carol": ""}
    assert auth.parse_credentials(None) == {}
    with pytest.raises(ValueError, match="Bad login 'nocolon'"):
        auth.parse_credentials("alice:x,nocolon")


def test_flags_and_file_merge(tmp_path):
    path = tmp_path / "logins.txt"
    path.write_text("bob:two\ncarol:three\n")
    assert auth.credentials_from_flags("alice:one", str(path)) == {"alice": "one", "bob": "two", "carol": "three"}
    with pytest.raises(ValueError, match="no such file"):
        auth.credentials_from_flags(None, str(tmp_path / "missing.txt"))


def test_check():
    credentials = {"alice": "secret"}
    assert auth.check(credentials, "alice", "secret")
    assert not auth.check(credentials, "alice", "secreT")
    assert not auth.check(credentials, "mallory", "secret")
    assert not auth.check({"eve": ""}, "mallory", "")  # an unknown user never matches, even with "" passwords


def test_server_requires_the_login(tmp_path):
    import httpx

    logins = tmp_path / "logins.txt"
    logins.write_text("bob:builder\n")
    with running_webui(tmp_path, "--gradio-auth", "alice:secret", "--gradio-auth-path", str(logins)) as (url, _):
        with httpx.Client(base_url=url, timeout=30) as client:
            assert client.get("/config").status_code == 401
            wrong = client.post("/login", data={"username": "alice", "password": "nope"})
            assert wrong.status_code in (400, 401) and "Incorrect credentials" in wrong.text
            assert client.get("/config").status_code == 401
            locked = client.post("/login", data={"username": "alice", "password": "secret"})
            assert locked.status_code in (400, 401)  # right password, but within the 0.5 s lockout
            import time

            time.sleep(0.6)
            right = client.post("/login", data={"username": "alice", "password": "secret"})
            assert right.status_code == 200
            config = client.get("/config")
            assert config.status_code == 200 and "txt2img_prompt" in config.text
        with httpx.Client(base_url=url, timeout=30) as other:  # a login from the --gradio-auth-path file
            assert other.post("/login", data={"username": "bob", "password": "builder"}).status_code == 200
            assert other.get("/config").status_code == 200


def test_failure_limiter_doubles_and_resets():
    limiter = auth.FailureLimiter(base=0.2, cap=1.0)
    assert limiter.retry_after("c") == 0
    limiter.failed("c")
    assert 0.1 < limiter.retry_after("c") <= 0.2
    limiter.failed("c")
    limiter.failed("c")
    assert 0.6 < limiter.retry_after("c") <= 0.8
    for _ in range(10):
        limiter.failed("c")
    assert limiter.retry_after("c") <= 1.0  # capped
    assert limiter.retry_after("other") == 0
    limiter.succeeded("c")
    assert limiter.retry_after("c") == 0


def test_gradio_checker_locks_a_user_name_out_after_a_failure():
    checker = auth.limited_checker({"alice": "secret"}, auth.FailureLimiter(base=0.3))
    assert checker("alice", "secret")
    assert not checker("alice", "wrong")
    assert not checker("alice", "secret")  # locked out for 0.3 s: refused without checking
    import time

    time.sleep(0.35)
    assert checker("alice", "secret")
