"""A test OTLP/HTTP collector: every POST is decoded with the official ``opentelemetry-proto``
messages (``ExportTraceServiceRequest``), so what the proxies send is checked against the
real message set, not against mesh's own encoder."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)


def any_value(value: Any) -> Any:
    kind = value.WhichOneof("value")
    return getattr(value, kind) if kind else None


@dataclass
class ReceivedSpan:
    """One span as the collector decoded it, with its resource's attributes."""

    resource: dict[str, Any]
    scope: str
    trace_id: str
    span_id: str
    parent_id: str | None
    name: str
    kind: int
    start_ns: int
    end_ns: int
    attributes: dict[str, Any]
    status_code: int
    status_message: str
    trace_state: str
    flags: int

    @property
    def service(self) -> str:
        return self.resource["service.name"]


@dataclass
class OtlpReceiver:
    """``status`` is what it answers (change it to make the proxies' exports fail); ``hold``
    seconds it waits before answering (a slow collector)."""

    status: int = 200
    hold: float = 0.0
    spans: list[ReceivedSpan] = field(default_factory=list)
    posts: list[dict[str, str]] = field(default_factory=list)  # the headers of each POST
    errors: list[str] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> int:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                receiver._take(self.path, dict(self.headers.items()), body)
                if receiver.hold:
                    time.sleep(receiver.hold)
                answer = ExportTraceServiceResponse().SerializeToString() if receiver.status == 200 else b"refused\n"
                self.send_response(receiver.status)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        return self.server.server_address[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def _take(self, path: str, headers: dict[str, str], body: bytes) -> None:
        with self._lock:
            self.posts.append({"path": path, **{k.lower(): v for k, v in headers.items()}})
            if self.status != 200:
                return
            try:
                request = ExportTraceServiceRequest.FromString(body)
            except Exception as exc:  # noqa: BLE001 - the test fails on it
                self.errors.append(f"undecodable POST {path}: {exc!r}")
                return
            for resource_spans in request.resource_spans:
                resource = {kv.key: any_value(kv.value) for kv in resource_spans.resource.attributes}
                for scope_spans in resource_spans.scope_spans:
                    for span in scope_spans.spans:
                        self.spans.append(
                            ReceivedSpan(
                                resource=resource,
                                scope=scope_spans.scope.name,
                                trace_id=span.trace_id.hex(),
                                span_id=span.span_id.hex(),
                                parent_id=span.parent_span_id.hex() or None,
                                name=span.name,
                                kind=span.kind,
                                start_ns=span.start_time_unix_nano,
                                end_ns=span.end_time_unix_nano,
                                attributes={kv.key: any_value(kv.value) for kv in span.attributes},
                                status_code=span.status.code,
                                status_message=span.status.message,
                                trace_state=span.trace_state,
                                flags=span.flags,
                            )
                        )

    def wait_for(self, check: Callable[[list[ReceivedSpan]], Any], timeout: float = 15.0, what: str = "spans") -> Any:
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                snapshot = list(self.spans)
                errors = list(self.errors)
            assert not errors, errors
            result = check(snapshot)
            if result:
                return result
            if time.monotonic() > deadline:
                raise AssertionError(f"{what}: not received in {timeout}s; got {len(snapshot)} spans: {snapshot[-5:]}")
            time.sleep(0.1)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
