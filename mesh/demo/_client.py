"""How a demo app calls another service: plain HTTP through its sidecar, headers passed on.

The app sends ``GET http://<service>/path`` in absolute form to ``HTTP_PROXY`` (its
sidecar's outbound listener), which routes by service name. Without a proxy it uses
``MESH_UPSTREAM_<NAME>_URL`` (a per-upstream local listener) if set, else the name as
a host. Connections are kept alive in a small module-level pool (``http.client``),
and a request that finds its pooled connection closed by the other side is sent once
more on a fresh one.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import socket
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

# Passed from the incoming request to every outgoing call, as bookinfo does, so a trace
# (Zipkin/B3, W3C trace context, Envoy's x-request-id) and header-based routing
# (``end-user``) follow the request through every hop.
PROPAGATED_HEADERS: tuple[str, ...] = (
    "x-request-id",
    "traceparent",
    "tracestate",
    "b3",
    "x-b3-traceid",
    "x-b3-spanid",
    "x-b3-parentspanid",
    "x-b3-sampled",
    "x-b3-flags",
    "x-ot-span-context",
    "end-user",
)

MAX_IDLE_PER_TARGET = 8


def trace_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """The headers of ``headers`` (lower-case names) that travel on to upstream calls."""
    return {name: headers[name] for name in PROPAGATED_HEADERS if name in headers}


def upstream_env_name(service: str) -> str:
    return "MESH_UPSTREAM_" + re.sub(r"[^A-Z0-9]", "_", service.upper()) + "_URL"


class UpstreamError(Exception):
    """A call that got no HTTP response (connect failure, timeout, bad response)."""

    def __init__(self, summary: str) -> None:
        super().__init__(summary)
        self.summary = summary


@dataclass
class Reply:
    status: int
    reason: str
    headers: dict[str, str]  # names lower-case
    body: bytes

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    @property
    def summary(self) -> str:
        """``503 no-endpoints`` (the mesh's ``x-mesh-error`` when present), else ``404 Not Found``."""
        return f"{self.status} {self.headers.get('x-mesh-error') or self.reason}".strip()

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass(frozen=True)
class Target:
    """Where to connect and what to send (pure; see ``Client.plan``)."""

    host: str
    port: int
    request_target: str  # absolute form through a proxy, origin form otherwise
    host_header: str
    via: str  # for error messages: "the sidecar proxy at 127.0.0.1:4140", "reviews at …"


def _parse_proxy(value: str) -> tuple[str, int] | None:
    if not value:
        return None
    if "://" not in value:
        value = "http://" + value
    parts = urlsplit(value)
    if parts.scheme != "http" or not parts.hostname:
        return None
    return parts.hostname, parts.port or 80


def _bypassed(host: str, no_proxy: str) -> bool:
    host = host.lower().rstrip(".")
    for entry in (e.strip().lower() for e in no_proxy.split(",")):
        if not entry:
            continue
        if entry == "*":
            return True
        entry = entry.lstrip("*").lstrip(".")
        if host == entry or host.endswith("." + entry):
            return True
    return False


class Client:
    """Outgoing HTTP for the demo apps; one per process, shared by all threads."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        self.environ = env
        self.proxy = _parse_proxy(env.get("http_proxy") or env.get("HTTP_PROXY") or "")
        self.no_proxy = env.get("no_proxy") or env.get("NO_PROXY") or ""
        self._idle: dict[tuple[str, int], list[http.client.HTTPConnection]] = {}
        self._lock = threading.Lock()

    # -- deciding (pure) -------------------------------------------------------------

    def plan_url(self, url: str) -> Target:
        parts = urlsplit(url)
        if parts.scheme != "http" or not parts.hostname:
            raise UpstreamError(f"unsupported URL {url!r} (only http:// URLs)")
        host, port = parts.hostname, parts.port or 80
        netloc = parts.netloc.rsplit("@", 1)[-1]
        path = parts.path or "/"
        if parts.query:
            path += "?" + parts.query
        if self.proxy and not _bypassed(host, self.no_proxy):
            absolute = f"http://{netloc}{path}"
            via = f"the sidecar proxy at {self.proxy[0]}:{self.proxy[1]}"
            return Target(self.proxy[0], self.proxy[1], absolute, netloc, via)
        return Target(host, port, path, netloc, f"{host}:{port}")

    def plan_service(self, service: str, path: str) -> Target:
        """``http://<service><path>`` through HTTP_PROXY; else MESH_UPSTREAM_<NAME>_URL; else DNS."""
        if self.proxy and not _bypassed(service, self.no_proxy):
            return self.plan_url(f"http://{service}{path}")
        upstream = self.environ.get(upstream_env_name(service), "").strip()
        if upstream:
            base = urlsplit(upstream if "://" in upstream else "http://" + upstream)
            if base.hostname:
                port = base.port or 80
                prefix = base.path.rstrip("/")
                return Target(
                    base.hostname,
                    port,
                    prefix + path,
                    service,
                    f"{service} at {base.hostname}:{port}",
                )
        return Target(service, 80, path, service, f"{service}:80")

    # -- doing -----------------------------------------------------------------------

    def call(
        self,
        service: str,
        path: str,
        headers: Mapping[str, str] | None = None,
        timeout: float = 3.0,
    ) -> Reply:
        """GET ``path`` of ``service``. Raises ``UpstreamError`` when no response came back."""
        try:
            target = self.plan_service(service, path)
            return self._exchange(target, headers or {}, timeout)
        except UpstreamError as exc:
            if "cannot resolve" in exc.summary and not self.proxy:
                raise UpstreamError(
                    f"{exc.summary} (no HTTP_PROXY set: run it with `mesh inject`, or set {upstream_env_name(service)})"
                ) from None
            raise

    def get(self, url: str, headers: Mapping[str, str] | None = None, timeout: float = 10.0) -> Reply:
        return self._exchange(self.plan_url(url), headers or {}, timeout)

    def _exchange(self, target: Target, headers: Mapping[str, str], timeout: float) -> Reply:
        send_headers = {"Host": target.host_header, "Accept": "*/*", **headers}
        for attempt in (0, 1):
            conn, reused = self._checkout(target, timeout)
            try:
                conn.request("GET", target.request_target, headers=send_headers)
                response = conn.getresponse()
                body = response.read()
            except TimeoutError:
                conn.close()
                raise UpstreamError(f"timed out after {timeout:g}s") from None
            except ConnectionRefusedError:
                conn.close()
                raise UpstreamError(f"cannot connect to {target.via} (connection refused)") from None
            except (ConnectionResetError, BrokenPipeError, http.client.RemoteDisconnected):
                conn.close()
                if reused and attempt == 0:
                    continue  # the pooled connection had been closed by the other side
                raise UpstreamError(f"connection to {target.via} closed without a response") from None
            except socket.gaierror:
                conn.close()
                raise UpstreamError(f"cannot resolve {target.host!r}") from None
            except (OSError, http.client.HTTPException) as exc:
                conn.close()
                raise UpstreamError(f"call via {target.via} failed: {exc!r}") from None
            if response.will_close:
                conn.close()
            else:
                self._checkin(target, conn)
            return Reply(
                response.status,
                response.reason,
                {k.lower(): v for k, v in response.getheaders()},
                body,
            )
        raise AssertionError("unreachable")

    def _checkout(self, target: Target, timeout: float) -> tuple[http.client.HTTPConnection, bool]:
        key = (target.host, target.port)
        with self._lock:
            idle = self._idle.get(key)
            conn = idle.pop() if idle else None
        if conn is None:
            return http.client.HTTPConnection(target.host, target.port, timeout=timeout), False
        conn.timeout = timeout
        if conn.sock is not None:
            conn.sock.settimeout(timeout)
        return conn, True

    def _checkin(self, target: Target, conn: http.client.HTTPConnection) -> None:
        key = (target.host, target.port)
        with self._lock:
            idle = self._idle.setdefault(key, [])
            if len(idle) < MAX_IDLE_PER_TARGET:
                idle.append(conn)
                return
        conn.close()


_client: Client | None = None
_client_lock = threading.Lock()


def client() -> Client:
    """The process's one client (built from the environment on first use)."""
    global _client
    with _client_lock:
        if _client is None:
            _client = Client()
        return _client
