"""Traffic policy decisions with a fake clock and seeded randomness."""

from __future__ import annotations

import random

import pytest

from mesh.discovery import Endpoint
from mesh.proxy._policy import (
    OutlierDetector,
    PolicySet,
    RetryBudget,
    TokenBucket,
    choose_subset,
    in_subset,
    may_retry,
    retry_condition,
)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def snapshot(**extra: object) -> dict:
    return {"version": 3, "trust_domain": "mesh.local", "authz_default": "allow", "routes": [], "policies": [], **extra}


def endpoint(port: int, version: str) -> Endpoint:
    return Endpoint("reviews", "127.0.0.1", port, labels=(("version", version),))


def test_first_matching_route_wins_and_header_override() -> None:
    policies = PolicySet.from_snapshot(
        snapshot(
            routes=[
                {"service": "reviews", "name": "jason", "match": {"headers": {"end-user": "jason"}},
                 "split": [{"labels": {"version": "v2"}, "weight": 100}]},
                {"service": "reviews", "name": "api", "match": {"path_prefix": "/api", "method": "GET"}},
                {"service": "reviews", "name": "rx", "match": {"path_regex": "/r/[0-9]+"}},
                {"service": "reviews", "name": "all", "split": [
                    {"labels": {"version": "v1"}, "weight": 90}, {"labels": {"version": "v3"}, "weight": 10}]},
            ]
        )
    )
    route = policies.route_for
    assert route("reviews", b"GET", b"/x", {b"end-user": b"jason"}).name == "jason"
    assert route("reviews", b"GET", b"/api/1?q", {}).name == "api"
    assert route("reviews", b"POST", b"/api/1", {}).name == "all"
    assert route("reviews", b"GET", b"/r/42", {}).name == "rx"
    assert route("reviews", b"GET", b"/r/4x", {}).name == "all"
    assert route("ratings", b"GET", b"/", {}) is None


def test_weighted_split_is_within_two_points_over_10000() -> None:
    policies = PolicySet.from_snapshot(
        snapshot(routes=[{"service": "reviews", "split": [
            {"labels": {"version": "v1"}, "weight": 90}, {"labels": {"version": "v2"}, "weight": 10}]}])
    )
    compiled = policies.routes["reviews"][0]
    rng = random.Random(7)
    counts = {"v1": 0, "v2": 0}
    for _ in range(10_000):
        counts[choose_subset(compiled, rng)["version"]] += 1
    assert abs(counts["v2"] / 100 - 10) < 2
    endpoints = [endpoint(1, "v1"), endpoint(2, "v2"), endpoint(3, "v2")]
    assert [e.port for e in in_subset(endpoints, {"version": "v2"})] == [2, 3]
    assert in_subset(endpoints, None) == endpoints


def test_retry_budget_caps_retries() -> None:
    clock = Clock()
    budget = RetryBudget(ratio=0.2, min_per_second=1, window=10, clock=clock)
    for _ in range(100):
        budget.record_request()
    allowed = sum(budget.try_withdraw() for _ in range(100))
    assert allowed == 30  # 20 % of 100 plus 1/s over 10 s
    clock.now += 11
    assert budget.try_withdraw()  # the window moved on


def test_retry_conditions_and_eligibility() -> None:
    assert retry_condition(None, ["connect-failure"]) and not retry_condition(None, ["5xx"])
    assert retry_condition(503, ["5xx"]) and retry_condition(503, ["gateway-error"]) and retry_condition(503, ["503"])
    assert not retry_condition(500, ["gateway-error"]) and not retry_condition(404, ["5xx"])
    assert may_retry(b"GET", 0, False) and not may_retry(b"POST", 0, False) and may_retry(b"POST", 10, True)
    assert not may_retry(b"GET", 65 * 1024, True) and not may_retry(b"GET", None, True)


def test_outlier_ejection_grows_and_never_ejects_more_than_half() -> None:
    clock = Clock()
    detector = OutlierDetector(threshold=5, base=30, clock=clock)
    peers = [endpoint(1, "v1"), endpoint(2, "v1"), endpoint(3, "v1"), endpoint(4, "v1")]
    a = peers[0].address
    assert not any(detector.record(a, False, peers) for _ in range(4))
    assert detector.record(a, False, peers) and detector.ejected(a)
    assert [e.port for e in detector.available(peers)] == [2, 3, 4]
    clock.now += 31
    assert not detector.ejected(a)
    for _ in range(5):
        detector.record(a, False, peers)
    clock.now += 31
    assert detector.ejected(a)  # second ejection: 60 s
    clock.now += 30
    assert not detector.ejected(a)
    # Half of four: a second one may go, a third may not.
    for peer in peers[:3]:
        for _ in range(5):
            detector.record(peer.address, False, peers)
    assert len(detector.available(peers)) == 2
    detector.record(peers[1].address, True, peers)  # success resets the count


def test_token_bucket() -> None:
    clock = Clock()
    bucket = TokenBucket(rate=2, burst=3, clock=clock)
    assert [bucket.take() for _ in range(4)] == [True, True, True, False]
    clock.now += 0.5
    assert bucket.take() and not bucket.take()


@pytest.mark.parametrize(
    ("policy", "default", "caller", "allowed"),
    [
        (None, "allow", "spiffe://mesh.local/svc/x", True),
        (None, "deny", "spiffe://mesh.local/svc/x", False),
        ({"allow": ["reviews"]}, "allow", "spiffe://mesh.local/svc/reviews", True),
        ({"allow": ["reviews"]}, "allow", "spiffe://mesh.local/svc/productpage", False),
        ({"allow": ["spiffe://mesh.local/svc/productpage"]}, "deny", "spiffe://mesh.local/svc/productpage", True),
        ({"allow": ["*"], "deny": ["evil"]}, "deny", "spiffe://mesh.local/svc/evil", False),
        ({"allow": ["reviews"]}, "allow", "spiffe://other.domain/svc/reviews", False),
    ],
)
def test_authorization(policy: dict | None, default: str, caller: str, allowed: bool) -> None:
    policies = [{"service": "ratings", **policy}] if policy else []
    compiled = PolicySet.from_snapshot(snapshot(authz_default=default, policies=policies))
    assert compiled.authorize("ratings", caller) is allowed
