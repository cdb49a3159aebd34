"""Small real servers the integration tests put behind the mesh.

Run as a script: ``python apps.py http PORT`` (an HTTP/1.1 test app) or
``python apps.py echo PORT`` (a TCP echo server). Standard library only, so
they behave like any app a user would run.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import socket
import socketserver
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class TestApp(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "testapp"

    def log_message(self, format: str, *args: object) -> None:  # keep test output quiet
        pass

    def _send(self, status: int, body: bytes, content_type: str = "text/plain", extra: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for key, value in (extra or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def do_HEAD(self) -> None:
        self.do_GET()

    def do_GET(self) -> None:
        fail_file = os.environ.get("APP_FAIL_FILE")
        if fail_file and os.path.exists(fail_file):  # tests switch this app to failing and back
            self._send(503, f"{self.server.name} is failing\n".encode(), extra={"x-app": self.server.name})  # type: ignore[attr-defined]
            return
        path, _, query = self.path.partition("?")
        params = dict(p.split("=", 1) for p in query.split("&") if "=" in p)
        if path == "/headers":
            body = json.dumps({k.lower(): v for k, v in self.headers.items()}).encode()
            self._send(200, body, "application/json")
        elif path == "/slow":
            time.sleep(float(params.get("seconds", "1")))
            self._send(200, b"slow done\n")
        elif path == "/bytes":
            # A large download, streamed in 64 KiB pieces with Content-Length.
            size = int(params.get("size", "1048576"))
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(size))
            self.end_headers()
            piece = b"x" * 65536
            left = size
            while left > 0:
                n = min(left, len(piece))
                self.wfile.write(piece[:n])
                left -= n
        elif path == "/chunked":
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            if "trailer" in params:  # announce a trailer field, then send it after the last chunk
                self.send_header("Trailer", "x-sum")
            self.end_headers()
            for i in range(int(params.get("n", "3"))):
                data = f"chunk {i}\n".encode()
                self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
            self.wfile.write(b"0\r\nx-sum: %s\r\n\r\n" % params["trailer"].encode() if "trailer" in params else b"0\r\n\r\n")
        elif path == "/die":
            # Promise 1000 bytes, send 10, then drop the connection.
            self.send_response(200)
            self.send_header("Content-Length", "1000")
            self.end_headers()
            self.wfile.write(b"0123456789")
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
            self.close_connection = True
        elif path == "/status":
            self._send(int(params.get("code", "200")), b"status\n")
        elif path == "/ws":
            self._websocket()
        else:
            self._send(200, f"hello from {self.server.name}\n".encode(), extra={"x-app": self.server.name})  # type: ignore[attr-defined]

    def do_POST(self) -> None:
        # Count the body as it streams; never hold it whole.
        digest = hashlib.sha256()
        total = 0
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            while True:
                size = int(self.rfile.readline().split(b";")[0], 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b""):
                        pass
                    break
                left = size
                while left:
                    data = self.rfile.read(min(left, 65536))
                    digest.update(data)
                    total += len(data)
                    left -= len(data)
                self.rfile.readline()
        else:
            left = int(self.headers.get("Content-Length", "0"))
            while left:
                data = self.rfile.read(min(left, 65536))
                if not data:
                    break
                digest.update(data)
                total += len(data)
                left -= len(data)
        body = json.dumps({"received": total, "sha256": digest.hexdigest()}).encode()
        self._send(200, body, "application/json")

    do_PUT = do_POST

    def _websocket(self) -> None:
        key = self.headers.get("Sec-WebSocket-Key", "")
        accept = base64.b64encode(hashlib.sha1((key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest())
        self.send_response(101)
        self.send_header("Upgrade", "websocket")
        self.send_header("Connection", "Upgrade")
        self.send_header("Sec-WebSocket-Accept", accept.decode())
        self.end_headers()
        self.wfile.flush()
        # Echo whatever frames arrive, byte for byte, until the client closes.
        conn = self.connection
        while True:
            data = conn.recv(65536)
            if not data:
                break
            conn.sendall(data)
        self.close_connection = True


class EchoHandler(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        while True:
            data = self.request.recv(65536)
            if not data:
                return
            self.request.sendall(data)


class BannerHandler(EchoHandler):
    """A server that speaks first (as SMTP, MySQL or SSH do), then echoes."""

    def handle(self) -> None:
        self.request.sendall(b"220 banner ready\r\n")
        super().handle()


class ThreadingTCPServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


def serve_http(port: int, name: str) -> ThreadingHTTPServer:
    server = ThreadingHTTPServer(("127.0.0.1", port), TestApp)
    server.daemon_threads = True
    server.name = name  # type: ignore[attr-defined]
    return server


def main() -> None:
    kind, port = sys.argv[1], int(sys.argv[2])
    name = sys.argv[3] if len(sys.argv) > 3 else "app"
    server: socketserver.BaseServer
    if kind == "http":
        server = serve_http(port, name)
    elif kind == "echo":
        server = ThreadingTCPServer(("127.0.0.1", port), EchoHandler)
    elif kind == "banner":
        server = ThreadingTCPServer(("127.0.0.1", port), BannerHandler)
    else:
        raise SystemExit(f"unknown app kind {kind!r}")
    address = server.server_address  # type: ignore[attr-defined]
    print(f"listening {address[0]}:{address[1]}", flush=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
