"""Where each request's ``RequestRecord`` goes: metrics always, a tap event while anyone listens.

The HTTP/1 loop hands every finished request to a ``Recorder``; the proxy gives
each connection one made here. With nobody tapping, the cost on top of the
metrics is one attribute check (``tap.active``): no event object is built.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from mesh.proxy._edge import EdgeClient
from mesh.proxy._exchange import Recorder, RequestRecord
from mesh.telemetry import TapEvent

if TYPE_CHECKING:
    from mesh.proxy._server import Proxy

REQUEST_ID = b"x-request-id"


def recorder(proxy: Proxy, caller: Any = None) -> Recorder:
    """The recorder of one connection; ``caller`` is the peer's SpiffeId on inbound connections, the
    outside client (``EdgeClient``) on a gateway's."""
    record_metrics = proxy.metrics.record
    tap = proxy.tap

    def record(rec: RequestRecord) -> None:
        record_metrics(rec)
        if tap.active:
            tap.publish(tap_event(proxy, rec, caller))

    return record


def tap_event(proxy: Proxy, rec: RequestRecord, caller: Any = None) -> TapEvent:
    own_service = proxy.settings.service
    own_identity = str(proxy.identity.creds.identity)
    forward = rec.forward
    key = forward.key if forward is not None else None
    if rec.direction == "inbound":
        src_service = rec.peer_service or (caller.name if caller is not None else None)
        src_identity = str(caller) if caller is not None else None
        dst_service: str | None = own_service
        dst_identity: str | None = own_identity
        dst_address = key.address if key is not None else _app_address(proxy)
        tls = True  # the inbound listener only speaks mTLS
    else:
        src_service, src_identity = own_service, own_identity
        peer = rec.peer_service
        dst_service = peer if peer and peer != "egress" else None
        dst_identity = key.identity if key is not None else None
        dst_address = key.address if key is not None else None
        tls = key is not None and key.alpn is not None
    authority, path = _authority_and_path(rec)
    return TapEvent(
        timestamp=time.time() - rec.latency_ms / 1000.0,
        proxy=own_service,
        direction=rec.direction,
        request_id=_request_id(rec),
        src_service=src_service,
        src_identity=src_identity,
        dst_service=dst_service,
        dst_identity=dst_identity,
        dst_address=dst_address,
        method=rec.method.decode("latin-1"),
        authority=authority,
        path=path,
        status=rec.status,
        latency_ms=rec.latency_ms,
        mesh_error=rec.mesh_error,
        tls=tls,
        response_bytes=rec.bytes_out or None,
        grpc_status=rec.grpc_status,
        src_address=str(caller.address(rec.head)) if isinstance(caller, EdgeClient) else None,
    )


def _authority_and_path(rec: RequestRecord) -> tuple[str, str]:
    """Origin-form path: an HTTP proxy request (``GET http://web/a``) shows as ``/a``, like it does inbound."""
    authority = rec.authority.decode("latin-1")
    target = rec.path.decode("latin-1")
    if rec.method == b"CONNECT":
        return authority or target, ""
    scheme, sep, rest = target.partition("://")
    if sep and scheme.lower() in ("http", "https"):
        host, slash, path = rest.partition("/")
        if not slash:
            host, question, query = rest.partition("?")
            path = "/" + (question + query if question else "")
        else:
            path = "/" + path
        return authority or host, path
    return authority, target


def _request_id(rec: RequestRecord) -> str | None:
    """The request's x-request-id: as it arrived, or the one the outbound side added."""
    value = rec.head.header(REQUEST_ID) if rec.head is not None else None
    if value is None and rec.forward is not None:
        value = next((v for k, v in rec.forward.add_headers if k.lower() == REQUEST_ID), None)
    return value.decode("latin-1") if value is not None else None


def _app_address(proxy: Proxy) -> str | None:
    key = proxy.app_key
    return key.address if key is not None else None
