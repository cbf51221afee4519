"""HTTP hardening for the UI and the API: Host allow-list (DNS rebinding), security headers, CORS only on request.

One pure-ASGI middleware (streaming responses such as Gradio's event stream pass through untouched), installed on
the Gradio app through `launch(app_kwargs=...)` and on the API-only app.

- Host: a request whose Host is not loopback, an address of this machine (with --listen), --server-name, or an
  entry of --allowed-hosts gets 421 — a page on evil.example whose name resolves to 127.0.0.1 cannot talk to us.
- Headers: every response carries X-Frame-Options: SAMEORIGIN, X-Content-Type-Options: nosniff and
  Referrer-Policy: same-origin.
- CORS: no Access-Control-Allow-Origin for foreign origins (whatever an inner layer added is removed), preflights
  from them get no CORS answer; --cors-allow-origins / --cors-allow-origins-regex opt in (A1111's flags).
"""

from __future__ import annotations

import re
import socket
from collections.abc import Iterable

LOOPBACK = {"localhost", "127.0.0.1", "::1", "0:0:0:0:0:0:0:1"}
SECURITY_HEADERS = [(b"x-frame-options", b"SAMEORIGIN"), (b"x-content-type-options", b"nosniff"),
                    (b"referrer-policy", b"same-origin")]


def host_name(value: str) -> str:
    """The host part of a Host header or an origin's netloc, lower-case, without port or IPv6 brackets."""
    value = value.strip().lower()
    if value.startswith("["):
        return value[1:value.find("]")] if "]" in value else value[1:]
    if value.count(":") == 1:
        return value.split(":", 1)[0]
    return value


def local_addresses() -> set[str]:
    """Names and addresses this machine answers to (for --listen: LAN clients use these as Host)."""
    names = {socket.gethostname().lower(), socket.getfqdn().lower()}
    try:
        import psutil

        for addresses in psutil.net_if_addrs().values():
            for address in addresses:
                if address.family in (socket.AF_INET, socket.AF_INET6):
                    names.add(address.address.split("%", 1)[0].lower())
    except Exception:  # no interface list: the hostname and loopback still work
        pass
    return names


def allowed_hosts_from_flags(cmd_opts) -> set[str]:
    hosts = set(LOOPBACK)
    server_name = getattr(cmd_opts, "server_name", None)
    if server_name and server_name not in ("0.0.0.0", "::"):
        hosts.add(host_name(server_name))
    if getattr(cmd_opts, "listen", False) or server_name in ("0.0.0.0", "::"):
        hosts |= local_addresses()
    extra = getattr(cmd_opts, "allowed_hosts", None) or ""
    hosts |= {host_name(h) for h in extra.split(",") if h.strip()}
    return hosts


class SecurityMiddleware:
    def __init__(self, app, allowed_hosts: Iterable[str] = LOOPBACK, cors_origins: Iterable[str] = (),
                 cors_origin_regex: str | None = None) -> None:
        self.app = app
        self.allowed_hosts = {host_name(h) for h in allowed_hosts}
        self.cors_origins = {o.strip().rstrip("/") for o in cors_origins if o.strip()}
        self.cors_regex = re.compile(cors_origin_regex) if cors_origin_regex else None

    def origin_allowed(self, origin: str, host: str) -> bool:
        if not origin:
            return True
        if origin.rstrip("/") in self.cors_origins or "*" in self.cors_origins:
            return True
        if self.cors_regex is not None and self.cors_regex.fullmatch(origin):
            return True
        netloc = origin.split("://", 1)[-1]
        return netloc.lower() == host.lower()  # same origin

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        host = headers.get("host", "")
        if host_name(host) not in self.allowed_hosts:
            if scope["type"] == "websocket":
                await send({"type": "websocket.close", "code": 1008})
                return
            body = f"Host {host!r} is not allowed. Use --allowed-hosts to accept it.".encode()
            await send({"type": "http.response.start", "status": 421,
                        "headers": [(b"content-type", b"text/plain; charset=utf-8"),
                                    (b"content-length", str(len(body)).encode()), *SECURITY_HEADERS]})
            await send({"type": "http.response.body", "body": body})
            return
        origin = headers.get("origin", "")
        cors_ok = bool(origin) and self.origin_allowed(origin, host)
        configured = bool(self.cors_origins or self.cors_regex) and cors_ok and not self._same_origin(origin, host)
        if scope["type"] == "http" and scope["method"] == "OPTIONS" and origin and \
                "access-control-request-method" in headers:
            await self._preflight(send, origin, headers, allowed=configured)
            return

        async def send_with_headers(message) -> None:
            if message["type"] == "http.response.start":
                kept = [(k, v) for k, v in message.get("headers", [])
                        if not k.lower().startswith(b"access-control-") or (cors_ok and not configured)]
                names = {k.lower() for k, _ in kept}
                kept += [(k, v) for k, v in SECURITY_HEADERS if k not in names]
                if configured:
                    kept += [(b"access-control-allow-origin", origin.encode("latin-1")),
                             (b"access-control-allow-credentials", b"true"), (b"vary", b"Origin")]
                message = {**message, "headers": kept}
            await send(message)

        await self.app(scope, receive, send_with_headers)

    @staticmethod
    def _same_origin(origin: str, host: str) -> bool:
        return origin.split("://", 1)[-1].lower() == host.lower()

    async def _preflight(self, send, origin: str, headers: dict[str, str], allowed: bool) -> None:
        response_headers = list(SECURITY_HEADERS)
        status = 400
        if allowed:
            status = 200
            response_headers += [
                (b"access-control-allow-origin", origin.encode("latin-1")),
                (b"access-control-allow-methods", b"GET, POST, PUT, DELETE, OPTIONS"),
                (b"access-control-allow-headers",
                 headers.get("access-control-request-headers", "*").encode("latin-1")),
                (b"access-control-allow-credentials", b"true"), (b"vary", b"Origin"),
                (b"access-control-max-age", b"600")]
        body = b"" if allowed else b"Cross-origin request refused."
        await send({"type": "http.response.start", "status": status,
                    "headers": [*response_headers, (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})


def middleware_kwargs(cmd_opts) -> dict:
    """Keyword arguments for starlette's Middleware(SecurityMiddleware, **kwargs) from the flags."""
    origins = (getattr(cmd_opts, "cors_allow_origins", None) or "").split(",")
    return {"allowed_hosts": allowed_hosts_from_flags(cmd_opts), "cors_origins": [o for o in origins if o.strip()],
            "cors_origin_regex": getattr(cmd_opts, "cors_allow_origins_regex", None)}
