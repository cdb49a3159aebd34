"""The attempt plan and the outcome classification, pure: no trio, no sockets."""

from __future__ import annotations

from mesh.config import RetryPolicy
from mesh.proxy._exchange import (
    REFUSED_ATTEMPTS,
    AttemptPlan,
    Failover,
    Forward,
    GiveUp,
    Outcome,
    Reason,
    Replay,
    Retry,
    UpstreamKey,
    endpoint_verdict,
)

ONE = UpstreamKey("10.0.0.1", 80, None, None)
TWO = UpstreamKey("10.0.0.2", 80, None, None)


class Router:
    def __init__(self, others: int = 10, budget: int = 10) -> None:
        self.others = others  # how many more endpoints retry_to / failover_to can find
        self.budget = budget
        self.requested_for: list[Forward] = []

    def requested(self, forward: Forward) -> None:
        self.requested_for.append(forward)

    def _other(self, forward: Forward) -> Forward | None:
        if self.others <= 0:
            return None
        self.others -= 1
        key = TWO if forward.key == ONE else ONE
        return Forward(key, forward.peer_service, forward.target, retry=forward.retry)

    def retry_to(self, forward: Forward) -> Forward | None:
        if self.budget <= 0:
            return None
        self.budget -= 1
        return self._other(forward)

    def failover_to(self, forward: Forward) -> Forward | None:
        return self._other(forward)


def forward(retry: RetryPolicy | None = None, delay: float = 0.0) -> Forward:
    return Forward(ONE, "web", b"/", retry=retry, delay=delay)


def test_without_a_retry_policy_only_the_safe_steps_happen() -> None:
    router = Router()
    plan = AttemptPlan(router, forward(), retryable=True)
    assert not plan.may_retry and router.requested_for == []  # no budget earned
    assert isinstance(plan.answered(503), GiveUp)
    assert isinstance(plan.ended_without_answer(), GiveUp)
    step = plan.connect_failed()
    assert isinstance(step, Failover) and step.forward.key == TWO and plan.current.key == TWO
    assert isinstance(plan.connect_failed(), GiveUp)  # once
    assert isinstance(plan.stale(reused=True), Replay)
    assert isinstance(plan.stale(reused=True), GiveUp)  # once


def test_retries_follow_the_policy_conditions_and_budget() -> None:
    router = Router(budget=1)
    plan = AttemptPlan(router, forward(RetryPolicy(attempts=3, on=("5xx",))), retryable=True)
    assert router.requested_for  # a retryable request earns budget
    assert isinstance(plan.answered(404), GiveUp)  # not a listed condition
    step = plan.answered(503)
    assert isinstance(step, Retry) and plan.retries == 1
    assert isinstance(plan.answered(503), GiveUp)  # the budget is spent
    assert isinstance(plan.ended_without_answer(), GiveUp)  # "reset" is not listed


def test_a_request_that_cannot_be_sent_again_is_never_retried() -> None:
    plan = AttemptPlan(Router(), forward(RetryPolicy(attempts=2, on=("5xx", "reset"))), retryable=False)
    assert not plan.may_retry
    assert isinstance(plan.answered(503), GiveUp)
    plan = AttemptPlan(Router(), forward(RetryPolicy(attempts=2, on=("5xx", "reset"))), retryable=True)
    assert isinstance(plan.answered(503, replayable=False), GiveUp)  # what was sent was not kept
    assert isinstance(plan.ended_without_answer(replayable=True), Retry)


def test_refused_streams_are_replayed_a_bounded_number_of_times() -> None:
    plan = AttemptPlan(Router(), forward(), retryable=True)
    steps = [plan.refused(replayable=True) for _ in range(REFUSED_ATTEMPTS)]
    assert all(isinstance(s, Replay) for s in steps[:-1]) and isinstance(steps[-1], GiveUp)
    assert isinstance(AttemptPlan(Router(), forward(), retryable=True).refused(replayable=False), GiveUp)


def test_retryable_needs_a_policy_an_idempotent_method_and_a_small_kept_body() -> None:
    policy = RetryPolicy(attempts=1)
    assert AttemptPlan.retryable(b"GET", 0, forward(policy))
    assert not AttemptPlan.retryable(b"POST", 0, forward(policy))
    assert not AttemptPlan.retryable(b"GET", None, forward(policy))  # streaming: nothing kept
    assert not AttemptPlan.retryable(b"GET", 0, forward(None))
    assert AttemptPlan(Router(), forward(policy, delay=0.2), retryable=True).delay == 0.2


def test_a_client_reset_says_nothing_of_the_endpoint() -> None:
    assert endpoint_verdict(200, None) is True
    assert endpoint_verdict(502, Reason.CONNECT_FAILED) is False
    assert endpoint_verdict(200, Reason.CLIENT_RESET) is None
    assert endpoint_verdict(0, Reason.CLIENT_RESET) is None
    assert endpoint_verdict(503, Reason.CLIENT_RESET) is False  # the answer it left was a failure
    assert endpoint_verdict(200, None, grpc_status=14) is False
    outcome = Outcome(status=200, mesh_error=Reason.CLIENT_RESET)
    assert outcome.verdict is None and outcome.classification == "success"
