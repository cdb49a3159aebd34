"""The fuzz suite's checks, on fixed bytes and records (no processes): each must catch what it is for.

A fuzz test that passes proves little unless its checks can fail; these show that every kind of
finding the suite reports is raised on an answer or a record that deserves it, and not on a
good one.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import hpack
import pytest
from hyperframe import frame as hf

from tests.fuzz import harness, http1, http2
from tests.fuzz.harness import Finding, Findings, KnownIssue, Ledger

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi"


def _sent(*requests: bytes) -> http1.Sent:
    return http1.parse_sent(b"".join(requests))


GET = b"GET /a HTTP/1.1\r\nHost: web\r\n\r\n"
HEAD = b"HEAD /a HTTP/1.1\r\nHost: web\r\n\r\n"
GET10 = b"GET /a HTTP/1.0\r\nHost: web\r\n\r\n"


def test_strict_parser_reads_requests_as_llhttp_does() -> None:
    sent = _sent(GET, b"POST /b HTTP/1.1\r\nHost: web\r\nContent-Length: 3\r\n\r\nabc", b"GET /c")
    assert [h.target for h in sent.heads] == [b"/a", b"/b"] and sent.outcome == "partial"
    smuggle = b"POST /a HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /s HTTP/1.1\r\n\r\n"
    sent = _sent(smuggle)
    assert sent.outcome == "error" and sent.heads == []
    assert _sent(b"GET http://web/x?y HTTP/1.1\r\n\r\n").heads[0].routed_target == b"/x?y"


def test_answers_good_and_bad() -> None:
    assert http1.parse_answers(OK + OK, _sent(GET, GET), eof=True)[1] is None
    assert http1.parse_answers(b"", _sent(GET), eof=True) == ([], None)  # a close is an answer
    truncated = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhi"
    assert "complete message body" in (http1.parse_answers(truncated, _sent(GET), eof=True)[1] or "")
    after_close = b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nhi" + OK
    assert http1.parse_answers(after_close, _sent(GET, GET), eof=True)[1] is not None
    chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\n"
    assert "HTTP/1.0" in (http1.parse_answers(chunked, _sent(GET10), eof=True)[1] or "")
    assert http1.parse_answers(b"HTTP/1.1 200 OK\r\nBad Header\r\n\r\n", _sent(GET), eof=True)[1] is not None


def test_answer_checks_name_misaligned_and_head_bodies(tmp_path: Path) -> None:
    ledger = Ledger(_records(tmp_path, []), set())
    body = b"mesh: malformed HTTP/1 message (oops)\n"
    refusal = b"HTTP/1.1 400 Bad\r\nx-mesh-error: bad-request\r\nConnection: close\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
    got = http1.Received(refusal, eof=True)
    wire = GET + b"NOT HTTP\r\n\r\n"
    kinds = [f.kind for f in http1.check_answers(ledger, wire, http1.parse_sent(wire), got)]
    assert kinds == ["misaligned-response"]
    mesh_503 = b"HTTP/1.1 503 No\r\nx-mesh-error: no-endpoints\r\nContent-Length: 4\r\n\r\nmesh"
    wire = HEAD + GET
    got = http1.Received(mesh_503 + OK, eof=True)
    found = http1.check_answers(ledger, wire, http1.parse_sent(wire), got)
    assert [f.kind for f in found] == ["head-response-body"] and "the mesh's" in str(found[0])
    got = http1.Received(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n" + OK, eof=True)
    assert http1.check_answers(ledger, wire, http1.parse_sent(wire), got) == []  # HEAD answered right


def _records(tmp_path: Path, records: list[dict]) -> Path:
    path = tmp_path / "records.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def _record(target: str, event: str = "head", client_ids: list[str] | None = None) -> dict:
    return {"proto": "h1", "event": event, "conn": 1, "stream": 0, "method": "GET", "target": target,
            "client_ids": ["spiffe://t/svc/client"] if client_ids is None else client_ids}


def test_ledger_catches_smuggled_refused_and_forged(tmp_path: Path) -> None:
    records = [
        _record("/fz-runx000001r00"),  # sent: fine
        _record("/fz-runx000001s00"),  # hidden in a body: never sent as a request
        _record("/fz-runx000001r01", "complete"),  # sent, then refused by the mesh
        _record("/fz-runx000001r02", client_ids=["spiffe://forged/svc/admin"]),
        _record("/fz-runx000001r03", client_ids=[]),
    ]
    ledger = Ledger(_records(tmp_path, records), {"spiffe://t/svc/client"})
    ledger.note_sent([b"/fz-runx000001r00", b"/fz-runx000001r01", b"/fz-runx000001r02", b"/fz-runx000001r03"])
    kinds = [f.kind for f in ledger.problems()]
    assert kinds == ["smuggled", "forged-identity", "forged-identity"]
    assert [f.kind for f in ledger.note_refused(b"fz-runx000001r01", "answered 400")] == ["refused-reached-app"]
    assert ledger.note_refused(b"fz-runx000001r00", "answered 400") == []  # only its head arrived
    assert [f.kind for f in ledger.note_refused(b"fz-runx000001r00", "after a close", head_too=True)] == ["refused-reached-app"]


def _known_gateway_raw(monkeypatch: pytest.MonkeyPatch) -> KnownIssue:
    """An open bug's entry, as the gateway's raw relay of non-HTTP bytes had (fixed since)."""
    issue = KnownIssue(
        "gateway-relays-non-http-raw",
        "test_the_gateway_never_relays_bytes_it_cannot_parse",
        ("smuggled", "forged-identity"),
        doors=("gateway",),
        wire=r"(?![A-Z][A-Z-]{0,19} |PRI \* HTTP/2\.0\r\n\r\nSM\r\n\r\n)",
    )
    monkeypatch.setattr(harness, "KNOWN_ISSUES", (issue,))
    return issue


def test_known_issues_match_only_their_findings(monkeypatch: pytest.MonkeyPatch) -> None:
    gateway_raw = _known_gateway_raw(monkeypatch)
    findings = Findings()
    smuggled = Finding("smuggled", "the app received …")
    assert gateway_raw.matches(smuggled, "gateway", b"get / HTTP/1.1\r\n\r\n")
    assert not gateway_raw.matches(smuggled, "gateway", b"GET / HTTP/1.1\r\n\r\n")
    assert not gateway_raw.matches(smuggled, "outbound", b"get / HTTP/1.1\r\n\r\n")
    findings.verdict([smuggled], "gateway", b"\x00GET /", "")  # tolerated, counted
    assert findings.known == {"gateway-relays-non-http-raw": 1}
    try:
        findings.verdict([smuggled], "outbound", b"\x00GET /", "")
    except Finding as raised:
        assert raised is smuggled
    else:
        raise AssertionError("a finding that no known issue explains must fail the example")


# --------------------------------------------------------------------------- HTTP/2


def _rendered(**fields: object) -> http2.Rendered:
    rendered = http2.Rendered(opened={1}, mentioned={1}, **fields)  # type: ignore[arg-type]
    rendered.streams.append(http2.Stream(1, b"fz-runx000001r00", b"GET", "", True))
    return rendered


def _settings() -> bytes:
    return hf.SettingsFrame(0).serialize()


def _headers(fields: list[tuple[bytes, bytes]], end: bool = False, stream: int = 1, encoder: hpack.Encoder | None = None) -> bytes:
    block = (encoder or hpack.Encoder()).encode(fields)
    return http2.raw_frame(0x1, 0x4 | (0x1 if end else 0), stream, block)


def _problem(data: bytes, rendered: http2.Rendered | None = None, eof: bool = False) -> str | None:
    reader = http2.ServerReader(rendered or _rendered())
    reader.feed(data)
    if eof:
        reader.end()
    return reader.view.problem


def test_server_frames_good_and_bad() -> None:
    good = _settings() + _headers([(b":status", b"200"), (b"content-length", b"2")]) + http2.raw_frame(0x0, 0x1, 1, b"hi")
    assert _problem(good, eof=True) is None
    assert "first frame" in (_problem(hf.PingFrame(0, opaque_data=b"12345678").serialize()) or "")
    assert "lower-case" in (_problem(_settings() + _headers([(b":status", b"200"), (b"X-Up", b"v")])) or "")
    assert "connection-specific" in (_problem(_settings() + _headers([(b":status", b"200"), (b"connection", b"close")])) or "")
    assert ":status" in (_problem(_settings() + _headers([(b"server", b"x"), (b":status", b"200")])) or "")
    assert "never opened" in (_problem(_settings() + _headers([(b":status", b"200")], stream=3)) or "")
    assert "PUSH_PROMISE" in (_problem(_settings() + http2.raw_frame(0x5, 0x4, 1, struct.pack(">L", 2) + b"\x82")) or "")
    assert "inside a frame" in (_problem(_settings() + _headers([(b":status", b"200")])[:-1], eof=True) or "")
    wrong_length = _settings() + _headers([(b":status", b"200"), (b"content-length", b"5")]) + http2.raw_frame(0x0, 0x1, 1, b"hi")
    assert "content-length" in (_problem(wrong_length) or "")
    after_end = good + http2.raw_frame(0x0, 0x1, 1, b"more")
    assert "after its end" in (_problem(after_end) or "")
    goaways = _settings() + http2.raw_frame(0x7, 0, 0, struct.pack(">LL", 1, 0)) + http2.raw_frame(0x7, 0, 0, struct.pack(">LL", 3, 0))
    assert "GOAWAY" in (_problem(goaways) or "")


def test_server_data_beyond_the_window_is_caught() -> None:
    tight = _rendered(initial_windows=[1])
    body = _settings() + _headers([(b":status", b"200")]) + http2.raw_frame(0x0, 0x1, 1, b"hi")
    assert "window" in (_problem(body, tight) or "")
    tight.window_updates[1] = 1
    assert _problem(body, tight) is None


def test_refusals_of_http2_streams(tmp_path: Path) -> None:
    ledger = Ledger(_records(tmp_path, [_record("/fz-runx000001r00", "complete"), _record("/fz-runx000001r01")]), {"spiffe://t/svc/client"})
    ledger.note_sent([b"/fz-runx000001r00", b"/fz-runx000001r01"])
    assert ledger.problems() == []
    rendered = http2.Rendered()
    rendered.streams += [
        http2.Stream(1, b"fz-runx000001r00", b"GET", "", True),
        http2.Stream(3, b"fz-runx000001r01", b"GET", "upper-case-name", True),
    ]
    view = http2.ServerView(streams={1: http2.ServerStream(status=503, mesh_error=b"no-endpoints", ended=True)})
    kinds = sorted(f.kind for f in http2.refusals(ledger, rendered, view))
    assert kinds == ["refused-reached-app", "refused-reached-app"]
    rendered.streams[0].unique = False  # a marker two streams share names neither
    assert [f.kind for f in http2.refusals(ledger, rendered, view)] == ["refused-reached-app"]


def test_markers_are_found_in_the_header_lists_not_the_wire(tmp_path: Path) -> None:
    """HPACK codes the :path, so uniqueness is counted on what was encoded."""
    ledger = Ledger(_records(tmp_path, []), set())
    case = http2.H2Case("ok", (), (http2.Request("next", tuple(http2.REQUEST_FIELDS_OK), ""),) * 2)
    rendered = http2.render(case, ledger, "runx000001")
    assert [s.unique for s in rendered.streams] == [True, True]
    assert rendered.paths == [b"/fz-runx000001r00", b"/fz-runx000001r01"]


def test_a_traceback_is_one_finding_with_its_whole_record(tmp_path: Path) -> None:
    from tests.fuzz.harness import LogWatch
    from tests.integration.conftest import Process

    log = tmp_path / "proxy.log"
    log.write_text("[mesh proxy web] INFO ready\n")
    watch = LogWatch([Process("proxy-web", None, log)])  # type: ignore[arg-type]
    group = (
        "[mesh proxy web] ERROR internal error on a connection\n"
        "  + Exception Group Traceback (most recent call last):\n"
        "  | ExceptionGroup: Exceptions from Trio nursery (1 sub-exception)\n"
        "    | Traceback (most recent call last):\n"
        "    | mesh.proxy._conn.PeerClosed\n"
        "[mesh proxy web] INFO inbound: rejected client request\n"
    )
    with open(log, "a") as f:
        f.write(group)
    found = watch.problems()
    assert len(found) == 1 and "ExceptionGroup" in str(found[0]) and "PeerClosed" in str(found[0])
    assert watch.problems() == []  # read once


def test_a_late_record_is_judged_with_the_example_that_sent_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An aborted example's request can reach the app after the next example began."""
    _known_gateway_raw(monkeypatch)
    ledger = Ledger(_records(tmp_path, [_record("/fz-runx000001r00", client_ids=[])]), {"spiffe://t/svc/client"})
    ledger.note_origin("runx000001", "gateway", b"\x00GET /fz-runx000001r00 HTTP/1.1\r\n\r\n")
    late = ledger.problems()
    assert sorted(f.kind for f in late) == ["forged-identity", "smuggled"]
    assert late[0].origin == ("gateway", b"\x00GET /fz-runx000001r00 HTTP/1.1\r\n\r\n")
    findings = Findings()
    findings.verdict(late, "outbound", b"GET /fz-runx000002r00 HTTP/1.1\r\n\r\n", "")  # known through its origin
    assert findings.known == {"gateway-relays-non-http-raw": 2}
