"""Balancer: power of two choices over peak-EWMA, with a fake clock and seeded randomness."""

from __future__ import annotations

import math
import random
from collections import Counter
from dataclasses import dataclass

import pytest

from mesh.proxy._balancer import DECAY_SECONDS, DEFAULT_RTT_MS, Balancer, EndpointLoad


@dataclass(frozen=True)
class Ep:
    address: str


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class RecordingBalancer(Balancer):
    """Remembers which addresses each choose() compared."""

    def __init__(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        super().__init__(*args, **kwargs)
        self.looked_up: list[str] = []

    def load(self, address: str) -> EndpointLoad:
        self.looked_up.append(address)
        return super().load(address)


def _eps(n: int) -> list[Ep]:
    return [Ep(f"10.0.0.{i}:4143") for i in range(n)]


def _request(balancer: Balancer, clock: Clock, endpoint: Ep, seconds: float, success: bool = True) -> None:
    started = balancer.start(endpoint.address)
    clock.advance(seconds)
    balancer.finish(endpoint.address, started, success)


def test_single_endpoint_is_always_chosen() -> None:
    clock = Clock()
    balancer = Balancer(random.Random(1), clock)
    only = Ep("10.0.0.1:1")
    for _ in range(5):
        balancer.start(only.address)  # however loaded it is
    _request(balancer, clock, only, 30.0, success=False)
    assert all(balancer.choose([only]) is only for _ in range(50))


def test_empty_endpoint_list_is_an_error_not_a_pick() -> None:
    with pytest.raises((ValueError, IndexError)):
        Balancer(random.Random(1), Clock()).choose([])


@pytest.mark.parametrize("count", [2, 3, 5])
def test_the_pair_is_always_two_distinct_endpoints(count: int) -> None:
    balancer = RecordingBalancer(random.Random(7), Clock())
    endpoints = _eps(count)
    pairs = Counter()
    for _ in range(400 * count):
        balancer.looked_up.clear()
        chosen = balancer.choose(endpoints)
        a, b = balancer.looked_up
        assert a != b
        assert chosen.address in (a, b)
        pairs[(a, b)] += 1
    # Every ordered pair of distinct endpoints shows up, roughly evenly.
    assert len(pairs) == count * (count - 1)
    expected = 400 * count / (count * (count - 1))
    assert min(pairs.values()) > expected * 0.5


@pytest.mark.parametrize("seed", range(5))
def test_the_worst_endpoint_of_three_is_never_picked(seed: int) -> None:
    # With distinct pairs, the costliest endpoint always loses its comparison.
    clock = Clock()
    balancer = Balancer(random.Random(seed), clock)
    endpoints = _eps(3)
    for _ in range(20):
        balancer.start(endpoints[1].address)
    picks = Counter(balancer.choose(endpoints).address for _ in range(300))
    assert picks[endpoints[1].address] == 0
    assert picks[endpoints[0].address] > 100 and picks[endpoints[2].address] > 100


def test_slow_endpoint_gets_much_less_traffic() -> None:
    clock = Clock()
    balancer = Balancer(random.Random(42), clock)
    endpoints = _eps(4)
    slow = endpoints[3]
    latency = {ep.address: 0.002 for ep in endpoints}
    latency[slow.address] = 0.250
    picks = Counter()
    for _ in range(2000):
        endpoint = balancer.choose(endpoints)
        picks[endpoint.address] += 1
        _request(balancer, clock, endpoint, latency[endpoint.address])
    fair = 2000 / 4
    assert picks[slow.address] < fair * 0.1, picks
    for ep in endpoints[:3]:
        assert picks[ep.address] > fair * 0.8, picks


def test_endpoint_with_many_pending_requests_is_avoided() -> None:
    clock = Clock()
    balancer = Balancer(random.Random(3), clock)
    endpoints = _eps(4)
    busy = endpoints[0]
    for ep in endpoints:  # same latency everywhere
        _request(balancer, clock, ep, 0.005)
    for _ in range(10):
        balancer.start(busy.address)
    picks = Counter(balancer.choose(endpoints).address for _ in range(1000))
    assert picks[busy.address] == 0, picks
    # Once they finish, it is back in the rotation.
    for _ in range(10):
        balancer.finish(busy.address, clock(), True)
    assert balancer.load(busy.address).pending == 0
    picks = Counter(balancer.choose(endpoints).address for _ in range(1000))
    assert picks[busy.address] > 100, picks


def test_cost_is_latency_times_outstanding_plus_one() -> None:
    clock = Clock()
    balancer = Balancer(random.Random(0), clock)
    load = balancer.load("a:1")
    assert load.cost(clock()) == pytest.approx(DEFAULT_RTT_MS)
    balancer.start("a:1")
    balancer.start("a:1")
    assert load.cost(clock()) == pytest.approx(3 * DEFAULT_RTT_MS)


def test_peak_is_taken_at_once_and_forgiven_slowly() -> None:
    clock = Clock()
    balancer = Balancer(random.Random(0), clock)
    _request(balancer, clock, Ep("a:1"), 0.400)
    load = balancer.load("a:1")
    assert load.cost(clock()) == pytest.approx(400.0)  # peak: no averaging upwards
    # A fast answer right after barely moves it (time-weighted, not count-weighted).
    _request(balancer, clock, Ep("a:1"), 0.001)
    assert load.cost(clock()) > 390.0
    # One idle decay period later it is about 1/e of that.
    clock.advance(DECAY_SECONDS)
    assert load.cost(clock()) == pytest.approx(400.0 * math.exp(-1), rel=0.02)


def test_idle_estimates_decay_toward_zero() -> None:
    clock = Clock()
    balancer = Balancer(random.Random(0), clock)
    _request(balancer, clock, Ep("slow:1"), 2.0)
    load = balancer.load("slow:1")
    costs = []
    for _ in range(12):
        costs.append(load.cost(clock()))
        clock.advance(DECAY_SECONDS)
    assert costs == sorted(costs, reverse=True)
    assert costs[0] == pytest.approx(2000.0)
    assert costs[-1] < 0.1  # as in Finagle and tower: an idle endpoint ends up worth trying
    # A new endpoint starts at the default estimate and decays the same way.
    fresh = EndpointLoad(clock())
    assert fresh.cost(clock()) == pytest.approx(DEFAULT_RTT_MS)
    assert fresh.cost(clock() + DECAY_SECONDS) == pytest.approx(DEFAULT_RTT_MS / math.e)


def test_forgiven_slow_endpoint_gets_traffic_again() -> None:
    clock = Clock()
    balancer = Balancer(random.Random(9), clock)
    endpoints = _eps(2)
    _request(balancer, clock, endpoints[0], 1.0)
    _request(balancer, clock, endpoints[1], 0.005)
    balancer.start(endpoints[1].address)  # one request in flight on the healthy one
    # Slow recently: loses even against an endpoint with a request in flight.
    assert all(balancer.choose(endpoints) is endpoints[1] for _ in range(50))
    clock.advance(10 * DECAY_SECONDS)
    balancer.finish(endpoints[1].address, clock() - 0.005)  # the healthy one keeps being measured
    # Forgiven: its old slowness has decayed below the healthy one's fresh estimate.
    assert all(balancer.choose(endpoints) is endpoints[0] for _ in range(50))


def test_sequential_calls_keep_probing_every_endpoint() -> None:
    """Calls one at a time: a peer whose first call was slow (a new connection) is not starved."""
    clock = Clock()
    balancer = Balancer(random.Random(3), clock)
    endpoints = _eps(2)
    _request(balancer, clock, endpoints[0], 0.030)  # first calls pay for the connection set-up
    _request(balancer, clock, endpoints[1], 0.030)
    served = {e.address: 0 for e in endpoints}
    for _ in range(20_000):  # ~60 s of calls of 3 ms each
        chosen = balancer.choose(endpoints)
        served[chosen.address] += 1
        _request(balancer, clock, chosen, 0.003)
    assert min(served.values()) >= 20, served


def test_failure_is_measured_by_its_latency_only() -> None:
    # Failing endpoints are ejected by the outlier detector (see test_policy); the
    # balancer weighs latency alone, so a fast failure is not disguised as slowness.
    clock = Clock()
    balancer = Balancer(random.Random(0), clock)
    _request(balancer, clock, Ep("bad:1"), 0.001, success=False)
    assert balancer.load("bad:1").cost(clock()) < 10.0


def test_pending_never_goes_negative() -> None:
    clock = Clock()
    balancer = Balancer(random.Random(0), clock)
    balancer.finish("x:1", clock(), True)
    balancer.finish("x:1", clock(), True)
    assert balancer.load("x:1").pending == 0
    started = balancer.start("x:1")
    assert balancer.load("x:1").pending == 1
    balancer.finish("x:1", started, True)
    assert balancer.load("x:1").pending == 0


def test_backwards_clock_does_not_break_costs() -> None:
    clock = Clock()
    balancer = Balancer(random.Random(0), clock)
    _request(balancer, clock, Ep("a:1"), 0.2)
    load = balancer.load("a:1")
    before = load.cost(clock())
    assert load.cost(clock() - 100.0) == pytest.approx(before)


def test_forget_drops_state_of_removed_endpoints() -> None:
    clock = Clock()
    balancer = Balancer(random.Random(0), clock)
    _request(balancer, clock, Ep("old:1"), 3.0)
    _request(balancer, clock, Ep("keep:1"), 3.0)
    balancer.forget({"keep:1"})
    assert balancer.load("old:1").cost(clock()) == pytest.approx(DEFAULT_RTT_MS)
    assert balancer.load("keep:1").cost(clock()) > 1000.0


def test_seeded_choices_are_reproducible() -> None:
    endpoints = _eps(6)
    runs = []
    for _ in range(2):
        balancer = Balancer(random.Random(1234), Clock())
        runs.append([balancer.choose(endpoints).address for _ in range(100)])
    assert runs[0] == runs[1]
    assert len(set(runs[0])) == 6


def test_an_endpoint_holding_requests_does_not_decay() -> None:
    """A hung endpoint (requests in flight, nothing answered) must not become the favourite."""
    clock = Clock()
    balancer = Balancer(random.Random(5), clock)
    hung, healthy = _eps(2)
    _request(balancer, clock, hung, 0.005)
    for _ in range(50):
        balancer.start(hung.address)  # never finished
    clock.advance(45)
    _request(balancer, clock, healthy, 0.005)
    assert balancer.load(hung.address).cost(clock()) > 50 * balancer.load(healthy.address).cost(clock())
    assert all(balancer.choose([hung, healthy]) is healthy for _ in range(50))
