"""HTTP/1 at the front doors: generated and mutated requests against live proxies (see harness.py)."""

from __future__ import annotations

from hypothesis import given, strategies as st

from tests.fuzz import http1
from tests.fuzz.harness import Door, FrontDoors, budget, fuzz


@budget(ci_examples=40)
@given(data=st.data())
def mutated_requests(front: FrontDoors, door: Door, data: st.DataObject) -> None:
    http1.run_case(front, door, data.draw(http1.cases(door), label="case"))


@budget(ci_examples=25)
@given(data=st.data())
def framing_conflicts(front: FrontDoors, door: Door, data: st.DataObject) -> None:
    http1.run_case(front, door, data.draw(http1.framing_conflicts(door), label="case"))


@budget(ci_examples=10)
@given(data=st.data())
def slow_requests(front: FrontDoors, door: Door, data: st.DataObject) -> None:
    http1.run_case(front, door, data.draw(http1.slow_cases(door), label="case"))


def test_mutated_requests(front: FrontDoors, door: Door) -> None:
    fuzz(mutated_requests, front, door)


def test_framing_conflicts(front: FrontDoors, door: Door) -> None:
    fuzz(framing_conflicts, front, door)


def test_slow_requests(front: FrontDoors, door: Door) -> None:
    fuzz(slow_requests, front, door)
