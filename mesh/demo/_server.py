"""What every demo app shares: the HTTP server, one log line per request, PORT, clean shutdown.

Standard library only (``http.server``), so an app starts in a few tens of milliseconds.
An app is a function ``Request -> Response``; ``serve`` runs it on ``127.0.0.1:$PORT``
with HTTP/1.1 keep-alive, one thread per connection, until SIGTERM or SIGINT (exit 0).
"""

from __future__ import annotations

import errno
import json
import os
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from http.cookies import CookieError, SimpleCookie
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from mesh.demo._client import trace_headers

HOST = "127.0.0.1"
MAX_BODY = 1 << 20  # request bodies the demo apps accept (they are tiny forms at most)
IDLE_TIMEOUT = 60.0  # an idle keep-alive connection is closed after this
DRAIN_TIMEOUT = 5.0  # on SIGTERM, in-flight requests get this long to finish

_log_lock = threading.Lock()


def log(line: str) -> None:
    with _log_lock:
        sys.stderr.write(line + "\n")
        sys.stderr.flush()


@dataclass
class Request:
    method: str
    path: str  # without the query string
    query: dict[str, list[str]]
    headers: Mapping[str, str]  # names lower-case
    body: bytes = b""

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())

    def param(self, name: str) -> str | None:
        values = self.query.get(name)
        return values[0] if values else None

    def cookie(self, name: str) -> str | None:
        raw = self.header("cookie")
        if not raw:
            return None
        try:
            jar = SimpleCookie(raw)
        except CookieError:
            return None
        morsel = jar.get(name)
        return morsel.value if morsel else None

    def form(self) -> dict[str, list[str]]:
        if (self.header("content-type") or "").startswith("application/x-www-form-urlencoded"):
            return parse_qs(self.body.decode("utf-8", "replace"))
        return {}

    def trace_headers(self) -> dict[str, str]:
        """Headers to pass on to every upstream call made for this request (tracing, end-user)."""
        return trace_headers(self.headers)


@dataclass
class Response:
    status: int
    body: bytes = b""
    content_type: str = "text/plain; charset=utf-8"
    headers: list[tuple[str, str]] = field(default_factory=list)
    note: str = ""  # appended to this request's log line (e.g. an upstream that failed)


def json_response(data: Any, status: int = 200, note: str = "") -> Response:
    body = json.dumps(data).encode()
    return Response(status, body, "application/json", note=note)


def html_response(text: str, status: int = 200, note: str = "") -> Response:
    return Response(status, text.encode("utf-8"), "text/html; charset=utf-8", note=note)


def text_response(text: str, status: int = 200) -> Response:
    return Response(status, (text + "\n").encode("utf-8"))


def not_found(request: Request) -> Response:
    return json_response({"error": f"no such resource: {request.method} {request.path}"}, 404)


def only_get(request: Request) -> Response | None:
    """A 405 for methods other than GET and HEAD, else None."""
    if request.method in ("GET", "HEAD"):
        return None
    response = json_response({"error": f"method {request.method} not allowed"}, 405)
    response.headers.append(("Allow", "GET, HEAD"))
    return response


App = Callable[[Request], Response]


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    # Idle keep-alive connections must not hold up the exit: in-flight requests are
    # drained by counting them (``wait_idle``), not by joining every connection thread.
    block_on_close = False

    def __init__(self, address: tuple[str, int], app: App, name: str) -> None:
        self.app = app
        self.name = name
        self.stopping = False
        self._active = 0
        self._idle = threading.Condition()
        super().__init__(address, _Handler)

    def enter(self) -> None:
        with self._idle:
            self._active += 1

    def leave(self) -> None:
        with self._idle:
            self._active -= 1
            if self._active == 0:
                self._idle.notify_all()

    def wait_idle(self, timeout: float) -> bool:
        with self._idle:
            return self._idle.wait_for(lambda: self._active == 0, timeout)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "mesh-demo"
    sys_version = ""
    timeout = IDLE_TIMEOUT
    server: _Server

    def do_GET(self) -> None:
        self._dispatch()

    do_HEAD = do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = do_GET

    def _dispatch(self) -> None:
        server = self.server
        started = time.monotonic()
        server.enter()
        try:
            request_or_error = self._read_request()
            if isinstance(request_or_error, Response):
                response = request_or_error
            else:
                try:
                    response = server.app(request_or_error)
                except Exception as exc:  # noqa: BLE001 - a bug in the app: say so, keep serving
                    log(f"{server.name}: error in handler: {exc!r}\n{traceback.format_exc().rstrip()}")
                    response = json_response({"error": "internal error in the demo app"}, 500)
            self._send(response)
        finally:
            server.leave()
        elapsed = (time.monotonic() - started) * 1000
        path = urlsplit(self.path).path or self.path
        note = f" ({response.note})" if response.note else ""
        log(f"{server.name} {self.command} {path} {response.status} {elapsed:.0f}ms{note}")

    def _read_request(self) -> Request | Response:
        if self.headers.get("Transfer-Encoding"):
            # http.server does not decode chunked bodies: refuse rather than misread the stream.
            self.close_connection = True
            return json_response({"error": "chunked request bodies are not supported"}, 411)
        body = b""
        length_header = self.headers.get("Content-Length")
        if length_header:
            try:
                length = int(length_header)
                if length < 0:
                    raise ValueError
            except ValueError:
                self.close_connection = True
                return json_response({"error": "invalid Content-Length"}, 400)
            if length > MAX_BODY:
                self.close_connection = True
                return json_response({"error": "request body too large"}, 413)
            body = self.rfile.read(length)
        parts = urlsplit(self.path)
        return Request(
            method=self.command,
            path=parts.path or "/",
            query=parse_qs(parts.query),
            headers={k.lower(): v for k, v in self.headers.items()},
            body=body,
        )

    def _send(self, response: Response) -> None:
        try:
            self.send_response(response.status)
            self.send_header("Content-Type", response.content_type)
            self.send_header("Content-Length", str(len(response.body)))
            for name, value in response.headers:
                self.send_header(name, value)
            if self.server.stopping:
                self.close_connection = True
            if self.close_connection:
                self.send_header("Connection", "close")
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(response.body)
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True  # the client went away; nothing to tell it

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        pass  # _dispatch writes the one line per request

    def log_message(self, format: str, *args: Any) -> None:
        message = format % args
        if "timed out" in message:
            return  # an idle keep-alive connection was closed: routine
        log(f"{self.server.name}: {message}")


def port_from_env(name: str, explicit: int | None, environ: Mapping[str, str] | None = None) -> int:
    """The port to listen on: ``--port`` if given, else ``$PORT``. Exits 2 with a message if neither."""
    if explicit is not None:
        raw = str(explicit)
    else:
        raw = (os.environ if environ is None else environ).get("PORT", "").strip()
        if not raw:
            log(
                f"{name}: PORT is not set. Set PORT to the port to listen on "
                f"(e.g. PORT=9080 mesh demo {name.split('-')[0]}), or run it with `mesh inject`."
            )
            raise SystemExit(2)
    if not raw.isdigit() or not 0 <= int(raw) <= 65535:
        log(f"{name}: PORT={raw!r} is not a port number; use a number from 1 to 65535.")
        raise SystemExit(2)
    return int(raw)


class _Stop:
    """SIGTERM/SIGINT → an event the main thread waits on."""

    def __init__(self) -> None:
        self.event = threading.Event()

    def install(self) -> None:
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, self._on_signal)

    def _on_signal(self, signum: int, frame: object) -> None:
        self.event.set()


def serve(name: str, app: App, port: int | None = None) -> int:
    """Run ``app`` on 127.0.0.1:PORT until SIGTERM/SIGINT; returns the exit code."""
    stop = _Stop()
    stop.install()
    port = port_from_env(name, port)
    try:
        server = _Server((HOST, port), app, name)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            log(
                f"{name}: cannot listen on {HOST}:{port}: the port is already in use. "
                "Stop whatever listens there, or set PORT to a free port."
            )
        else:
            log(f"{name}: cannot listen on {HOST}:{port}: {exc.strerror or exc}")
        return 1
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    thread.start()
    log(f"{name} listening on {HOST}:{server.server_address[1]}")
    while not stop.event.wait(0.5):
        if not thread.is_alive():  # serve_forever died: nothing left to serve
            log(f"{name}: the server loop stopped unexpectedly")
            return 1
    server.stopping = True
    server.shutdown()  # no new connections
    drained = server.wait_idle(DRAIN_TIMEOUT)
    server.server_close()
    log(f"{name} stopped" + ("" if drained else " (requests still in flight were cut off)"))
    return 0
