"""The app behind the fuzzed proxies: it records every request it receives and says what it saw.

Run as ``python recording_app.py RECORDS`` (prints ``listening 127.0.0.1:PORT``). One port speaks
HTTP/1.1 and h2c (prior knowledge, told apart by the connection preface), as the inbound proxy
talks to an app either way. Each request adds JSON lines to RECORDS, written before it is answered:

    {"proto": "h1", "event": "head", "method": "GET", "target": "/fz-…", "conn": 3, "stream": 0,
     "client_ids": ["spiffe://…/svc/client"]}
    {"proto": "h1", "event": "complete", …}      the whole body arrived as framed

"head" is written when the head is parsed, "complete" once the body ended as its framing says.
The app is deliberately lenient (the stdlib HTTP/1 parser, h2 without header validation): it takes
what the proxy hands it, so a request the proxy should have refused shows up here rather than
being refused a second time. Answers are 200 with ``x-seen: <marker>`` (the marker of the target,
see tests/fuzz/harness.py), so a client can tell the app's answer from the mesh's; a target with
``chunked`` in it gets a chunked answer (over HTTP/1.1), so the proxies re-frame one.
"""

from __future__ import annotations

import itertools
import json
import re
import socket
import socketserver
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler
from typing import Any

import h2.config
import h2.connection
import h2.events
import h2.exceptions

H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
MARKER = re.compile(rb"(?:fz|canary)-[A-Za-z0-9]+")

_lock = threading.Lock()
_records: Any = None
_connections = itertools.count(1)


def marker_of(target: bytes) -> bytes:
    found = MARKER.search(target)
    return found.group(0) if found else b"-"


def record(
    proto: str, event: str, conn: int, stream: int, method: bytes, target: bytes, client_ids: list[bytes] | None = None
) -> None:
    line = json.dumps(
        {
            "proto": proto,
            "event": event,
            "conn": conn,
            "stream": stream,
            "method": method.decode("latin-1"),
            "target": target.decode("latin-1"),
            "client_ids": [v.decode("latin-1") for v in client_ids or []],  # every mesh-client-id it came with
            "time": time.time(),
        }
    )
    with _lock:
        _records.write(line + "\n")
        _records.flush()


class Http1Recorder(BaseHTTPRequestHandler):
    """Any method: record the head, read the body as framed, record it complete, answer."""

    protocol_version = "HTTP/1.1"
    server_version = "recording-app"
    conn_id = 0

    def log_message(self, format: str, *args: object) -> None:  # keep the app's log for real problems
        pass

    def __getattr__(self, name: str) -> Any:
        if name.startswith("do_"):  # every method the stdlib parser accepts, known or not
            return self._serve
        raise AttributeError(name)

    def _serve(self) -> None:
        method, target = self.command.encode("latin-1"), self.path.encode("latin-1")
        client_ids = [v.encode("latin-1") for v in self.headers.get_all("mesh-client-id") or []]
        record("h1", "head", self.conn_id, 0, method, target, client_ids)
        try:
            self._read_body()
        except (ValueError, OSError) as exc:
            record("h1", f"body-error {type(exc).__name__}", self.conn_id, 0, method, target)
            self.close_connection = True
            return
        record("h1", "complete", self.conn_id, 0, method, target)
        body = b"seen " + marker_of(target) + b"\n"
        self.send_response(200)
        self.send_header("x-seen", marker_of(target).decode("latin-1"))
        chunked = b"chunked" in target and self.request_version == "HTTP/1.1"
        self.send_header("Transfer-Encoding" if chunked else "Content-Length", "chunked" if chunked else str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body) if chunked else body)

    def _read_body(self) -> None:
        codings = self.headers.get("Transfer-Encoding", "")
        if codings.lower().rstrip().endswith("chunked"):
            while True:
                line = self.rfile.readline(65537)
                if not line.endswith(b"\n"):
                    raise ValueError("truncated chunk size line")
                size = int(line.split(b";")[0].strip(), 16)
                if size == 0:
                    while True:  # trailers, up to the empty line
                        trailer = self.rfile.readline(65537)
                        if not trailer.endswith(b"\n"):
                            raise ValueError("truncated trailers")
                        if trailer in (b"\r\n", b"\n"):
                            return
                self._read_exactly(size)
                if self.rfile.readline(3) not in (b"\r\n", b"\n"):
                    raise ValueError("chunk data not followed by CRLF")
        length = self.headers.get("Content-Length")
        if length is not None:
            self._read_exactly(int(length))

    def _read_exactly(self, size: int) -> None:
        while size > 0:
            data = self.rfile.read(min(size, 65536))
            if not data:
                raise ValueError("the body ended early")
            size -= len(data)


def serve_h2(sock: socket.socket, conn_id: int) -> None:
    config = h2.config.H2Configuration(
        client_side=False, header_encoding=None, validate_inbound_headers=False, normalize_inbound_headers=False
    )
    conn = h2.connection.H2Connection(config)
    conn.initiate_connection()
    sock.sendall(conn.data_to_send())
    heads: dict[int, tuple[bytes, bytes]] = {}
    while True:
        data = sock.recv(65536)
        if not data:
            return
        try:
            events = conn.receive_data(data)
        except h2.exceptions.ProtocolError as exc:
            record("h2", f"h2-error {type(exc).__name__}", conn_id, 0, b"", b"")
            sock.sendall(conn.data_to_send())
            return
        for event in events:
            if isinstance(event, h2.events.RequestReceived):
                fields = dict(event.headers or [])
                head = fields.get(b":method", b""), fields.get(b":path", b"")
                heads[event.stream_id] = head
                client_ids = [v for k, v in event.headers or [] if k.lower() == b"mesh-client-id"]
                record("h2", "head", conn_id, event.stream_id, *head, client_ids)
            elif isinstance(event, h2.events.DataReceived):
                conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            elif isinstance(event, h2.events.StreamEnded) and event.stream_id in heads:
                method, target = heads.pop(event.stream_id)
                record("h2", "complete", conn_id, event.stream_id, method, target)
                body = b"seen " + marker_of(target) + b"\n"
                try:
                    conn.send_headers(
                        event.stream_id,
                        [(b":status", b"200"), (b"x-seen", marker_of(target)), (b"content-length", b"%d" % len(body))],
                    )
                    if method == b"HEAD":
                        conn.end_stream(event.stream_id)
                    else:
                        conn.send_data(event.stream_id, body, end_stream=True)
                except h2.exceptions.ProtocolError:
                    pass  # the peer reset the stream meanwhile
            elif isinstance(event, h2.events.StreamReset):
                heads.pop(event.stream_id, None)
            elif isinstance(event, h2.events.ConnectionTerminated):
                sock.sendall(conn.data_to_send())
                return
        pending = conn.data_to_send()
        if pending:
            sock.sendall(pending)


class Dispatcher(socketserver.BaseRequestHandler):
    """Peek at the first bytes: the h2 preface goes to the h2 loop, anything else to HTTP/1."""

    def handle(self) -> None:
        conn_id = next(_connections)
        sock: socket.socket = self.request
        sock.settimeout(600)
        peeked = b""
        deadline = time.monotonic() + 5
        while len(peeked) < len(H2_PREFACE) and H2_PREFACE.startswith(peeked) and time.monotonic() < deadline:
            more = sock.recv(len(H2_PREFACE), socket.MSG_PEEK)
            if not more:  # closed before a byte
                return
            if len(more) == len(peeked):  # a preface split across writes: wait for the rest
                time.sleep(0.01)
            peeked = more
        try:
            if peeked == H2_PREFACE:
                serve_h2(sock, conn_id)
            else:
                handler = type("Bound", (Http1Recorder,), {"conn_id": conn_id})
                handler(sock, self.client_address, self.server)
        except OSError:
            pass


class Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


def main() -> None:
    global _records
    _records = open(sys.argv[1], "a", encoding="utf-8")
    server = Server(("127.0.0.1", 0), Dispatcher)
    print(f"listening 127.0.0.1:{server.server_address[1]}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
