"""The etcd v3 store: the ``Store`` interface over etcd's JSON gateway (``/v3/kv/*``,
``/v3/watch``, ``/v3/lease/*``, ``/v3/maintenance/status``).

Every member of the URL is used: a call goes to the member that answered last,
and to the next one when that one cannot be reached. A member that answers
"no leader" or times out on a write means the cluster has lost its quorum: the
call fails with ``StoreUnavailable`` (the controller turns read-only), it is
not retried on the other members, which know no better.

Keys and values travel base64-encoded, numbers as strings, and fields that are
zero are left out (protobuf's JSON mapping).
"""

from __future__ import annotations

import base64
import logging
import os
import ssl
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import trio

from mesh.controller._etcd_http import HttpFailure, HttpPool
from mesh.controller._store import (
    Compare,
    KeyValue,
    MemberHealth,
    Put,
    StoreCompacted,
    StoreEvent,
    StoreHealth,
    StoreUnavailable,
)
from mesh.errors import StoreError

log = logging.getLogger("mesh.controller.store")

CALL_TIMEOUT = 3.0  # etcd itself gives up on a write after ~5 s without quorum
STATUS_TIMEOUT = 1.0
PASSWORD_ENV = "MESH_ETCD_PASSWORD"
# gRPC status codes etcd returns through the gateway
_UNAVAILABLE_CODES = {4, 14}  # DEADLINE_EXCEEDED, UNAVAILABLE
_UNAUTHENTICATED = 16
_ELECTION_WORDS = ("no leader", "leader changed")
ELECTION_WAIT = 3.0
ELECTION_RETRY = 0.2
_NO_QUORUM_WORDS = ("no leader", "timed out", "leader changed", "not capable", "too many requests", "unhealthy")


def _b64(text: str | bytes) -> str:
    return base64.b64encode(text.encode() if isinstance(text, str) else text).decode()


def _unb64(text: str | None) -> bytes:
    return base64.b64decode(text) if text else b""


def _prefix_end(prefix: str) -> str:
    """etcd's range_end for "every key starting with prefix": the prefix with its last byte + 1."""
    raw = bytearray(prefix.encode())
    raw[-1] += 1
    return base64.b64encode(bytes(raw)).decode()


def _kv(item: dict[str, Any]) -> KeyValue:
    return KeyValue(
        _unb64(item.get("key")).decode(),
        _unb64(item.get("value")),
        int(item.get("mod_revision") or 0),
        int(item.get("lease") or 0),
    )


class EtcdStore:
    def __init__(self, url: Any) -> None:
        self.url = url
        self.endpoints: list[tuple[str, int]] = list(url.endpoints)
        self._preferred = 0
        self._pool = HttpPool(self._tls_context() if url.tls else None)
        self._token: str | None = None
        self._password: str | None = None
        self._members: dict[str, str] = {}  # member id -> name
        self._watch_scope: trio.CancelScope | None = None
        self._watch_member: str | None = None

    @property
    def location(self) -> str:
        return self.url.describe()

    def _tls_context(self) -> ssl.SSLContext:
        url = self.url
        try:
            context = ssl.create_default_context(cafile=url.ca)
            if url.cert:
                context.load_cert_chain(url.cert, url.key)
        except (OSError, ssl.SSLError) as exc:
            raise StoreError(
                f"cannot load the TLS files for {self.location}: {exc}",
                hint="ca=, cert= and key= in the store URL name PEM files readable by the controller",
            ) from None
        return context

    def _read_password(self) -> str:
        url = self.url
        if url.password_file:
            try:
                return open(url.password_file, encoding="utf-8").read().strip()
            except OSError as exc:
                raise StoreError(f"cannot read the etcd password from {url.password_file}: {exc.strerror}") from None
        password = os.environ.get(PASSWORD_ENV)
        if not password:
            raise StoreError(
                f"user={url.user} is in the store URL but no password is given",
                hint=f"set {PASSWORD_ENV}, or add password_file=FILE to the URL",
            )
        return password

    # -- calls ---------------------------------------------------------------------------

    async def open(self) -> None:
        """Reach a member (and log in): fail now with a clear error rather than on the first write."""
        if self.url.user:
            self._password = self._read_password()
        await self._call("/v3/maintenance/status", {})

    async def _authenticate(self, host: str, port: int) -> None:
        status, body = await self._pool.post(
            host,
            port,
            "/v3/auth/authenticate",
            {"name": self.url.user, "password": self._password},
            {},
            CALL_TIMEOUT,
        )
        if status != 200 or not body.get("token"):
            raise StoreError(
                f"etcd refused user {self.url.user!r} at {host}:{port}: {_message(body)}",
                hint=f"check the user and the password ({PASSWORD_ENV} or password_file)",
            )
        self._token = str(body["token"])

    async def _call(self, path: str, payload: dict[str, Any], timeout: float = CALL_TIMEOUT) -> dict[str, Any]:
        """POST to the preferred member (then the others); through an election, again until it is over.

        A member that loses its leader (one of three killed, say) answers "leader changed" or
        "no leader" until the others elect one, within an election timeout (1 s by default):
        the request was not applied, so it is sent again, for up to ELECTION_WAIT. A lost
        quorum outlasts that, and the call fails with StoreUnavailable."""
        deadline = trio.current_time() + ELECTION_WAIT
        while True:
            try:
                return await self._call_once(path, payload, timeout)
            except StoreUnavailable as exc:
                if not any(word in exc.message for word in _ELECTION_WORDS) or trio.current_time() > deadline:
                    raise
                log.debug("%s; trying again", exc.message)
                await trio.sleep(ELECTION_RETRY)

    async def _call_once(self, path: str, payload: dict[str, Any], timeout: float) -> dict[str, Any]:
        failures: list[str] = []
        count = len(self.endpoints)
        for attempt in range(count):
            index = (self._preferred + attempt) % count
            host, port = self.endpoints[index]
            try:
                if self.url.user and self._token is None:
                    await self._authenticate(host, port)
                status, body = await self._pool.post(host, port, path, payload, self._headers(), timeout)
                if status != 200 and body.get("code") == _UNAUTHENTICATED and self.url.user:
                    await self._authenticate(host, port)  # the token expired: once more with a new one
                    status, body = await self._pool.post(host, port, path, payload, self._headers(), timeout)
            except HttpFailure as exc:
                failures.append(str(exc))
                await self._pool.forget(host, port)
                continue
            if status != 200:
                self._raise_for(body, f"{host}:{port}")
            self._preferred = index
            return body
        raise StoreUnavailable(
            f"no member of {self.location} answers ({'; '.join(failures)})",
            hint="are the etcd members running and reachable from this host?",
        )

    def _headers(self) -> dict[str, str]:
        return {"Authorization": self._token} if self._token else {}

    def _raise_for(self, body: dict[str, Any], member: str) -> None:
        message = _message(body)
        code = body.get("code")
        if "compacted" in message:
            raise StoreCompacted(f"{self.location}: {message}")
        if code in _UNAVAILABLE_CODES or any(word in message for word in _NO_QUORUM_WORDS):
            raise StoreUnavailable(
                f"{self.location} cannot take writes: {message} (at {member}; has the cluster lost its quorum?)",
                hint="`mesh check` shows which members answer; the controllers serve the last state read-only meanwhile",
            )
        if code == _UNAUTHENTICATED or "permission denied" in message:
            raise StoreError(
                f"{self.location} refused access: {message}",
                hint="give the etcd user read and write on the mesh's prefix",
            )
        raise StoreError(f"{self.location} answered an error at {member}: {message}")

    # -- Store -----------------------------------------------------------------------------

    async def range(self, prefix: str) -> tuple[list[KeyValue], int]:
        body = await self._call("/v3/kv/range", {"key": _b64(prefix), "range_end": _prefix_end(prefix)})
        return [_kv(item) for item in body.get("kvs", [])], int(body.get("header", {}).get("revision") or 0)

    async def get(self, key: str) -> KeyValue | None:
        body = await self._call("/v3/kv/range", {"key": _b64(key)})
        items = body.get("kvs") or []
        return _kv(items[0]) if items else None

    async def commit(
        self, puts: Sequence[Put] = (), deletes: Sequence[str] = (), compares: Sequence[Compare] = ()
    ) -> int | None:
        success: list[dict[str, Any]] = [
            {
                "request_put": {
                    "key": _b64(p.key),
                    "value": _b64(p.value),
                    **({"lease": str(p.lease)} if p.lease else {}),
                }
            }
            for p in puts
        ]
        success += [{"request_delete_range": {"key": _b64(key)}} for key in deletes]
        compare = [
            {"key": _b64(c.key), "target": "MOD", "result": "EQUAL", "mod_revision": str(c.mod_revision)}
            for c in compares
        ]
        body = await self._call("/v3/kv/txn", {"compare": compare, "success": success, "failure": []})
        if compares and not body.get("succeeded"):
            return None
        return int(body.get("header", {}).get("revision") or 0)

    async def grant(self, ttl: float) -> int:
        body = await self._call("/v3/lease/grant", {"TTL": str(max(1, round(ttl)))})
        if body.get("error"):
            raise StoreError(f"{self.location} refused a lease: {body['error']}")
        return int(body["ID"])

    async def keepalive(self, lease: int) -> bool:
        body = await self._call("/v3/lease/keepalive", {"ID": str(lease)})
        return int((body.get("result") or {}).get("TTL") or 0) > 0

    async def revoke(self, lease: int) -> None:
        try:
            await self._call("/v3/lease/revoke", {"ID": str(lease)})
        except StoreError as exc:
            if "not found" not in exc.message:
                raise

    @asynccontextmanager
    async def watch(self, prefix: str, after: int) -> AsyncIterator[AsyncIterator[list[StoreEvent]]]:
        request = {
            "create_request": {
                "key": _b64(prefix),
                "range_end": _prefix_end(prefix),
                "start_revision": str(after + 1),
                "progress_notify": True,
            }
        }
        host, port = self.endpoints[self._preferred]
        try:
            if self.url.user and self._token is None:
                await self._authenticate(host, port)
            # A member cut off from the others keeps the stream open and silent: `health`
            # cancels this scope when the member it is on loses the leader, and the
            # caller watches again, on a healthy member.
            with trio.CancelScope() as self._watch_scope:
                self._watch_member = f"{host}:{port}"
                async with self._pool.stream(host, port, "/v3/watch", request, self._headers()) as lines:
                    yield self._events(lines, f"{host}:{port}")
        except HttpFailure as exc:
            self._preferred = (self._preferred + 1) % len(self.endpoints)  # watch elsewhere next time
            raise StoreUnavailable(f"the stream broke ({exc})") from None

    async def _events(self, lines: AsyncIterator[tuple[int, Any]], member: str) -> AsyncIterator[list[StoreEvent]]:
        async for status, item in lines:
            if status != 200 or "error" in item:
                self._raise_for(item.get("error") if isinstance(item.get("error"), dict) else item, member)
            result = item.get("result") or {}
            if result.get("compact_revision") and result.get("canceled"):
                raise StoreCompacted(f"{self.location} compacted past revision {result['compact_revision']}")
            if result.get("canceled"):
                raise StoreUnavailable(f"{self.location} cancelled the watch: {result.get('cancel_reason', '')}")
            events = [
                StoreEvent(
                    _unb64(event["kv"].get("key")).decode(),
                    None if event.get("type") == "DELETE" else _unb64(event["kv"].get("value")),
                    int(event["kv"].get("mod_revision") or 0),
                    int(event["kv"].get("lease") or 0),
                )
                for event in result.get("events") or []
            ]
            if events:
                yield events
        raise StoreUnavailable(f"{member} ended the watch on {self.location}")

    async def health(self) -> StoreHealth:
        members = await self._member_names()
        results: list[MemberHealth] = []

        async def probe(host: str, port: int) -> None:
            endpoint = f"{host}:{port}"
            started = time.monotonic()
            try:
                status, body = await self._pool.post(
                    host, port, "/v3/maintenance/status", {}, self._headers(), STATUS_TIMEOUT
                )
            except HttpFailure as exc:
                await self._pool.forget(host, port)
                results.append(MemberHealth(endpoint, endpoint, False, error=str(exc).split(": ", 1)[-1]))
                return
            rtt = (time.monotonic() - started) * 1000
            if status != 200:
                results.append(MemberHealth(endpoint, endpoint, True, rtt_ms=rtt, error=_message(body)))
                return
            member = str(body.get("header", {}).get("member_id", ""))
            leader = str(body.get("leader") or "0")
            errors = body.get("errors") or []
            results.append(
                MemberHealth(
                    members.get(member, endpoint),
                    endpoint,
                    True,
                    leader=leader != "0" and leader == member,
                    rtt_ms=round(rtt, 2),
                    error="; ".join(errors) if errors else (None if leader != "0" else "no leader"),
                    version=body.get("version"),
                    raft_index=int(body.get("raftIndex") or 0),
                )
            )
            if leader != "0":
                leaders.add(members.get(leader, leader))

        leaders: set[str] = set()
        async with trio.open_nursery() as nursery:
            for host, port in self.endpoints:
                nursery.start_soon(probe, host, port)
        results.sort(key=lambda m: m.endpoint)
        self._avoid_unhealthy([m for m in results if not m.reachable or m.error is not None])
        size = max(len(members), len(self.endpoints))
        healthy = sum(1 for m in results if m.reachable and m.error is None)
        quorum = healthy >= size // 2 + 1
        leader = next(iter(leaders)) if len(leaders) == 1 else None
        reason = None
        if not quorum:
            reason = f"{healthy} of {size} members have a leader: quorum needs {size // 2 + 1}"
        return StoreHealth(
            backend="etcd",
            location=self.location,
            writable=quorum and leader is not None,
            reason=reason or (None if leader else "no leader"),
            members=tuple(results),
            leader=leader,
            quorum=quorum,
            details={"cluster_size": size},
        )

    def _avoid_unhealthy(self, unhealthy: list[MemberHealth]) -> None:
        """Calls and the watch move off members that are down or have no leader."""
        bad = {m.endpoint for m in unhealthy}
        if len(bad) == len(self.endpoints):
            return  # nowhere better to go
        if f"{self.endpoints[self._preferred][0]}:{self.endpoints[self._preferred][1]}" in bad:
            self._preferred = next(i for i, (h, p) in enumerate(self.endpoints) if f"{h}:{p}" not in bad)
        if self._watch_member in bad and self._watch_scope is not None:
            log.info("moving the watch off etcd member %s (it has no leader or does not answer)", self._watch_member)
            self._watch_scope.cancel()

    async def _member_names(self) -> dict[str, str]:
        try:
            body = await self._call("/v3/cluster/member/list", {}, timeout=STATUS_TIMEOUT)
        except StoreError:
            return self._members
        self._members = {str(m.get("ID")): str(m.get("name") or m.get("ID")) for m in body.get("members") or []}
        return self._members

    async def aclose(self) -> None:
        await self._pool.aclose()


def _message(body: Any) -> str:
    if isinstance(body, dict):
        return str(body.get("message") or body.get("error") or body)
    return str(body)
