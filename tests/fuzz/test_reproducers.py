"""Standalone reproducers of what the fuzz suite found, one test per bug.

While a bug is open its test is marked ``xfail(strict=True)`` and a ``KnownIssue`` in harness.py
lets the fuzz tests step over it; the fix turns the test into an XPASS, which strict mode reports,
so whoever fixes the bug removes both. From then on the test guards the fix (all six found so
far are fixed). Each sends a few fixed bytes through the same live doors as the fuzz
tests (conftest.py) and checks the same invariants.
"""

from __future__ import annotations

import time

import pytest

from tests.fuzz import http1
from tests.fuzz.harness import AppRecord, FrontDoors


def _send(front: FrontDoors, door: str, writes: list[tuple[float, bytes]]) -> tuple[http1.Sent, http1.Received]:
    """Send through a door; what a strict parser reads in it, and what came back."""
    wire = b"".join(piece for _, piece in writes)
    sent = http1.parse_sent(wire)
    front.ledger.note_sent([h.routed_target for h in sent.heads])
    return sent, http1.exchange(front, front.doors[door], writes, "read", sent)


def _app_got(front: FrontDoors, marker: bytes) -> AppRecord | None:
    """The app's record of a request with ``marker``, if it got one (records settle first)."""
    time.sleep(0.3)
    front.ledger.problems()  # reads the app's new records (and checks them)
    return front.ledger.heads.get(marker) or front.ledger.completes.get(marker)


def _marker(front: FrontDoors) -> bytes:
    return front.ledger.marker(front.ledger.next_example(), 0)


def test_a_malformed_chunk_is_answered_without_a_traceback(front: FrontDoors) -> None:
    marker = _marker(front)
    head = b"POST /%s HTTP/1.1\r\nHost: web\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n" % marker
    front.logs.new_text()  # only what this request makes the proxies log counts
    sent, got = _send(front, "outbound", [(0.0, head), (0.2, b"zz\r\n")])
    answers, problem = http1.parse_answers(got.data, sent, eof=got.eof)
    problems = front.logs.problems()
    assert not problems, problems[0]
    assert problem is None and answers and answers[0].status in (400, 408) and answers[0].mesh_error, got.data


@pytest.mark.parametrize("request_line", [b"PUT\t/%s HTTP/1.1", b"get /%s HTTP/1.1", b"\x00GET /%s HTTP/1.1"])
def test_the_gateway_never_relays_bytes_it_cannot_parse(front: FrontDoors, request_line: bytes) -> None:
    marker = _marker(front)
    request = request_line % marker + b"\r\nHost: web\r\nmesh-client-id: spiffe://forged/svc/admin\r\n\r\n"
    sent, got = _send(front, "gateway", [(0.0, request)])
    received = _app_got(front, marker)
    assert received is None, f"the app received {request!r} with mesh-client-id {received.client_ids}; the gateway answered {got.data!r}"
    assert got.data.startswith(b"HTTP/1.1 400 ") or got.data == b"", got.data


def test_the_gateway_refuses_connect(front: FrontDoors) -> None:
    marker = _marker(front)
    tunnelled = b"GET /%s HTTP/1.1\r\nHost: web\r\nmesh-client-id: spiffe://forged/svc/admin\r\n\r\n" % marker
    sent, got = _send(front, "gateway", [(0.0, b"CONNECT web:80 HTTP/1.1\r\nHost: web:80\r\n\r\n" + tunnelled)])
    received = _app_got(front, marker)
    assert received is None, f"the app received a tunnelled request with mesh-client-id {received.client_ids}: {got.data!r}"
    assert got.data[:12] in (b"HTTP/1.1 400", b"HTTP/1.1 405", b"HTTP/1.1 403", b"HTTP/1.1 501") or got.data == b"", got.data


def test_a_valid_request_is_answered_before_a_bad_one_that_follows(front: FrontDoors) -> None:
    marker = _marker(front)
    sent, got = _send(front, "outbound", [(0.0, b"GET /%s HTTP/1.1\r\nHost: web\r\n\r\nNOT HTTP\r\n\r\n" % marker)])
    answers, problem = http1.parse_answers(got.data, sent, eof=got.eof)
    assert problem is None, problem
    assert answers and answers[0].status == 200 and answers[0].headers.get(b"x-seen") == marker, got.data


def test_the_mesh_answers_head_without_a_body(front: FrontDoors) -> None:
    first, second = _marker(front), _marker(front)
    wire = (
        b"HEAD /%s HTTP/1.1\r\nHost: nosuch\r\n\r\n" % first
        + b"GET /%s HTTP/1.1\r\nHost: web\r\nConnection: close\r\n\r\n" % second
    )
    sent, got = _send(front, "outbound", [(0.0, wire)])
    answers, problem = http1.parse_answers(got.data, sent, eof=got.eof)
    assert problem is None, f"{problem}: {got.data!r}"
    assert [a.status for a in answers] == [503, 200], got.data
    assert answers[1].headers.get(b"x-seen") == second


@pytest.mark.parametrize("door", ["outbound", "inbound", "gateway"])
def test_an_http10_client_never_gets_a_chunked_response(front: FrontDoors, door: str) -> None:
    marker = _marker(front)
    sent, got = _send(front, door, [(0.0, b"GET /%s?chunked HTTP/1.0\r\nHost: web\r\n\r\n" % marker)])
    answers, problem = http1.parse_answers(got.data, sent, eof=got.eof)
    assert problem is None, f"{problem}: {got.data!r}"
    assert answers and answers[0].status == 200 and answers[0].body == b"seen %s\n" % marker, got.data


@pytest.mark.parametrize("door", ["outbound", "inbound", "gateway"])
def test_a_head_request_that_does_not_parse_gets_a_whole_answer(door: str, front: FrontDoors) -> None:
    """Found by a 10-minute run: the 400 to a HEAD whose header block is malformed (obs-fold) said
    Content-Length and sent no body; a client that cannot parse the request as HEAD either waited
    for the body. The connection closes after it, so the body goes: harmless to one, needed by the other."""
    marker = _marker(front)
    sent, got = _send(front, door, [(0.0, b"HEAD /%s HTTP/1.1\r\nHost: web\r\n\tfolded\r\n\r\n" % marker)])
    answers, problem = http1.parse_answers(got.data, sent, eof=got.eof)
    assert problem is None, f"{problem}: {got.data!r}"
    assert answers and answers[0].status == 400, got.data


def test_http_behind_a_lower_case_method_in_a_tunnel_is_parsed_by_the_callee(front: FrontDoors) -> None:
    """Found by a 10-minute run: inside a CONNECT tunnel to a mesh service (an opaque stream the
    callee detects again), "body-…DELETE * HTTP/0.9" was taken for opaque bytes (its method is not
    upper case) and reached the app unparsed, without the caller's mesh-client-id."""
    marker = _marker(front)
    wire = (
        b"CONNECT web:80 HTTP/1.1\r\nHost: web\r\n\r\n"
        b"body-xxDELETE /%s HTTP/1.1\r\nHost: web\r\nConnection: close\r\n\r\n" % marker
    )
    _send(front, "outbound", [(0.0, wire)])
    received = _app_got(front, marker)
    assert received is None or (
        len(received.client_ids) == 1 and received.client_ids[0] in front.ledger.identities
    ), received


@pytest.mark.parametrize("door", ["outbound", "gateway"])
def test_a_closing_answer_reaches_a_client_that_sent_more(front: FrontDoors, door: str) -> None:
    """Found by a 10-minute run: an HTTP/1.0 request (the connection ends after its answer) followed
    by more requests in the same write. The proxy closed with those bytes unread, so the kernel
    sent a reset, which may overtake the answer: the client saw the connection reset, not the
    response. The proxy now half-closes and reads off what is still coming, briefly (a lingering
    close, RFC 9112 section 9.6)."""
    first, second = _marker(front), _marker(front)
    wire = (
        b"GET /%s HTTP/1.0\r\nHost: web\r\n\r\n" % first
        + b"GET /%s HTTP/1.1\r\nHost: web\r\nContent-Length: 64\r\n\r\n" % second
        + b"x" * 64
    )
    sent, got = _send(front, door, [(0.0, wire), (0.05, b"y" * 65536)])
    assert got.eof and not got.reset, f"the connection was reset after {got.data!r}"
    answers, problem = http1.parse_answers(got.data, sent, eof=True)
    assert problem is None, f"{problem}: {got.data!r}"
    assert answers and answers[0].status == 200 and answers[0].headers.get(b"x-seen") == first, got.data
