"""Logins for the UI (`--gradio-auth`, `--gradio-auth-path`) and later the API (`--api-auth`): A1111's
"user:pass,user2:pass2" format, checked in constant time."""

from __future__ import annotations

import hmac
import os


def parse_credentials(text: str | None) -> dict[str, str]:
    """"user:pass,user2:pass2" (newlines work as separators too, for files) -> {user: password}.

    A password may contain ':' (only the first one splits); an entry without ':' is an error naming it."""
    credentials: dict[str, str] = {}
    for entry in (text or "").replace("\n", ",").split(","):
        entry = entry.strip()
        if not entry:
            continue
        user, sep, password = entry.partition(":")
        if not sep or not user:
            raise ValueError(f"Bad login {entry.split(':')[0]!r}: expected user:password")
        credentials[user] = password
    return credentials


def credentials_from_flags(inline: str | None, path: str | None) -> dict[str, str]:
    """Both flags together, as A1111 merges them; an unreadable file is an error naming it."""
    credentials = parse_credentials(inline)
    if path:
        if not os.path.isfile(path):
            raise ValueError(f"--gradio-auth-path: no such file: {path}")
        with open(path, encoding="utf8") as f:
            credentials.update(parse_credentials(f.read()))
    return credentials


def check(credentials: dict[str, str], user: str, password: str) -> bool:
    """Constant-time in the password (and the same work for unknown users), so timing reveals nothing."""
    expected = credentials.get(user)
    ok = hmac.compare_digest((expected or "\0").encode(), (password or "").encode())
    return ok and expected is not None


class FailureLimiter:
    """Per-client lockout after failed logins, doubling with each failure (0.5 s, 1 s, 2 s … up to `cap`): password
    guessing gets slow, a user who mistypes once barely notices. A success clears the client's record."""

    def __init__(self, base: float = 0.5, cap: float = 30.0) -> None:
        import threading

        self.base, self.cap = base, cap
        self._lock = threading.Lock()
        self._failures: dict[str, tuple[int, float]] = {}  # client -> (failures, locked until)

    def retry_after(self, client: str) -> float:
        """Seconds this client must wait before its next attempt is even checked (0: go ahead)."""
        import time

        with self._lock:
            _, until = self._failures.get(client, (0, 0.0))
            return max(0.0, until - time.monotonic())

    def failed(self, client: str) -> None:
        import time

        with self._lock:
            count, _ = self._failures.get(client, (0, 0.0))
            count += 1
            self._failures[client] = (count, time.monotonic() + min(self.cap, self.base * 2 ** (count - 1)))
            if len(self._failures) > 10000:  # bounded memory under a flood of distinct clients
                self._failures.pop(next(iter(self._failures)))

    def succeeded(self, client: str) -> None:
        with self._lock:
            self._failures.pop(client, None)


def limited_checker(credentials: dict[str, str], limiter: FailureLimiter | None = None):
    """Gradio's auth callback: Gradio hands over only the user name and password, so failures are counted per user
    name (a locked-out name is refused without checking until its delay has passed)."""
    limiter = limiter or FailureLimiter()

    def checker(user: str, password: str) -> bool:
        if limiter.retry_after(user) > 0:
            return False
        if check(credentials, user, password):
            limiter.succeeded(user)
            return True
        limiter.failed(user)
        return False

    return checker
