"""Trace context: reading it from a request, deciding to sample, and carrying it on (pure).

A proxy makes one span per request and hop: a client span on the outbound side, a
server span on the inbound side. Its parent is the span context the request came
with; the request then leaves with this span's context, so the next hop (and the
app behind an inbound proxy) makes its spans children of this one.

Formats, both read and written:

- W3C trace context: ``traceparent: 00-<32 hex trace id>-<16 hex span id>-<2 hex flags>``
  and ``tracestate`` (passed on unchanged, as a proxy that adds no vendor entry must).
- B3 (Zipkin, Envoy): single header ``b3: <trace id>-<span id>[-<sampled>[-<parent>]]``
  or the multi-header form ``x-b3-traceid``, ``x-b3-spanid``, ``x-b3-parentspanid``,
  ``x-b3-sampled``, ``x-b3-flags``.

W3C wins when a request carries both. A request always leaves with ``traceparent``,
and with B3 in the form it came with (single or multi), so apps that read either see
the hop's span. Invalid headers are ignored (W3C: restart the trace), never refused.

Sampling is parent-based (OpenTelemetry's ``ParentBased(TraceIdRatioBased(rate))``):
a sampled or unsampled parent decides; a new trace (or a B3 parent that deferred the
decision) is sampled when the low 64 bits of its trace id fall under ``rate * 2**64``,
so every proxy that sees the same trace id decides the same way.
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from dataclasses import dataclass

TRACEPARENT = b"traceparent"
TRACESTATE = b"tracestate"
B3_SINGLE = b"b3"
B3_TRACE_ID = b"x-b3-traceid"
B3_SPAN_ID = b"x-b3-spanid"
B3_PARENT_SPAN_ID = b"x-b3-parentspanid"
B3_SAMPLED = b"x-b3-sampled"
B3_FLAGS = b"x-b3-flags"
TRACE_HEADERS = frozenset(
    {TRACEPARENT, TRACESTATE, B3_SINGLE, B3_TRACE_ID, B3_SPAN_ID, B3_PARENT_SPAN_ID, B3_SAMPLED, B3_FLAGS}
)

# How B3 came in, so it goes on the same way.
B3_NONE, B3_SINGLE_FORM, B3_MULTI_FORM = 0, 1, 2

MAX_TRACESTATE = 512  # W3C: "vendors SHOULD propagate at least 512 characters"; longer ones are dropped
_HEX = b"0123456789abcdef"
_PRINTABLE = bytes(range(0x20, 0x7F))
_TRACEPARENT_LENGTH = 55
_ID_MASK_64 = (1 << 64) - 1


@dataclass(frozen=True, slots=True)
class Propagated:
    """The trace context a request arrived with."""

    trace_id: int | None  # None: only a sampling decision came (B3 ``b3: 0``, ``x-b3-sampled: 1``)
    span_id: int | None  # the caller's span: the parent of ours
    sampled: bool | None  # None: deferred (B3 without a decision): we decide
    tracestate: bytes | None = None
    b3: int = B3_NONE
    short_trace_id: bool = False  # a 64-bit B3 trace id: passed on as 16 hex digits


@dataclass(slots=True)
class SpanContext:
    """This hop's span: its ids, its parent, whether it is sampled, and how to pass it on."""

    trace_id: int
    span_id: int
    parent_id: int | None  # None: the root of its trace
    sampled: bool
    tracestate: bytes | None = None
    b3: int = B3_NONE
    short_trace_id: bool = False

    @property
    def trace_id_hex(self) -> str:
        return f"{self.trace_id:032x}"

    @property
    def span_id_hex(self) -> str:
        return f"{self.span_id:016x}"

    def headers(self) -> list[tuple[bytes, bytes]]:
        """The headers that carry this span on: the next hop's parent is this span."""
        sampled = b"1" if self.sampled else b"0"
        out = [(TRACEPARENT, b"00-%032x-%016x-0%s" % (self.trace_id, self.span_id, sampled))]
        if self.tracestate:
            out.append((TRACESTATE, self.tracestate))
        if self.b3:
            trace = b"%016x" % self.trace_id if self.short_trace_id else b"%032x" % self.trace_id
            span = b"%016x" % self.span_id
            if self.b3 == B3_SINGLE_FORM:
                out.append((B3_SINGLE, b"%s-%s-%s" % (trace, span, sampled)))
            else:
                out += [(B3_TRACE_ID, trace), (B3_SPAN_ID, span), (B3_SAMPLED, sampled)]
                if self.parent_id is not None:
                    out.append((B3_PARENT_SPAN_ID, b"%016x" % self.parent_id))
        return out


def _lower_hex(value: bytes, length: int) -> int | None:
    """``value`` as a non-zero id of exactly ``length`` lower-case hex digits, else None."""
    if len(value) != length or value.translate(None, _HEX):
        return None
    number = int(value, 16)
    return number or None


def parse_traceparent(value: bytes) -> tuple[int, int, bool] | None:
    """(trace id, parent span id, sampled) of a W3C ``traceparent``, or None when it is invalid.

    Versions after 00 are read as 00 when they keep its layout (the spec's forward compatibility);
    version ff, upper-case hex and all-zero ids are invalid.
    """
    value = value.strip(b" \t")
    size = len(value)
    if size < _TRACEPARENT_LENGTH or value[2:3] != b"-" or value[35:36] != b"-" or value[52:53] != b"-":
        return None
    version = value[:2]
    if version.translate(None, _HEX) or version == b"ff":
        return None
    if size > _TRACEPARENT_LENGTH and (version == b"00" or value[55:56] != b"-"):
        return None
    trace_id = _lower_hex(value[3:35], 32)
    span_id = _lower_hex(value[36:52], 16)
    flags = value[53:55]
    if trace_id is None or span_id is None or flags.translate(None, _HEX):
        return None
    return trace_id, span_id, bool(int(flags, 16) & 1)


def _b3_trace_id(value: bytes) -> tuple[int, bool] | None:
    """A B3 trace id (16 or 32 lower-hex digits) and whether it was the short form."""
    if len(value) == 16:
        number = _lower_hex(value, 16)
        return (number, True) if number is not None else None
    number = _lower_hex(value, 32)
    return (number, False) if number is not None else None


def _b3_sampled(value: bytes) -> bool | None:
    """B3's sampling state: ``1``/``d`` (debug) yes, ``0`` no; legacy ``true``/``false`` too."""
    value = value.strip().lower()
    if value in (b"1", b"d", b"true"):
        return True
    if value in (b"0", b"false"):
        return False
    return None


def parse_b3_single(value: bytes) -> Propagated | None:
    """``b3: {trace}-{span}[-{sampled}[-{parent}]]`` or ``b3: {sampled}``; None when invalid."""
    parts = value.strip().split(b"-")
    if len(parts) == 1:  # a sampling decision alone
        sampled = _b3_sampled(parts[0]) if parts[0] in (b"0", b"1", b"d") else None
        return Propagated(None, None, sampled, b3=B3_SINGLE_FORM) if sampled is not None else None
    if len(parts) > 4:
        return None
    trace = _b3_trace_id(parts[0])
    span_id = _lower_hex(parts[1], 16)
    if trace is None or span_id is None:
        return None
    sampled = None
    if len(parts) >= 3:
        if parts[2] not in (b"0", b"1", b"d"):
            return None
        sampled = _b3_sampled(parts[2])
    if len(parts) == 4 and _lower_hex(parts[3], 16) is None:
        return None
    return Propagated(trace[0], span_id, sampled, b3=B3_SINGLE_FORM, short_trace_id=trace[1])


def parse_b3_multi(
    trace_id: bytes | None, span_id: bytes | None, sampled: bytes | None, flags: bytes | None
) -> Propagated | None:
    """The ``x-b3-*`` headers; None when they carry nothing usable."""
    if flags is not None and flags.strip() == b"1":  # debug: sampled
        decision: bool | None = True
    else:
        decision = _b3_sampled(sampled) if sampled is not None else None
    if trace_id is None or span_id is None:
        return Propagated(None, None, decision, b3=B3_MULTI_FORM) if decision is not None else None
    trace = _b3_trace_id(trace_id.strip())
    span = _lower_hex(span_id.strip(), 16)
    if trace is None or span is None:
        return None
    return Propagated(trace[0], span, decision, b3=B3_MULTI_FORM, short_trace_id=trace[1])


def extract(headers: Iterable[tuple[bytes, bytes]]) -> Propagated | None:
    """The trace context of a request's headers (W3C first, then B3 single, then B3 multi), or None."""
    traceparent: bytes | None = None
    traceparents = 0
    tracestate: list[bytes] = []
    single: bytes | None = None
    multi: dict[bytes, bytes] = {}
    for name, value in headers:
        name = name.lower()
        if name not in TRACE_HEADERS:
            continue
        if name == TRACEPARENT:
            traceparent = value
            traceparents += 1
        elif name == TRACESTATE:
            tracestate.append(value)
        elif name == B3_SINGLE:
            single = value
        else:
            multi[name] = value
    if traceparent is not None and traceparents == 1:  # twice is invalid: the trace restarts
        parsed = parse_traceparent(traceparent)
        if parsed is not None:
            state = b",".join(v.strip() for v in tracestate) if tracestate else None
            if state is not None and (not state or len(state) > MAX_TRACESTATE or state.translate(None, _PRINTABLE)):
                state = None  # empty, too long, or not printable ASCII (it goes into spans as text)
            b3 = B3_SINGLE_FORM if single is not None else B3_MULTI_FORM if multi else B3_NONE
            # B3 that came along with a 64-bit trace id goes on 64-bit (W3C pads it with zeros).
            b3_trace = single.strip().partition(b"-")[0] if single is not None else multi.get(B3_TRACE_ID, b"").strip()
            short = len(b3_trace) == 16 and parsed[0] >> 64 == 0
            return Propagated(parsed[0], parsed[1], parsed[2], state, b3, short)
    if single is not None:
        found = parse_b3_single(single)
        if found is not None:
            return found
    if multi:
        return parse_b3_multi(multi.get(B3_TRACE_ID), multi.get(B3_SPAN_ID), multi.get(B3_SAMPLED), multi.get(B3_FLAGS))
    return None


def trace_id_of(headers: Iterable[tuple[bytes, bytes]]) -> str | None:
    """The trace id a request carries (32 hex digits), for logs; None without one."""
    found = extract(headers)
    return f"{found.trace_id:032x}" if found is not None and found.trace_id is not None else None


def check_sample_rate(rate: float) -> float:
    if not 0.0 <= rate <= 1.0:  # NaN fails both
        raise ValueError(f"the sample rate must be a number from 0.0 to 1.0, not {rate!r}")
    return float(rate)


class Tracer:
    """Starts this proxy's spans: ids, the sampling decision, and what to drop and add upstream.

    Randomness is injected (``rng``) so tests can fix it; ids come from ``getrandbits``
    (no syscall per request: span ids need to be unique, not secret).
    """

    __slots__ = ("sample_rate", "_bound", "_bits", "_drop")

    def __init__(self, sample_rate: float = 1.0, rng: random.Random | None = None) -> None:
        self.sample_rate = check_sample_rate(sample_rate)
        self._bound = round(self.sample_rate * (1 << 64))
        self._bits = (rng or random.Random()).getrandbits
        self._drop: dict[frozenset[bytes], frozenset[bytes]] = {}

    def sampled(self, trace_id: int) -> bool:
        """The ratio decision for a trace with no decided parent (consistent per trace id)."""
        return (trace_id & _ID_MASK_64) < self._bound

    def _new_id(self, bits: int) -> int:
        return self._bits(bits) or 1  # an all-zero id is invalid

    def start(self, headers: Iterable[tuple[bytes, bytes]]) -> SpanContext:
        """This hop's span for a request with ``headers``: a child of the context it carries,
        or the root of a new trace."""
        parent = extract(headers)
        span_id = self._new_id(64)
        if parent is None or parent.trace_id is None:
            trace_id = self._new_id(128)
            forced = parent.sampled if parent is not None else None
            sampled = forced if forced is not None else self.sampled(trace_id)
            return SpanContext(trace_id, span_id, None, sampled, b3=parent.b3 if parent is not None else B3_NONE)
        sampled = parent.sampled if parent.sampled is not None else self.sampled(parent.trace_id)
        return SpanContext(
            parent.trace_id, span_id, parent.span_id, sampled, parent.tracestate, parent.b3, parent.short_trace_id
        )

    def dropping(self, drop: frozenset[bytes]) -> frozenset[bytes]:
        """``drop`` plus the trace headers (which the span's own replace), built once per set."""
        merged = self._drop.get(drop)
        if merged is None:
            merged = self._drop[drop] = drop | TRACE_HEADERS
        return merged
