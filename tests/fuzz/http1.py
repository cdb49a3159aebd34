"""HTTP/1 for the fuzz suite: strategies, a strict model of what was sent, and a strict reader of what came back.

- ``cases()`` / ``framing_conflicts()`` / ``slow_cases()``: hypothesis strategies of ``H1Case`` — a
  few pipelined requests (valid heads, then mutated: byte flips, CR/LF/NUL injection, duplicate or
  conflicting Content-Length and Transfer-Encoding, obs-fold, oversized heads, bad chunk sizes,
  bare LF), written in one go or split across writes with pauses, ending with a read, a
  half-close (early EOF) or an abort. Targets carry markers filled in when the case runs.
- ``parse_sent()``: what a strict HTTP/1.1 parser (llhttp, as the proxy uses, without its
  leniencies) reads in the bytes sent: the heads in order, which were complete, where it stopped.
- ``parse_answers()``: the bytes that came back, read with h11 (a second, independent strict
  implementation). Anything h11 refuses, a truncated message at close, bytes after a response that
  closes, or a chunked answer to an HTTP/1.0 request is an invalid answer.
- ``run_case()``: one example against one door, and every check of harness.py.
"""

from __future__ import annotations

import ssl
import time
from dataclasses import dataclass, field

import h11
import httptools
from hypothesis import note, strategies as st

from tests.fuzz import transport
from tests.fuzz.harness import MARKER, Door, Finding, FrontDoors, Ledger, show, test_name

CRLF = b"\r\n"

# --------------------------------------------------------------------------- the case


@dataclass(frozen=True)
class H1Request:
    """A request before rendering: ``{M}`` in the target and body becomes the request's marker,
    ``{S}`` a marker for a request hidden in the body."""

    request_line: bytes
    headers: tuple[tuple[bytes, bytes], ...]
    body: bytes
    line_end: bytes = CRLF
    folded: tuple[int, ...] = ()  # header indexes continued on an obs-fold line

    def __repr__(self) -> str:
        headers = ", ".join(f"{n!r}: {show(v, 80)}" for n, v in self.headers)
        return (
            f"H1Request({show(self.request_line, 120)}, {{{headers}}}, body={show(self.body, 120)}, "
            f"line_end={self.line_end!r}, folded={self.folded})"
        )

    def render(self, marker: bytes, smuggled: bytes) -> bytes:
        lines = [self.request_line]
        for i, (name, value) in enumerate(self.headers):
            line = name + b":" + (b" " if value else b"") + value
            if i in self.folded:
                line += self.line_end + b"\t" + b"folded"
            lines.append(line)
        head = self.line_end.join(lines) + self.line_end + self.line_end
        return (head + self.body).replace(b"{M}", marker).replace(b"{S}", smuggled)


@dataclass(frozen=True)
class Mutation:
    kind: str  # flip | insert | delete | duplicate | truncate
    position: int  # taken modulo the length
    value: bytes = b""
    size: int = 1

    def apply(self, data: bytes) -> bytes:
        if not data:
            return data
        at = self.position % len(data)
        if self.kind == "flip":
            return data[:at] + self.value + data[at + 1 :]
        if self.kind == "insert":
            return data[:at] + self.value + data[at:]
        if self.kind == "delete":
            return data[:at] + data[at + self.size :]
        if self.kind == "duplicate":
            return data[: at + self.size] + data[at : at + self.size] + data[at + self.size :]
        if self.kind == "truncate":
            return data[:at]
        raise ValueError(self.kind)


@dataclass(frozen=True)
class H1Case:
    requests: tuple[H1Request, ...]
    mutations: tuple[Mutation, ...] = ()
    cuts: tuple[int, ...] = ()  # split points (modulo the length) between writes
    pauses_ms: tuple[int, ...] = ()  # pause before each write after the first
    ending: str = "read"  # read | half-close | abort

    def render(self, ledger: Ledger, example: str) -> bytes:
        data = b"".join(
            r.render(ledger.marker(example, i), ledger.marker(example, i, smuggled=True)) for i, r in enumerate(self.requests)
        )
        for mutation in self.mutations:
            data = mutation.apply(data)
        return data

    def writes(self, data: bytes) -> list[tuple[float, bytes]]:
        return transport.split_writes(data, self.cuts, self.pauses_ms)


# --------------------------------------------------------------------------- strategies

METHODS = [b"GET", b"GET", b"POST", b"PUT", b"DELETE", b"PATCH", b"OPTIONS", b"HEAD", b"PROPFIND"]
VERSIONS = [b"HTTP/1.1"] * 8 + [b"HTTP/1.0"] * 3 + [b"HTTP/1.2", b"HTTP/2.0", b"HTTP/0.9", b"http/1.1", b""]
HEADER_NAMES = [
    b"Accept", b"User-Agent", b"Cookie", b"Authorization", b"X-Fuzz", b"mesh-client-id", b"x-request-id",
    b"Via", b"Forwarded", b"X-Forwarded-For", b"Proxy-Connection", b"Keep-Alive", b"TE", b"Trailer",
    b"Range", b"Content-Type", b"Expect", b"Connection", b"Upgrade-Insecure-Requests", b"traceparent",
]
VALUE_CHARS = st.characters(min_codepoint=0x20, max_codepoint=0x7E)
INJECTIONS = [b"\r", b"\n", b"\x00", b" ", b"\t", b"\r\n", b"\r\n\r\n", b":", b"\x7f", b"\xff", b"\x0b", b"\x0c", b"\r\n "]
TE_SPELLINGS = [
    b"chunked", b"Chunked", b"chunked ", b" chunked", b"\tchunked", b"chunked, identity", b"identity, chunked",
    b"gzip, chunked", b"xchunked", b"chunked\x0b", b"identity", b"chunked;q=1", b"chunk", b'"chunked"',
]
TE_NAMES = [b"Transfer-Encoding", b"transfer-encoding", b"Transfer-Encoding ", b"Transfer_Encoding", b"Transfer-Encoding\t"]
CL_SPELLINGS = [b"{n}", b"+{n}", b" {n}", b"{n} ", b"0{n}", b"{n},{n}", b"{n}, {n}", b"-{n}", b"0x{h}", b"{n}\x00", b"{n}.0"]
CHUNK_SIZE_SPELLINGS = [
    b"{h}", b"{h};ext=1", b"{h} ;ext", b" {h}", b"{h} ", b"0x{h}", b"+{h}", b"-{h}", b"{h}\n",
    b"0000000000000000{h}", b"1000000000000000{h}", b"ffffffffffffffff{h}", b"{H}",
]


def hosts(door_host: bytes) -> st.SearchStrategy[bytes | None]:
    """Host values: mostly the door's, sometimes another mesh name, a port, or nothing at all."""
    return st.one_of(
        st.just(door_host),
        st.sampled_from([door_host + b":80", door_host.upper(), door_host + b".mesh", b"nosuch", b"", b"web:0", None]),
        st.text(VALUE_CHARS, max_size=12).map(str.encode),
    )


@st.composite
def body_and_framing(draw: st.DrawFn) -> tuple[list[tuple[bytes, bytes]], bytes]:
    """Framing headers and a body that agrees with them (mutations disagree later)."""
    kind = draw(st.sampled_from(["none", "none", "length", "chunked", "empty-length"]))
    payload = b"body-" + b"x" * draw(st.integers(0, 64))
    if kind == "none":
        return [], b""
    if kind == "empty-length":
        return [(b"Content-Length", b"0")], b""
    if kind == "length":
        return [(b"Content-Length", b"%d" % len(payload))], payload
    pieces = draw(st.lists(st.integers(1, 20), min_size=1, max_size=4))
    body, rest = b"", payload
    for size in pieces:
        chunk, rest = rest[:size], rest[size:]
        if chunk:
            ext = draw(st.sampled_from([b"", b"", b";a=b"]))
            body += b"%x%s\r\n%s\r\n" % (len(chunk), ext, chunk)
    if rest:
        body += b"%x\r\n%s\r\n" % (len(rest), rest)
    trailers = draw(st.sampled_from([b"", b"", b"x-trailer: t\r\n"]))
    return [(b"Transfer-Encoding", b"chunked")], body + b"0\r\n" + trailers + b"\r\n"


@st.composite
def requests(draw: st.DrawFn, door_host: bytes, last: bool) -> H1Request:
    method = draw(st.sampled_from(METHODS))
    form = draw(st.sampled_from(["origin"] * 10 + ["absolute"] * 2 + ["asterisk", "odd", "odd", "connect"]))
    tail = draw(st.sampled_from([b"", b"/x", b"?q=1", b"?q=%00", b"/a/../b", b"#frag", b"/%2e%2e/", b"?chunked"]))
    if form == "origin":
        target = b"/{M}" + tail
    elif form == "absolute":
        target = b"http://" + door_host + b"/{M}" + tail
    elif form == "asterisk":
        target = b"*"
    elif form == "connect":  # a tunnel: what follows goes to the app as raw bytes
        method, target = b"CONNECT", door_host + b":80"
    else:
        target = draw(st.sampled_from([b"{M}", b"//{M}", b"/{M} x", b"/{M}\x00", b"/{M}\t", b"/\xff{M}"]))
    version = draw(st.sampled_from(VERSIONS))
    separator = draw(st.sampled_from([b" "] * 8 + [b"  ", b"\t"]))
    line = separator.join(part for part in (method, target, version) if part)
    headers: list[tuple[bytes, bytes]] = []
    host = draw(hosts(door_host))
    if host is not None:
        headers.append((b"Host", host))
    for _ in range(draw(st.integers(0, 4))):
        name = draw(st.sampled_from(HEADER_NAMES))
        value = draw(st.one_of(st.text(VALUE_CHARS, max_size=30).map(str.encode), st.sampled_from([b"close", b"keep-alive", b"100-continue", b"te"])))
        headers.append((name, value))
    framing, body = draw(body_and_framing())
    headers += framing
    if draw(st.integers(0, 9)) == 0:  # oversized: a huge value, many fields, or a long target
        what = draw(st.sampled_from(["value", "count", "target"]))
        size = draw(st.sampled_from([8 * 1024, 63 * 1024, 65 * 1024, 70 * 1024]))
        if what == "value":
            headers.append((b"X-Big", b"v" * size))
        elif what == "count":
            headers += [(b"X-Many-%d" % i, b"m") for i in range(draw(st.sampled_from([99, 100, 101, 130])))]
        else:
            line = line.replace(b"{M}", b"{M}" + b"p" * size, 1)
    if last:
        headers.append((b"Connection", b"close"))
    folded = tuple(i for i in range(len(headers)) if draw(st.integers(0, 29)) == 0)
    line_end = draw(st.sampled_from([CRLF] * 12 + [b"\n", b"\r"]))
    return H1Request(line, tuple(headers), body, line_end, folded)


def mutations(max_count: int) -> st.SearchStrategy[tuple[Mutation, ...]]:
    mutation = st.one_of(
        st.builds(Mutation, st.just("flip"), st.integers(0, 1 << 16), st.binary(min_size=1, max_size=1)),
        st.builds(Mutation, st.just("insert"), st.integers(0, 1 << 16), st.sampled_from(INJECTIONS)),
        st.builds(Mutation, st.just("delete"), st.integers(0, 1 << 16), st.just(b""), st.integers(1, 8)),
        st.builds(Mutation, st.just("duplicate"), st.integers(0, 1 << 16), st.just(b""), st.integers(1, 64)),
        st.builds(Mutation, st.just("truncate"), st.integers(0, 1 << 16)),
    )
    return st.lists(mutation, max_size=max_count).map(tuple)


def splits(max_writes: int, max_pause_ms: int) -> st.SearchStrategy[tuple[tuple[int, ...], tuple[int, ...]]]:
    return st.tuples(
        st.lists(st.integers(0, 1 << 16), max_size=max_writes - 1).map(tuple),
        st.lists(st.integers(0, max_pause_ms), max_size=max_writes - 1).map(tuple),
    )


@st.composite
def cases(draw: st.DrawFn, door: Door) -> H1Case:
    """One to four pipelined requests, mutated a little, written in one to four pieces."""
    count = draw(st.integers(1, 4))
    reqs = tuple(draw(requests(door.host, last=i == count - 1)) for i in range(count))
    cuts, pauses = draw(splits(4, 20))
    mutated = draw(st.one_of(st.just(()), mutations(3)))  # half go as generated: deeper into the proxy
    return H1Case(reqs, mutated, cuts, pauses, draw(endings(door)))


def endings(door: Door) -> st.SearchStrategy[str]:
    # A TLS stream cannot half-close here (no close_notify without closing): read or abort.
    choices = ["read"] * 6 + ["abort"] + ([] if door.tls else ["half-close"])
    return st.sampled_from(choices)


def _smuggled_request(door_host: bytes) -> bytes:
    return b"GET /{S} HTTP/1.1\r\nHost: " + door_host + b"\r\nContent-Length: 0\r\n\r\n"


@st.composite
def framing_conflicts(draw: st.DrawFn, door: Door) -> H1Case:
    """A request whose body hides another request under one reading of conflicting framing
    (CL.TE, TE.CL, CL.CL, obfuscated TE, odd Content-Length or chunk-size spellings), then
    maybe a normal one. Whatever the mesh does, the hidden request must not reach the app as one."""
    inner = _smuggled_request(door.host)
    kind = draw(st.sampled_from(["cl-te", "te-cl", "cl-cl", "te-only", "chunk-size", "cl-odd"]))
    te = (draw(st.sampled_from(TE_NAMES)), draw(st.sampled_from(TE_SPELLINGS)))
    headers: list[tuple[bytes, bytes]] = [(b"Host", door.host)]
    if kind == "cl-te":
        body = b"0\r\n\r\n" + inner
        framing = [(b"Content-Length", b"%d" % len(body)), te]
    elif kind == "te-cl":
        size_line = b"%x\r\n" % len(inner)
        body = size_line + inner + b"\r\n0\r\n\r\n"
        framing = [te, (b"Content-Length", b"%d" % len(size_line))]
    elif kind == "cl-cl":
        body = inner
        framing = [(b"Content-Length", b"0"), (b"Content-Length", b"%d" % len(inner))]
    elif kind == "te-only":
        body = b"%x\r\n%s\r\n0\r\n\r\n" % (len(inner), inner)
        framing = [te]
    elif kind == "chunk-size":
        spelling = draw(st.sampled_from(CHUNK_SIZE_SPELLINGS))
        size = spelling.replace(b"{h}", b"%x" % len(inner)).replace(b"{H}", b"%X" % len(inner))
        body = size + b"\r\n" + inner + b"\r\n0\r\n\r\n"
        framing = [(b"Transfer-Encoding", b"chunked")]
    else:
        spelling = draw(st.sampled_from(CL_SPELLINGS))
        body = inner
        framing = [(b"Content-Length", spelling.replace(b"{n}", b"%d" % len(inner)).replace(b"{h}", b"%x" % len(inner)))]
    if draw(st.booleans()):
        framing.reverse()
    outer = H1Request(b"POST /{M} HTTP/1.1", tuple(headers + framing), body)
    reqs = [outer]
    if draw(st.booleans()):
        reqs.append(H1Request(b"GET /{M} HTTP/1.1", ((b"Host", door.host), (b"Connection", b"close")), b""))
    cuts, pauses = draw(splits(3, 20))
    return H1Case(tuple(reqs), draw(mutations(1)), cuts, pauses, draw(endings(door)))


@st.composite
def slow_cases(draw: st.DrawFn, door: Door) -> H1Case:
    """Slowloris-like: the same requests dribbled in many small writes with pauses, or cut short."""
    count = draw(st.integers(1, 2))
    reqs = tuple(draw(requests(door.host, last=i == count - 1)) for i in range(count))
    cuts, pauses = draw(splits(12, 40))
    truncate = draw(st.lists(st.builds(Mutation, st.just("truncate"), st.integers(0, 1 << 16)), max_size=1))
    return H1Case(reqs, tuple(truncate), cuts, pauses, draw(endings(door)))


# --------------------------------------------------------------------------- what was sent


@dataclass
class SentHead:
    method: bytes
    target: bytes
    version: str
    keep_alive: bool = True
    complete: bool = False

    @property
    def routed_target(self) -> bytes:
        """The target as the proxy forwards it: an absolute URL becomes path and query."""
        if self.target.startswith((b"http://", b"https://")):
            try:
                url = httptools.parse_url(self.target)
            except httptools.HttpParserInvalidURLError:
                return self.target
            return (url.path or b"/") + (b"?" + url.query if url.query else b"")
        return self.target


@dataclass
class Sent:
    heads: list[SentHead] = field(default_factory=list)
    outcome: str = "clean"  # clean | partial | error | upgrade
    error: str = ""


class _Collector:
    def __init__(self, sent: Sent) -> None:
        self.sent = sent
        self.url = b""
        self.began = 0
        self.parser: httptools.HttpRequestParser | None = None

    def on_message_begin(self) -> None:
        self.began += 1
        self.url = b""

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_headers_complete(self) -> None:
        assert self.parser is not None
        self.sent.heads.append(
            SentHead(self.parser.get_method(), self.url, self.parser.get_http_version(), self.parser.should_keep_alive())
        )

    def on_message_complete(self) -> None:
        if self.sent.heads:
            self.sent.heads[-1].complete = True


def parse_sent(data: bytes) -> Sent:
    """The requests a strict parser reads in ``data`` (llhttp without lenient flags)."""
    sent = Sent()
    collector = _Collector(sent)
    parser = httptools.HttpRequestParser(collector)
    collector.parser = parser
    try:
        parser.feed_data(data)
    except httptools.HttpParserUpgrade:
        sent.outcome = "upgrade"
        return sent
    except httptools.HttpParserError as exc:
        sent.outcome, sent.error = "error", str(exc)
        return sent
    if collector.began > len(sent.heads) or (sent.heads and not sent.heads[-1].complete):
        sent.outcome = "partial"
    return sent


# --------------------------------------------------------------------------- what came back


@dataclass
class Answer:
    status: int
    headers: dict[bytes, bytes]
    complete: bool = False
    body: bytes = b""  # the first bytes of it

    @property
    def mesh_error(self) -> bytes | None:
        return self.headers.get(b"x-mesh-error")

    @property
    def closes(self) -> bool:
        return b"close" in self.headers.get(b"connection", b"").lower()


def parse_answers(data: bytes, sent: Sent, eof: bool, heads_as_gets: bool = False) -> tuple[list[Answer], str | None]:
    """Final responses (1xx skipped) read strictly with h11, and what was wrong, if anything.

    h11 needs a request to match each response: a stand-in of the same method class (HEAD or
    not) is sent into it, as the proxy's answers follow the requests in order."""
    conn = h11.Connection(h11.CLIENT, max_incomplete_event_size=256 * 1024)
    answers: list[Answer] = []

    def expect(index: int) -> None:
        method = sent.heads[index].method if index < len(sent.heads) and not heads_as_gets else b"GET"
        conn.send(h11.Request(method=b"HEAD" if method == b"HEAD" else b"GET", target=b"/", headers=[(b"host", b"x")]))
        conn.send(h11.EndOfMessage())

    expect(0)
    if data:  # h11 takes b"" for the end of the stream
        conn.receive_data(data)
    current: Answer | None = None
    eof_fed = False
    while True:
        try:
            event = conn.next_event()
        except h11.RemoteProtocolError as exc:
            return answers, f"invalid response bytes (h11: {exc})"
        if event is h11.NEED_DATA:
            if eof and not eof_fed and (current is not None or conn.trailing_data[0]):
                # Closed mid-message: h11 decides whether that ends it (a body delimited by
                # the close) or truncates it. A close between messages is a fine answer.
                conn.receive_data(b"")
                eof_fed = True
                continue
            if current is not None:
                answers.append(current)  # incomplete, still arriving
            return answers, None
        if isinstance(event, h11.InformationalResponse):
            if event.status_code == 101:
                return answers, "101 Switching Protocols although no upgrade was sent"
            continue
        if isinstance(event, h11.Response):
            current = Answer(event.status_code, {bytes(k): bytes(v) for k, v in event.headers})
            index = len(answers)
            if index < len(sent.heads) and sent.heads[index].version == "1.0":
                if b"chunked" in current.headers.get(b"transfer-encoding", b"").lower():
                    return answers, "a chunked response to an HTTP/1.0 request"
            continue
        if isinstance(event, h11.Data):
            assert current is not None
            if len(current.body) < 200:
                current.body += bytes(event.data[:200])
            continue
        if isinstance(event, h11.EndOfMessage):
            assert current is not None
            current.complete = True
            answers.append(current)
            current = None
            if conn.their_state is h11.DONE and conn.our_state is h11.DONE:
                conn.start_next_cycle()
                expect(len(answers))
            continue
        if isinstance(event, h11.ConnectionClosed):
            return answers, None
        if event is h11.PAUSED:
            trailing, _closed = conn.trailing_data
            if trailing:
                return answers, f"{len(trailing)} bytes after a response that ends the connection: {show(bytes(trailing), 200)}"
            return answers, None


# --------------------------------------------------------------------------- one exchange


@dataclass
class Received:
    """What a door sent back (a ``transport.Sink``)."""

    data: bytes = b""
    eof: bool = False  # the door closed (or reset) the connection
    reset: bool = False

    @property
    def closed(self) -> bool:
        return self.eof

    def feed(self, data: bytes) -> None:
        self.data += data

    def end(self, reset: bool) -> None:
        self.eof, self.reset = True, reset


def exchange(front: FrontDoors, door: Door, writes: list[tuple[float, bytes]], ending: str, sent: Sent) -> Received:
    got = Received()
    expected = sum(1 for h in sent.heads if h.complete)

    def answers() -> tuple[list[Answer], str | None]:
        return parse_answers(got.data, sent, eof=False)

    def answered() -> bool:
        found, problem = answers()
        return problem is None and sent.outcome == "clean" and len(found) >= expected and not _midway(found)

    transport.exchange(front, door, "http/1.1", writes, ending, got, answered, lambda: _midway(answers()[0]))
    return got


def _midway(answers: list[Answer]) -> bool:
    return bool(answers) and not answers[-1].complete


# --------------------------------------------------------------------------- one example


def run_case(front: FrontDoors, door: Door, case: H1Case) -> None:
    ledger = front.ledger
    front.findings.count(test_name())
    example = ledger.next_example()
    wire = case.render(ledger, example)
    ledger.note_origin(example, door.name, wire)
    writes = case.writes(wire)
    sent = parse_sent(wire)
    if sent.outcome == "upgrade":
        # CONNECT or Upgrade: what follows is an opaque tunnel, every byte of it "sent". The
        # outbound and inbound listeners carry CONNECT by design (raw bytes, no mesh-client-id
        # added or removed); the gateway is HTTP only.
        ledger.note_sent([wire])
        if door.name != "gateway":
            ledger.note_tunnelled(wire)
    ledger.note_sent([h.routed_target for h in sent.heads] + [h.target for h in sent.heads])
    note(f"door {door.name}: sent {show(wire)} in {len(writes)} writes, ending {case.ending}")
    note(f"a strict parser reads {len(sent.heads)} head(s), outcome {sent.outcome} {sent.error}")
    problems: list[Finding] = []
    got = exchange(front, door, writes, case.ending, sent)
    note(f"received {show(got.data)} (closed: {got.eof}, reset: {got.reset})")
    if case.ending != "abort" and sent.outcome != "upgrade":
        problems += check_answers(ledger, wire, sent, got)
    for head in sent.heads:
        if not head.complete:
            problems += _refuse(ledger, wire, head.target, "the client never completed this request (strict parser)")
    problems += front.after_example(lambda: canary(front, door))
    front.findings.verdict(problems, door.name, wire, f"writes {[(p, len(b)) for p, b in writes]}, ending {case.ending}")


def check_answers(ledger: Ledger, wire: bytes, sent: Sent, got: Received) -> list[Finding]:
    answers, problem = parse_answers(got.data, sent, eof=got.eof and not got.reset)
    if problem and any(h.method == b"HEAD" for h in sent.heads):
        # Read again as if every request were a GET: is there a body where a HEAD's answer must have none?
        as_gets, problem_as_gets = parse_answers(got.data, sent, eof=got.eof and not got.reset, heads_as_gets=True)
        if problem_as_gets is None:
            return _misaligned(sent, as_gets) or _head_bodies(sent, as_gets, got.data)
    if problem:
        return [Finding("invalid-response", f"{problem}; received {show(got.data)}")]
    misaligned = _misaligned(sent, answers)
    if misaligned:
        return misaligned
    if answers and not answers[-1].complete and got.eof:
        return [Finding("truncated-response", f"the connection closed mid-response: {show(got.data)}")]
    if answers and not answers[-1].complete:
        return [Finding("stalled-response", f"a response stopped midway for {transport.HARD_LIMIT}s: {show(got.data)}")]
    found: list[Finding] = []
    for index, answer in enumerate(answers):
        refused = answer.mesh_error is not None and answer.status >= 400
        if index >= len(sent.heads):
            if not refused or index > len(sent.heads):
                found.append(Finding(
                    "unasked-response",
                    f"response {index + 1} ({answer.status}{', the mesh' if refused else ''}) answers no request: "
                    f"a strict parser reads {len(sent.heads)} request(s) in what was sent; received {show(got.data)}",
                ))
            continue
        if refused:
            found += _refuse(ledger, wire, sent.heads[index].target, f"answered {answer.status} x-mesh-error {answer.mesh_error!r}")
            if answer.closes:
                for later in sent.heads[index + 1 :]:
                    why = f"after request {index + 1} was refused and the connection closed"
                    found += _refuse(ledger, wire, later.target, why, head_too=True)
    return found


PARSE_ERROR = b"malformed HTTP/1 message"  # the mesh's 400 body when its parser refuses the bytes


def _misaligned(sent: Sent, answers: list[Answer]) -> list[Finding]:
    """The mesh's parse error as the answer to a request that parses whole and fine, ahead of
    the one that does not: the answers no longer line up with the requests."""
    for index, answer in enumerate(answers):
        if index < len(sent.heads) and sent.heads[index].complete and sent.outcome == "error" and PARSE_ERROR in answer.body:
            return [Finding(
                "misaligned-response",
                f"request {index + 1} of {len(sent.heads) + 1} ({sent.heads[index].method.decode()} "
                f"{show(sent.heads[index].target, 80)}) parses whole and valid, yet its answer is the mesh's parse "
                f"error {answer.body!r} (a strict parser fails later: {sent.error}); the valid requests were "
                f"dropped and the answers no longer line up with the requests",
            )]
    return []


def _head_bodies(sent: Sent, answers: list[Answer], data: bytes) -> list[Finding]:
    """Answers to HEAD requests that carry a body (RFC 9110 9.3.2: never): a keep-alive client
    reads those bytes as the start of its next response. The mesh's refusal of a request it could
    not read (400, 431, 505) is the exception: the connection closes right after it, so its body is
    harmless to a client that sent HEAD and needed by one that could not tell it was HEAD at all."""
    accepted = False
    for index, answer in enumerate(answers):
        if index >= len(sent.heads) or sent.heads[index].method != b"HEAD" or not answer.body:
            continue
        if answer.mesh_error in (b"bad-request", b"header-too-large") and answer.closes:
            accepted = True
            continue
        whose = "the mesh's" if answer.mesh_error is not None else "the app's"
        return [Finding(
            "head-response-body",
            f"{whose} {answer.status} answer to HEAD request {index + 1} carries a body {answer.body[:80]!r}"
            f"{'' if answer.closes else ' and keeps the connection open'}; received {show(data)}",
        )]
    if accepted:
        return []
    return [Finding("invalid-response", f"answers to HEAD requests that do not parse; received {show(data)}")]


def _refuse(ledger: Ledger, wire: bytes, target: bytes, why: str, head_too: bool = False) -> list[Finding]:
    found = MARKER.search(target)
    if found is None or wire.count(found.group(0)) != 1:  # a mutation duplicated it: no telling which one arrived
        return []
    return ledger.note_refused(found.group(0), why, head_too)


def canary(front: FrontDoors, door: Door) -> None:
    """A well-behaved request on a new connection must reach the app and come back."""
    marker = front.ledger.canary_marker()
    request = b"GET /%s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n" % (marker, door.host)
    data = b""
    try:
        with front.connect(door, "http/1.1", timeout=5.0) as sock:
            sock.sendall(request)
            deadline = time.monotonic() + 5.0
            while time.monotonic() < deadline:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                data += chunk
    except (OSError, ssl.SSLError) as exc:
        raise Finding("door-down", f"a well-behaved client on {door.name} failed: {exc!r}; got {show(data)}") from None
    if not data.startswith(b"HTTP/1.1 200 ") or b"x-seen: " + marker not in data:
        raise Finding("door-down", f"a well-behaved request on {door.name} got {show(data)}")
