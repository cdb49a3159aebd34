"""Telemetry fan-in: the controller reads every proxy's admin pages for the CLI.

    GET /v1/tap    → ``TapFanIn``: ``/tap`` opened on every known proxy, merged into one stream
    GET /v1/stats  → ``StatsCollector``: ``/metrics`` scraped from every proxy, aggregated

Proxies come from the controller's registry: every endpoint, dialled at the
address it registered (its inbound listener) over mTLS with ALPN
``mesh-admin``. The proxy answers the admin pages there only to the
controller's identity and to operators, and the controller checks that the
proxy is who the registry says; the plain admin servers stay on loopback
(docs/security.md, "The trust boundary on one host"). After the handshake it
is HTTP/1.1, so the client here is a few lines of trio streams around the
proxy's own sans-IO ``ResponseReader``.

Background work. The API server calls a handler per request and iterates what
it returns in the same task, so a handler has no nursery that outlives it. Both
the tap fan-in (one reader per proxy, running while the CLI listens) and the
stats sampler (a scrape every ``SAMPLE_PERIOD`` seconds, started by the first
stats request, stopped after ``SAMPLER_IDLE_STOP`` seconds without one) run as
trio system tasks, guarded so that no error can escape into the controller.

Rates over a window. Counters are cumulative, so a rate needs an earlier value.
The sampler keeps a ring of snapshots per proxy (``SAMPLE_PERIOD`` apart, up to
``MAX_WINDOW``); a stats request scrapes afresh and compares with the baseline
closest to ``now - window``. A proxy's start (``process_start_time_seconds``,
when every counter was zero) is a baseline too, so the very first request
already has one: for a young proxy it is exact, for an old one the numbers
cover its whole life, and ``window_seconds`` in the answer says so.
"""

from __future__ import annotations

import json
import logging
import math
import os
import ssl
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import trio

from mesh.proxy.protocol.errors import RemoteProtocolError
from mesh.proxy.protocol.http1 import Data, EndOfMessage, ResponseHead, ResponseReader
from mesh.telemetry import SHOW_QUERY, Sample, TapFilter, histogram_quantile, parse_prometheus_text

log = logging.getLogger("mesh.controller.fanin")

CONNECT_TIMEOUT = 2.0  # to a proxy's admin pages (TCP, then the TLS handshake)
SCRAPE_TIMEOUT = 2.0  # for a whole /metrics answer
MAX_METRICS_BYTES = 8 * 1024 * 1024
MAX_TAP_LINE = 1024 * 1024
TAP_REFRESH = 2.0  # look for new (or returning) proxies this often while tapping
TAP_BUFFER = 1000  # merged events waiting for the CLI; beyond it readers wait and proxies drop
SAMPLE_PERIOD = 5.0
SAMPLER_IDLE_STOP = 900.0
MAX_WINDOW = 3600.0
MIN_SPAN = 1.0  # a baseline this close to now says nothing about a rate
QUANTILES = (("p50", 0.5), ("p95", 0.95), ("p99", 0.99))


class AdminUnreachable(Exception):
    """A proxy's admin server could not be read; the message says why."""


# ------------------------------------------------------------------ targets


@dataclass(frozen=True, slots=True)
class ProxyTarget:
    """One proxy as the registry knows it: where it listens for mTLS, and who it must be."""

    instance: str
    service: str
    host: str
    port: int  # its inbound listener, which serves the admin pages over mTLS (ALPN mesh-admin)
    identity: str
    labels: tuple[tuple[str, str], ...] = ()

    @property
    def key(self) -> tuple[str, int]:
        return (self.host, self.port)

    @property
    def address(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    @property
    def version(self) -> str | None:
        return dict(self.labels).get("version")

    def describe(self) -> dict[str, Any]:
        return {"instance": self.instance, "service": self.service, "address": self.address}


def proxy_targets(state: Any) -> list[ProxyTarget]:
    """Every proxy in the registry, once (a registration and a zeroconf record of one proxy are one)."""
    targets: dict[str, ProxyTarget] = {}
    # Registrations first: their identity was proven by the proxy's certificate.
    for entry in sorted(state.entries(), key=lambda e: (e.source != "registration", e.instance)):
        endpoint = entry.endpoint
        if endpoint.address in targets:
            continue
        targets[endpoint.address] = ProxyTarget(
            instance=entry.instance,
            service=endpoint.service,
            host=endpoint.host,
            port=endpoint.port,
            identity=endpoint.expected_identity(state.trust_domain),
            labels=endpoint.labels,
        )
    return sorted(targets.values(), key=lambda t: (t.service, t.instance))


# ------------------------------------------------------------------ admin client


class AdminDialer:
    """Opens the admin pages of a proxy: mTLS to its inbound listener, ALPN ``mesh-admin``,
    the proxy's identity checked against the registry's, then one HTTP/1.1 GET."""

    def __init__(self, context: ssl.SSLContext) -> None:
        self.context = context  # the controller's client context, ALPN mesh-admin

    @classmethod
    def for_credentials(cls, creds: Any) -> AdminDialer:
        from mesh.identity import client_context
        from mesh.net import ALPN_ADMIN

        return cls(client_context(creds, alpn=(ALPN_ADMIN,)))

    async def connect(self, target: ProxyTarget, timeout: float) -> trio.abc.Stream:
        """An mTLS stream to ``target`` that speaks the admin pages; AdminUnreachable otherwise."""
        from mesh.identity import check_peer_identity, handshake_failure_reason
        from mesh.net import ALPN_ADMIN, TLSStream

        where = target.address
        try:
            with trio.fail_after(timeout):
                tcp = await trio.open_tcp_stream(target.host, target.port)
        except trio.TooSlowError:
            raise AdminUnreachable(f"{where}: no connection within {timeout:g}s") from None
        except OSError as exc:
            raise AdminUnreachable(f"{where}: {_os_reason(exc)}") from None
        tls = TLSStream(tcp, self.context, server_side=False)
        try:
            with trio.fail_after(timeout):
                await tls.do_handshake()
            check_peer_identity(tls, target.identity)  # type: ignore[arg-type]
            if tls.selected_alpn_protocol() != ALPN_ADMIN:
                raise AdminUnreachable(
                    f"{where}: the proxy does not serve its admin pages over mTLS (a mesh older than this controller?)"
                )
        except trio.TooSlowError:
            await _close(tls)
            raise AdminUnreachable(f"{where}: no TLS handshake within {timeout:g}s") from None
        except AdminUnreachable:
            await _close(tls)
            raise
        except Exception as exc:  # noqa: BLE001 - IdentityError, ssl and stream errors: one reason each
            await _close(tls)
            raise AdminUnreachable(f"{where}: {handshake_failure_reason(exc)}") from None
        return tls


async def _open_admin(
    dialer: AdminDialer, target: ProxyTarget, path: str, timeout: float
) -> tuple[trio.abc.Stream, ResponseReader, list[Any]]:
    """Connect, send ``GET path``, read up to the response head; returns the stream, reader and events."""
    where = target.address
    stream = await dialer.connect(target, timeout)
    try:
        request = f"GET {path} HTTP/1.1\r\nHost: {where}\r\nAccept: */*\r\nConnection: close\r\n\r\n"
        reader = ResponseReader()
        reader.expect(b"GET")
        events: list[Any] = []
        with trio.fail_after(timeout):
            await stream.send_all(request.encode())
            while not any(isinstance(e, ResponseHead) for e in events):
                data = await stream.receive_some(65536)
                if not data:
                    raise AdminUnreachable(f"{where}: closed the connection without answering")
                events += reader.feed(data)
    except trio.TooSlowError:
        await _close(stream)
        raise AdminUnreachable(f"{where}: no answer within {timeout:g}s") from None
    except RemoteProtocolError as exc:
        await _close(stream)
        raise AdminUnreachable(f"{where}: invalid HTTP answer: {exc}") from None
    except (OSError, trio.BrokenResourceError) as exc:
        await _close(stream)
        raise AdminUnreachable(f"{where}: {exc or 'the connection broke'}") from None
    except BaseException:
        await _close(stream)
        raise
    return stream, reader, events


async def admin_get(
    dialer: AdminDialer, target: ProxyTarget, path: str, timeout: float = SCRAPE_TIMEOUT
) -> tuple[int, bytes]:
    """``GET path`` on a proxy's admin pages: (status, body). Raises AdminUnreachable."""
    where = target.address
    deadline = trio.current_time() + timeout
    stream, reader, events = await _open_admin(dialer, target, path, timeout)
    try:
        status = next(e.status for e in events if isinstance(e, ResponseHead))
        body = bytearray()
        with trio.move_on_at(deadline) as late:
            while True:
                for event in events:
                    if isinstance(event, Data):
                        body += event.data
                        if len(body) > MAX_METRICS_BYTES:
                            raise AdminUnreachable(f"{where}: answer larger than {MAX_METRICS_BYTES} bytes")
                    elif isinstance(event, EndOfMessage):
                        return status, bytes(body)
                data = await stream.receive_some(65536)
                events = reader.feed(data) if data else reader.feed_eof()
                if not data and not events:
                    raise AdminUnreachable(f"{where}: closed the connection mid-answer")
        if late.cancelled_caught:
            raise AdminUnreachable(f"{where}: answer not complete within {timeout:g}s")
        raise AssertionError("unreachable")
    except RemoteProtocolError as exc:
        raise AdminUnreachable(f"{where}: invalid HTTP answer: {exc}") from None
    except (OSError, trio.BrokenResourceError) as exc:
        raise AdminUnreachable(f"{where}: {exc or 'the connection broke'}") from None
    finally:
        await _close(stream)


class AdminStream:
    """A streaming answer (``/tap``): ``await AdminStream.open(...)``, then ``lines()``, then ``aclose()``."""

    def __init__(self, where: str, stream: trio.abc.Stream, reader: ResponseReader, events: list[Any]) -> None:
        self._where = where
        self._stream = stream
        self._reader = reader
        self._events = events

    @classmethod
    async def open(
        cls, dialer: AdminDialer, target: ProxyTarget, path: str, timeout: float = CONNECT_TIMEOUT
    ) -> AdminStream:
        """Connected and answered 200; raises AdminUnreachable otherwise."""
        stream, reader, events = await _open_admin(dialer, target, path, timeout)
        head = next(e for e in events if isinstance(e, ResponseHead))
        if head.status != 200:
            await _close(stream)
            raise AdminUnreachable(f"{target.address}: {path.split('?')[0]} answered {head.status}")
        return cls(target.address, stream, reader, events[events.index(head) + 1 :])

    async def lines(self) -> AsyncIterator[Any]:
        """The JSON value of each line, until the proxy ends the stream.

        A plain async generator (no nursery, no cancel scope across its
        ``yield``): the caller iterates it in one task.
        """
        buffer = bytearray()
        events, self._events = self._events, []
        while True:
            for event in events:
                if isinstance(event, Data):
                    buffer += event.data
                elif isinstance(event, EndOfMessage):
                    return
            while (newline := buffer.find(b"\n")) >= 0:
                line = bytes(buffer[:newline])
                del buffer[: newline + 1]
                if line.strip():
                    try:
                        yield json.loads(line)
                    except ValueError:
                        log.debug("%s sent a line that is not JSON: %r", self._where, line[:100])
            if len(buffer) > MAX_TAP_LINE:
                raise AdminUnreachable(f"{self._where}: a line longer than {MAX_TAP_LINE} bytes")
            try:
                data = await self._stream.receive_some(65536)
            except (OSError, trio.BrokenResourceError, trio.ClosedResourceError):
                return
            if not data:
                return
            try:
                events = self._reader.feed(data)
            except RemoteProtocolError as exc:
                raise AdminUnreachable(f"{self._where}: invalid HTTP: {exc}") from None

    async def aclose(self) -> None:
        await _close(self._stream)


async def _close(stream: trio.abc.Stream) -> None:
    with trio.CancelScope(shield=True):
        try:
            await stream.aclose()
        except (OSError, trio.BrokenResourceError, trio.ClosedResourceError):
            pass


def _os_reason(exc: OSError) -> str:
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, OSError) and cause.errno:
            return os.strerror(cause.errno).lower()
        group = getattr(cause, "exceptions", None)
        cause = group[0] if group else cause.__cause__ or cause.__context__
    return str(exc) or type(exc).__name__


def _spawn_guarded(fn: Callable[[], Any], name: str) -> None:
    """A system task that can never take the controller down."""

    async def guarded() -> None:
        try:
            await fn()
        except Exception:  # noqa: BLE001 - log it; the controller goes on
            log.exception("%s failed", name)

    trio.lowlevel.spawn_system_task(guarded, name=name)


# ------------------------------------------------------------------ tap fan-in


class TapFanIn:
    """One merged NDJSON stream of the ``/tap`` streams of every proxy (an async iterator).

    Items: the proxies' own lines (``request`` and ``dropped``) with ``instance``
    added, ``{"type": "tapping" | "unreachable", "instance", "service",
    "address", ...}`` as proxies are joined or fail (each said once per change),
    and ``{"type": "waiting", "message"}`` once if no proxy is registered yet.
    A CLI that reads slowly makes the readers wait; the proxies then drop (and
    count) what their queues cannot hold, so nothing piles up here.
    """

    def __init__(
        self,
        targets: Callable[[], list[ProxyTarget]],
        tap_filter: TapFilter,
        max_rps: float | None,
        dialer: AdminDialer,
        refresh: float = TAP_REFRESH,
        clock: Callable[[], float] = time.monotonic,
        query_values: bool = False,
    ) -> None:
        self._targets = targets
        self._dialer = dialer
        query = tap_filter.to_query()
        if max_rps is not None:
            query["max_rps"] = f"{max_rps:g}"
        if query_values:
            query[SHOW_QUERY] = "1"
        self._path = "/tap" + (f"?{urlencode(query)}" if query else "")
        self._max_rps = max_rps
        self._refresh = refresh
        self._clock = clock
        self._send, self._receive = trio.open_memory_channel[dict[str, Any]](TAP_BUFFER)
        self._scope = trio.CancelScope()
        self._started = False
        self._following: dict[Any, trio.CancelScope] = {}
        self._failing: set[Any] = set()  # told the listener it is unreachable; not again until it is back
        self._tokens = max(1.0, max_rps or 1.0)
        self._refilled = clock()

    def __aiter__(self) -> TapFanIn:
        return self

    async def __anext__(self) -> dict[str, Any]:
        if not self._started:
            self._started = True
            _spawn_guarded(self._run, "tap fan-in")
        try:
            return await self._receive.receive()
        except (trio.EndOfChannel, trio.ClosedResourceError):
            raise StopAsyncIteration from None

    async def aclose(self) -> None:
        self._scope.cancel()
        self._receive.close()

    async def _run(self) -> None:
        with self._scope:
            async with self._send, trio.open_nursery() as nursery:
                waiting_said = False
                while True:
                    targets = {t.key: t for t in self._targets()}
                    if not targets and not waiting_said:
                        waiting_said = True
                        await self._emit(
                            {"type": "waiting", "message": "no proxy is registered yet; waiting for the first one"}
                        )
                    for key, scope in list(self._following.items()):
                        if key not in targets:
                            scope.cancel()  # withdrawn from the registry
                    for key, target in targets.items():
                        if key not in self._following:
                            scope = self._following[key] = trio.CancelScope()
                            nursery.start_soon(self._follow, target, scope)
                    await trio.sleep(self._refresh)

    async def _follow(self, target: ProxyTarget, scope: trio.CancelScope) -> None:
        try:
            with scope:
                stream = await AdminStream.open(self._dialer, target, self._path)
                try:
                    self._failing.discard(target.key)
                    await self._emit({"type": "tapping", **target.describe()})
                    async for item in stream.lines():
                        if not isinstance(item, dict):
                            continue
                        if item.get("type") == "request" and not self._allowed():
                            continue
                        item["instance"] = target.instance
                        await self._send.send(item)
                finally:
                    await stream.aclose()
        except AdminUnreachable as exc:
            if target.key not in self._failing:
                self._failing.add(target.key)
                await self._emit({"type": "unreachable", **target.describe(), "error": str(exc)})
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass  # the listener left
        finally:
            if self._following.get(target.key) is scope:
                del self._following[target.key]

    async def _emit(self, item: dict[str, Any]) -> None:
        try:
            await self._send.send(item)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass

    def _allowed(self) -> bool:
        """The merged stream's own max_rps (each proxy also applies it to its part)."""
        if self._max_rps is None:
            return True
        now = self._clock()
        self._tokens = min(max(1.0, self._max_rps), self._tokens + (now - self._refilled) * self._max_rps)
        self._refilled = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False


# ------------------------------------------------------------------ snapshots (pure)


@dataclass(slots=True)
class Traffic:
    """Cumulative counts of one (direction, peer service) at one proxy."""

    requests: float = 0.0
    successes: float = 0.0
    buckets: dict[float, float] = field(default_factory=dict)  # le → cumulative count

    def add(self, other: Traffic) -> None:
        self.requests += other.requests
        self.successes += other.successes
        for le, count in other.buckets.items():
            self.buckets[le] = self.buckets.get(le, 0.0) + count

    def minus(self, earlier: Traffic | None) -> Traffic | None:
        """The counts since ``earlier``; None when a counter went down (the proxy restarted)."""
        if earlier is None:
            return Traffic(self.requests, self.successes, dict(self.buckets))
        delta = Traffic(self.requests - earlier.requests, self.successes - earlier.successes)
        for le, count in self.buckets.items():
            delta.buckets[le] = count - earlier.buckets.get(le, 0.0)
        if delta.requests < 0 or delta.successes < 0 or any(v < 0 for v in delta.buckets.values()):
            return None
        return delta


@dataclass(slots=True)
class ProxySnapshot:
    """What one scrape of a proxy's /metrics says, reduced to what stats need."""

    at: float  # Unix time of the scrape (or of the proxy's start, for the zero baseline)
    start_time: float | None
    traffic: dict[tuple[str, str], Traffic] = field(default_factory=dict)  # (direction, peer service)
    tcp_open: dict[str, float] = field(default_factory=dict)  # direction → open connections

    @classmethod
    def from_samples(cls, samples: Iterable[Sample], at: float) -> ProxySnapshot:
        snapshot = cls(at, None)
        traffic = snapshot.traffic
        for sample in samples:
            name = sample.name
            if name == "response_total":
                labels = sample.labels_dict
                key = (labels.get("direction", ""), labels.get("peer_service", ""))
                entry = traffic.setdefault(key, Traffic())
                entry.requests += sample.value
                if labels.get("classification") == "success":
                    entry.successes += sample.value
            elif name == "response_latency_ms_bucket":
                labels = sample.labels_dict
                key = (labels.get("direction", ""), labels.get("peer_service", ""))
                try:
                    le = float(labels.get("le", "+Inf"))
                except ValueError:
                    continue
                buckets = traffic.setdefault(key, Traffic()).buckets
                buckets[le] = buckets.get(le, 0.0) + sample.value
            elif name == "tcp_open_connections":
                direction = sample.label("direction") or ""
                snapshot.tcp_open[direction] = snapshot.tcp_open.get(direction, 0.0) + sample.value
            elif name == "process_start_time_seconds":
                snapshot.start_time = sample.value
        return snapshot

    @classmethod
    def zero(cls, start_time: float) -> ProxySnapshot:
        return cls(start_time, start_time)

    def since(self, baseline: ProxySnapshot) -> dict[tuple[str, str], Traffic]:
        """Traffic between ``baseline`` and this snapshot (all of it if a counter was reset)."""
        deltas: dict[tuple[str, str], Traffic] = {}
        for key, traffic in self.traffic.items():
            delta = traffic.minus(baseline.traffic.get(key))
            if delta is None:
                return {k: Traffic(t.requests, t.successes, dict(t.buckets)) for k, t in self.traffic.items()}
            deltas[key] = delta
        return deltas


def choose_baseline(history: Iterable[ProxySnapshot], current: ProxySnapshot, window: float) -> ProxySnapshot | None:
    """The earlier snapshot that best spans ``window`` up to ``current``.

    Candidates are the kept snapshots of the same process (same start time)
    at least ``MIN_SPAN`` older than ``current``, and the process start itself
    (all counters zero). The one closest to ``current.at - window`` wins.
    None when nothing qualifies (no start time, no history).
    """
    target = current.at - window
    candidates = [
        s for s in history if s.at <= current.at - MIN_SPAN and s.start_time == current.start_time
    ]
    if current.start_time is not None and current.start_time <= current.at - MIN_SPAN:
        candidates.append(ProxySnapshot.zero(current.start_time))
    if not candidates:
        return None
    return min(candidates, key=lambda s: (abs(s.at - target), -s.at))


# ------------------------------------------------------------------ aggregation (pure)


@dataclass(slots=True)
class _Group:
    instances: int = 0
    reachable: int = 0
    traffic: Traffic = field(default_factory=Traffic)
    rps: float = 0.0
    tcp: float = 0.0
    span: float | None = None

    def add_instance(self, delta: Traffic | None, span: float | None, tcp: float) -> None:
        self.instances += 1
        if delta is None:
            return
        self.reachable += 1
        self.traffic.add(delta)
        if span:
            self.rps += delta.requests / span
            self.span = max(self.span or 0.0, span)
        self.tcp += tcp

    def to_dict(self) -> dict[str, Any]:
        t = self.traffic
        return {
            "instances": self.instances,
            "reachable": self.reachable,
            "requests": _int(t.requests) if self.reachable else None,
            "successes": _int(t.successes) if self.reachable else None,
            "failures": _int(t.requests - t.successes) if self.reachable else None,
            "success_rate": (t.successes / t.requests) if t.requests > 0 else None,
            "rps": round(self.rps, 3) if self.reachable else None,
            "latency_ms": _quantiles(t.buckets),
            "tcp_connections": _int(self.tcp) if self.reachable else None,
            "window_seconds": round(self.span, 1) if self.span is not None else None,
        }


def _int(value: float) -> int:
    return int(round(value))


def _quantiles(buckets: Mapping[float, float]) -> dict[str, float | None]:
    pairs = sorted(buckets.items())
    result: dict[str, float | None] = {}
    for name, q in QUANTILES:
        value = histogram_quantile(q, pairs) if pairs else None
        result[name] = round(value, 3) if value is not None and math.isfinite(value) else None
    return result


def aggregate(
    targets: list[ProxyTarget],
    scrapes: Mapping[Any, ProxySnapshot | str],
    baselines: Mapping[Any, ProxySnapshot | None],
    window: float,
    trust_domain: str,
    now: float,
) -> dict[str, Any]:
    """The ``/v1/stats`` answer, from each target's scrape (or why it failed) and baseline.

    Services and versions count inbound traffic: what the service's own
    proxies served (Linkerd's view of a workload). Edges come from both ends:
    a source's outbound metrics and a destination's inbound ones (the latter
    only exist for calls that arrived over mTLS with a verified identity).
    """
    services: dict[str, _Group] = {}
    versions: dict[tuple[str, str], _Group] = {}
    identities: dict[str, set[str]] = {}
    proxies: list[dict[str, Any]] = []
    unreachable: list[dict[str, Any]] = []
    edges: dict[tuple[str, str], dict[str, Any]] = {}

    for target in targets:
        identities.setdefault(target.service, set()).add(target.identity)
        scrape = scrapes.get(target.key)
        entry = {**target.describe(), "identity": target.identity, "labels": dict(target.labels)}
        if not isinstance(scrape, ProxySnapshot):
            error = scrape if isinstance(scrape, str) else "not scraped"
            unreachable.append({**target.describe(), "error": error})
            proxies.append({**entry, "reachable": False, "error": error, "window_seconds": None})
            services.setdefault(target.service, _Group()).add_instance(None, None, 0.0)
            if target.version is not None:
                versions.setdefault((target.service, target.version), _Group()).add_instance(None, None, 0.0)
            continue
        baseline = baselines.get(target.key)
        if baseline is not None:
            deltas, span = scrape.since(baseline), scrape.at - baseline.at
        else:  # no start time and no history: treat the whole life as the window
            deltas, span = scrape.since(ProxySnapshot(scrape.at - window, None)), window
        proxies.append({**entry, "reachable": True, "error": None, "window_seconds": round(span, 1)})
        inbound = Traffic()
        for (direction, _peer), delta in deltas.items():
            if direction == "inbound":
                inbound.add(delta)
        tcp = scrape.tcp_open.get("inbound", 0.0)
        services.setdefault(target.service, _Group()).add_instance(inbound, span, tcp)
        if target.version is not None:
            versions.setdefault((target.service, target.version), _Group()).add_instance(inbound, span, tcp)
        for (direction, peer), total in scrape.traffic.items():
            if not peer or direction not in ("inbound", "outbound"):
                continue
            if direction == "outbound":
                key, side = (target.service, peer), "source"
            else:
                key, side = (peer, target.service), "destination"
            edge = edges.setdefault(key, {"source": None, "destination": None})
            delta = deltas.get((direction, peer)) or Traffic()
            seen = edge[side] or {"total": 0.0, "rps": 0.0, "window": Traffic()}
            seen["total"] += total.requests
            seen["window"].add(delta)
            seen["rps"] += delta.requests / span if span else 0.0
            edge[side] = seen

    def default_identity(service: str) -> list[str]:
        return sorted(identities.get(service) or {f"spiffe://{trust_domain}/svc/{service}"})

    edge_list = []
    for (src, dst), sides in sorted(edges.items()):
        # The source's view counts calls that never reached the destination (connect failures).
        counts = sides["source"] or sides["destination"]
        in_window: Traffic = counts["window"]
        egress = dst == "egress"
        edge_list.append(
            {
                "src": src,
                "dst": dst,
                "src_identities": default_identity(src),
                "dst_identities": [] if egress else default_identity(dst),
                # Proxies dial mesh services only over mTLS (identity checked), and
                # a destination only counts calls that arrived that way.
                "mtls": not egress,
                "seen_by": [side for side in ("source", "destination") if sides[side]],
                "total_requests": _int(counts["total"]),
                "requests": _int(in_window.requests),
                "success_rate": (in_window.successes / in_window.requests) if in_window.requests else None,
                "rps": round(counts["rps"], 3),
                # The source's view when there is one: its latency includes the hop between proxies.
                "latency_ms": _quantiles(in_window.buckets),
            }
        )
    return {
        "window_seconds": window,
        "time": round(now, 3),
        "services": [{"service": name, "version": None, **g.to_dict()} for name, g in sorted(services.items())],
        "versions": [
            {"service": name, "version": version, **g.to_dict()} for (name, version), g in sorted(versions.items())
        ],
        "edges": edge_list,
        "proxies": proxies,
        "unreachable": unreachable,
    }


# ------------------------------------------------------------------ stats collector


class StatsCollector:
    """Scrapes every proxy on demand, and every ``SAMPLE_PERIOD`` in the background once asked."""

    def __init__(
        self,
        targets: Callable[[], list[ProxyTarget]],
        trust_domain: str,
        dialer: AdminDialer,
        clock: Callable[[], float] = time.time,
        period: float = SAMPLE_PERIOD,
    ) -> None:
        self._targets = targets
        self._dialer = dialer
        self._trust_domain = trust_domain
        self._clock = clock
        self._period = period
        self._history: dict[Any, deque[ProxySnapshot]] = {}
        self._sampler_running = False
        self._last_asked = 0.0

    async def stats(self, window: float) -> dict[str, Any]:
        self._last_asked = self._clock()
        self._start_sampler()
        targets = self._targets()
        scrapes = await self.scrape(targets)
        baselines: dict[Any, ProxySnapshot | None] = {}
        for key, scrape in scrapes.items():
            if isinstance(scrape, ProxySnapshot):
                history = [s for s in self._history.get(key, ()) if s is not scrape]
                baselines[key] = choose_baseline(history, scrape, window)
        return aggregate(targets, scrapes, baselines, window, self._trust_domain, self._clock())

    async def scrape(self, targets: list[ProxyTarget]) -> dict[Any, ProxySnapshot | str]:
        """Every target's /metrics, concurrently, each under SCRAPE_TIMEOUT; kept in the history."""
        results: dict[Any, ProxySnapshot | str] = {}

        async def one(target: ProxyTarget) -> None:
            try:
                status, body = await admin_get(self._dialer, target, "/metrics", SCRAPE_TIMEOUT)
                if status != 200:
                    raise AdminUnreachable(f"{target.address}: /metrics answered {status}")
                samples = parse_prometheus_text(body.decode("utf-8", "replace"))
            except AdminUnreachable as exc:
                results[target.key] = str(exc)
                return
            except ValueError as exc:
                results[target.key] = f"{target.address}: unreadable metrics: {exc}"
                return
            results[target.key] = self._remember(target.key, ProxySnapshot.from_samples(samples, self._clock()))

        async with trio.open_nursery() as nursery:
            for target in targets:
                nursery.start_soon(one, target)
        self._forget_gone({t.key for t in targets})
        return results

    def _remember(self, key: Any, snapshot: ProxySnapshot) -> ProxySnapshot:
        history = self._history.get(key)
        if history is None:
            history = self._history[key] = deque(maxlen=int(MAX_WINDOW / self._period) + 2)
        if history and history[-1].start_time != snapshot.start_time:
            history.clear()  # a new process: its counters started again
        if history and snapshot.at - history[-1].at < self._period / 2:
            history.pop()  # keep the ring about one period apart
        history.append(snapshot)
        return snapshot

    def _forget_gone(self, present: set[Any]) -> None:
        now = self._clock()
        for key in [k for k, h in self._history.items() if k not in present]:
            history = self._history[key]
            if not history or now - history[-1].at > MAX_WINDOW:
                del self._history[key]

    def _start_sampler(self) -> None:
        if self._sampler_running:
            return
        self._sampler_running = True
        _spawn_guarded(self._sample, "stats sampler")

    async def _sample(self) -> None:
        try:
            while self._clock() - self._last_asked < SAMPLER_IDLE_STOP:
                await trio.sleep(self._period)
                with trio.move_on_after(self._period * 2):
                    await self.scrape(self._targets())
            log.info("stats sampler stopped: no stats asked for in %gs", SAMPLER_IDLE_STOP)
        finally:
            self._sampler_running = False


def parse_window(text: str | None, default: float = 60.0) -> float:
    """``window`` in seconds (a number, or a duration like ``1m``); ValueError when out of range."""
    if text is None or text == "":
        return default
    try:
        value = float(text)
    except ValueError:
        from mesh.config import parse_duration

        value = parse_duration(text)
    if not MIN_SPAN <= value <= MAX_WINDOW or math.isnan(value):
        raise ValueError(f"window must be from {MIN_SPAN:g}s to {MAX_WINDOW:g}s, not {text!r}")
    return value
