"""HTTP/2 at the front doors: generated and hostile frame sequences against live proxies (see harness.py).

The outbound listener and the gateway take h2c with prior knowledge; the inbound listener takes
ALPN h2 over mTLS with the fuzzer's mesh certificate.
"""

from __future__ import annotations

from hypothesis import given, strategies as st

from tests.fuzz import http2
from tests.fuzz.harness import Door, FrontDoors, budget, fuzz


@budget(ci_examples=40)
@given(data=st.data())
def frame_sequences(front: FrontDoors, door: Door, data: st.DataObject) -> None:
    http2.run_case(front, door, data.draw(http2.sequences(door), label="case"))


@budget(ci_examples=15)
@given(data=st.data())
def busy_clients(front: FrontDoors, door: Door, data: st.DataObject) -> None:
    http2.run_case(front, door, data.draw(http2.well_formed(door), label="case"))


def test_frame_sequences(front: FrontDoors, door: Door) -> None:
    fuzz(frame_sequences, front, door)


def test_busy_clients(front: FrontDoors, door: Door) -> None:
    fuzz(busy_clients, front, door)
