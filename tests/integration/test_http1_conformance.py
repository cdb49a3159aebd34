"""HTTP/1 conformance through the mesh: HTTP/1.0 clients (ab from apache2-utils, curl --http1.0)
and the end-to-end ``Trailer`` header.

RFC 9112 section 9.3 and appendix C.2.2: an HTTP/1.0 connection persists only when the client asks
with ``Connection: keep-alive`` and the response says ``Connection: keep-alive`` back; otherwise the
server closes after the response. RFC 9112 section 6.1: never a chunked response to an HTTP/1.0
client. The apps behind the mesh answer with Content-Length (``/``) or chunked (``/chunked``).
"""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
import time

import pytest

from tests.integration.conftest import Pair

pytestmark = pytest.mark.timeout(120)

AB = shutil.which("ab")


def _ab(pair: Pair, path: str, *flags: str) -> str:
    assert AB, "ab is not installed (.ci/run installs apache2-utils)"
    result = subprocess.run(
        [AB, *flags, "-n", "2000", "-c", "8", "-s", "10", "-X", f"127.0.0.1:{pair.client.outbound}", f"http://web{path}"],
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    return result.stdout


def _field(report: str, name: str) -> int:
    match = re.search(rf"^{name}:\s+(\d+)", report, re.MULTILINE)
    assert match, f"no {name!r} in the ab report:\n{report}"
    return int(match.group(1))


@pytest.mark.parametrize("path", ["/", "/chunked?n=4"])
def test_ab_keep_alive_through_the_mesh(pair: Pair, path: str) -> None:
    """`ab -k` (HTTP/1.0 with Connection: keep-alive) completes 2000 requests, with a Content-Length app
    and with a chunked one; it timed out when the response did not say keep-alive but the proxy kept
    the connection open. A chunked answer goes out close-delimited (this app writes each chunk on its
    own, so the body is rarely whole when its head arrives), and the connection closes after it."""
    report = _ab(pair, path, "-k")
    assert _field(report, "Complete requests") == 2000, report
    assert _field(report, "Failed requests") == 0, report
    if path == "/":
        assert _field(report, "Keep-Alive requests") == 2000, report
    report = _ab(pair, path)  # and without -k: one connection per request, closed by the proxy
    assert _field(report, "Complete requests") == 2000, report
    assert _field(report, "Failed requests") == 0, report


def _curl10(pair: Pair, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["curl", "-sS", "-v", "--http1.0", "--max-time", "10", "-x", f"http://127.0.0.1:{pair.client.outbound}", *args],
        capture_output=True,
        text=True,
        timeout=20,
    )


def test_curl_http10_keep_alive_only_when_asked(pair: Pair) -> None:
    """Asked for keep-alive: the answer says so and curl reuses the connection; not asked: the proxy
    closes after the response (curl waits for nothing)."""
    started = time.monotonic()
    result = _curl10(pair, "-H", "Connection: keep-alive", "http://web/", "http://web/")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "hello from web\n" * 2
    assert re.search(r"^< Connection: keep-alive", result.stderr, re.MULTILINE | re.IGNORECASE), result.stderr
    assert "Re-using existing connection" in result.stderr or "Reusing existing" in result.stderr, result.stderr
    assert time.monotonic() - started < 5

    # curl asks a proxy with Proxy-Connection: Keep-Alive (honoured like Connection); without it:
    result = _curl10(pair, "-H", "Proxy-Connection:", "http://web/", "http://web/")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "hello from web\n" * 2
    assert re.search(r"^< Connection: close", result.stderr, re.MULTILINE | re.IGNORECASE), result.stderr
    assert "Re-using existing connection" not in result.stderr


def test_curl_http10_never_gets_chunked(pair: Pair) -> None:
    """A chunked app answer reaches an HTTP/1.0 client unchunked: length-delimited when the proxy holds
    the whole body, close-delimited when the body is still streaming (a large one)."""
    for path, expected in (("/chunked?n=4", "".join(f"chunk {i}\n" for i in range(4))), ("/chunked?n=20000", None)):
        for keep in (("-H", "Proxy-Connection:"), ("-H", "Connection: keep-alive")):
            result = _curl10(pair, *keep, f"http://web{path}")
            assert result.returncode == 0, result.stderr
            assert not re.search(r"^< Transfer-Encoding", result.stderr, re.MULTILINE | re.IGNORECASE), result.stderr
            if expected is not None:
                assert result.stdout == expected
            else:
                assert result.stdout == "".join(f"chunk {i}\n" for i in range(20000))


def _exchange(sock: socket.socket, request: bytes) -> tuple[bytes, bytes]:
    """Send one request; the response head and what followed it within a second."""
    sock.sendall(request)
    data = b""
    sock.settimeout(1.0)
    try:
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    except TimeoutError:
        pass
    head, _, body = data.partition(b"\r\n\r\n")
    return head, body


def test_raw_http10_framing_and_connection(pair: Pair) -> None:
    """On the wire: keep-alive asked → `Connection: keep-alive` and a second request on the same socket;
    not asked → the proxy closes; a chunked app → no chunk framing in the body."""
    port = pair.client.outbound
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        for _ in range(2):
            head, body = _exchange(sock, b"GET http://web/ HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
            assert b"\r\nconnection: keep-alive" in head.lower(), head
            assert body == b"hello from web\n"
        head, body = _exchange(sock, b"GET http://web/chunked?n=3 HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        assert b"transfer-encoding" not in head.lower(), head
        assert body == b"chunk 0\nchunk 1\nchunk 2\n", body
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(b"GET http://web/chunked?n=3 HTTP/1.0\r\n\r\n")
        data = b""
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            chunk = sock.recv(65536)
            if not chunk:
                break  # the proxy closed after the response
            data += chunk
        else:
            raise AssertionError(f"the proxy kept an HTTP/1.0 connection open without keep-alive: {data!r}")
        head, _, body = data.partition(b"\r\n\r\n")
        assert b"transfer-encoding" not in head.lower() and b"connection: close" in head.lower(), head
        assert body == b"chunk 0\nchunk 1\nchunk 2\n", body


def test_trailer_header_and_trailers_pass_through_two_proxies(pair: Pair) -> None:
    """``Trailer`` is an end-to-end header (RFC 9110 6.6.2): the client sees it, and the trailer it
    announced, after the chunked body; it was stripped as hop-by-hop while the trailers passed."""
    with socket.create_connection(("127.0.0.1", pair.client.outbound), timeout=5) as sock:
        sock.sendall(b"GET http://web/chunked?n=2&trailer=42 HTTP/1.1\r\nHost: web\r\nTE: trailers\r\n\r\n")
        data = b""
        while not data.endswith(b"\r\n\r\n") or b"\r\n0\r\n" not in data:
            chunk = sock.recv(65536)
            assert chunk, f"closed early: {data!r}"
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    assert b"\r\ntrailer: x-sum" in head.lower(), head
    assert b"transfer-encoding: chunked" in head.lower(), head
    assert body.endswith(b"0\r\nx-sum: 42\r\n\r\n"), body
