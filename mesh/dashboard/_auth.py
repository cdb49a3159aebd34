"""Who may read the dashboard (pure): the Host check, then the token.

The dashboard binds 127.0.0.1, but every local user (and every web page a local
browser opens) can reach a loopback port. So:

- Host: only ``127.0.0.1:PORT`` and ``localhost:PORT`` are served. A page on
  ``evil.example`` that re-resolves its name to 127.0.0.1 (DNS rebinding) sends
  its own name as Host and is refused before anything else happens.
- Token: random per run, printed once in the URL. A request that carries it in
  ``?token=`` gets an HttpOnly, SameSite=Strict cookie and a redirect to the same
  path without it (the token leaves the address bar); every later request
  presents the cookie. Without either: 401; with a wrong one: 403.

The cookie is named after the port: two dashboards on one host (cookies ignore
ports) must not overwrite each other's.
"""

from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass
from urllib.parse import parse_qsl, urlencode

TOKEN_BYTES = 24


def new_token() -> str:
    return secrets.token_urlsafe(TOKEN_BYTES)


@dataclass(frozen=True, slots=True)
class Allow:
    """Serve the request."""


@dataclass(frozen=True, slots=True)
class Login:
    """The token was in the URL: set the cookie and send the browser to ``location``."""

    location: str
    set_cookie: str


@dataclass(frozen=True, slots=True)
class Refuse:
    status: int  # 401 no credentials, 403 wrong credentials or a foreign Host
    message: str


Access = Allow | Login | Refuse


class Gate:
    def __init__(self, token: str, port: int) -> None:
        self._token = token.encode()
        self.port = port
        self.cookie_name = f"mesh_dashboard_{port}"
        self.allowed_hosts = frozenset({f"127.0.0.1:{port}", f"localhost:{port}"})

    def url(self, path: str = "/") -> str:
        """The URL to print: the only place the token is shown."""
        return f"http://127.0.0.1:{self.port}{path}?{urlencode({'token': self._token.decode()})}"

    def decide(self, host: str | None, target: str, cookie_header: str | None) -> Access:
        """``host``: the Host header; ``target``: the request target (path and query)."""
        if host is None or host.lower() not in self.allowed_hosts:
            return Refuse(
                403, f"Host {host!r} is not served: open http://127.0.0.1:{self.port}/ (DNS rebinding protection)"
            )
        path, _, query = target.partition("?")
        params = parse_qsl(query, keep_blank_values=True)
        offered = [value for name, value in params if name == "token"]
        if offered:
            if not self._matches(offered[0]):
                return Refuse(
                    403, "wrong token: use the URL that `mesh dashboard` printed (the token changes every run)"
                )
            rest = urlencode([(name, value) for name, value in params if name != "token"])
            return Login(path + (f"?{rest}" if rest else ""), self._cookie())
        cookie = _cookie_value(cookie_header, self.cookie_name)
        if cookie is None:
            return Refuse(401, "no token: open the URL that `mesh dashboard` printed")
        if not self._matches(cookie):
            return Refuse(
                403, "stale or wrong token: open the URL that `mesh dashboard` printed (it changes every run)"
            )
        return Allow()

    def _matches(self, offered: str) -> bool:
        return hmac.compare_digest(offered.encode(), self._token)

    def _cookie(self) -> str:
        # No Max-Age: a session cookie, gone with the browser; the token dies with the process anyway.
        return f"{self.cookie_name}={self._token.decode()}; Path=/; HttpOnly; SameSite=Strict"


def _cookie_value(header: str | None, name: str) -> str | None:
    """Our cookie in a Cookie header. Parsed by hand: http.cookies gives up on the first cookie it
    dislikes, and other local apps set what they like on 127.0.0.1."""
    for part in (header or "").split(";"):
        key, sep, value = part.strip().partition("=")
        if sep and key == name:
            return value.strip().strip('"')
    return None
