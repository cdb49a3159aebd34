"""The runner of `mesh check`: order, retries (with a fake clock), fatal checks, skips, crashes."""

from __future__ import annotations

import pytest

from mesh.debug.check import Category, Checker, CheckResult, Status, run_checks
from mesh.errors import ControllerError


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def ok(message: str = "fine"):  # noqa: ANN201
    return lambda: CheckResult.ok(message)


def statuses(report) -> list[tuple[str, str, str]]:  # noqa: ANN001
    return [(c.name, o.description, o.status.value) for c in report.categories for o in c.checks]


def test_runs_categories_and_checkers_in_order() -> None:
    calls: list[str] = []

    def record(name: str):  # noqa: ANN202
        def check() -> CheckResult:
            calls.append(name)
            return CheckResult.ok(name)

        return check

    report = run_checks(
        [
            Category("a", [Checker("a", "a1", record("a1")), Checker("a", "a2", record("a2"))]),
            Category("b", lambda: [Checker("b", "b1", record("b1"))]),
        ]
    )
    assert calls == ["a1", "a2", "b1"]
    assert report.success
    assert [c.name for c in report.categories] == ["a", "b"]
    assert report.categories[0].checks[1].message == "a2"


def test_retries_until_it_passes() -> None:
    clock = FakeClock()
    answers = iter([CheckResult.fail("not yet"), CheckResult.fail("not yet"), CheckResult.ok("up")])
    report = run_checks(
        [Category("a", [Checker("a", "comes up", lambda: next(answers), retry_for=5.0)])],
        clock=clock,
        sleep=clock.sleep,
        retry_interval=0.5,
    )
    assert statuses(report) == [("a", "comes up", "ok")]
    assert clock.sleeps == [0.5, 0.5]


def test_retries_give_up_after_retry_for_with_the_last_result() -> None:
    clock = FakeClock()
    attempts: list[float] = []

    def never() -> CheckResult:
        attempts.append(clock.now)
        return CheckResult.fail(f"attempt {len(attempts)}", "hint")

    report = run_checks(
        [Category("a", [Checker("a", "never", never, retry_for=5.0)])], clock=clock, sleep=clock.sleep, retry_interval=0.5
    )
    outcome = report.categories[0].checks[0]
    assert outcome.status is Status.FAIL
    assert outcome.message == f"attempt {len(attempts)}"
    assert attempts[-1] <= 5.0
    assert len(attempts) == 11  # at 0, 0.5, ..., 5.0


def test_warnings_are_retried_too_but_not_without_retry_for() -> None:
    clock = FakeClock()
    calls = []

    def warn() -> CheckResult:
        calls.append(1)
        return CheckResult.warn("behind")

    run_checks([Category("a", [Checker("a", "w", warn)])], clock=clock, sleep=clock.sleep)
    assert len(calls) == 1 and clock.sleeps == []
    run_checks([Category("a", [Checker("a", "w", warn, retry_for=1.0)])], clock=clock, sleep=clock.sleep)
    assert len(calls) == 1 + 3


def test_a_fatal_failure_skips_the_rest_of_its_category_and_dependent_categories() -> None:
    ran: list[str] = []

    def track(name: str, result: CheckResult):  # noqa: ANN202
        def check() -> CheckResult:
            ran.append(name)
            return result

        return check

    built = []

    def lazy() -> list[Checker]:
        built.append(True)
        return [Checker("data", "d1", track("d1", CheckResult.ok("x")))]

    report = run_checks(
        [
            Category(
                "control",
                [
                    Checker("control", "c1", track("c1", CheckResult.ok("x"))),
                    Checker(
                        "control",
                        "c2",
                        track("c2", CheckResult.fail("down", "start it")),
                        fatal=True,
                        blocked_reason="the controller is not reachable",
                    ),
                    Checker("control", "c3", track("c3", CheckResult.ok("x"))),
                    Checker("control", "c4", track("c4", CheckResult.ok("x"))),
                ],
            ),
            Category("other", [Checker("other", "o1", track("o1", CheckResult.ok("x")))]),
            Category(
                "discovery",
                [
                    Checker("discovery", "z1", track("z1", CheckResult.ok("x"))),
                    Checker("discovery", "z2", track("z2", CheckResult.ok("x")), needs=("control",)),
                ],
            ),
            Category("data", lazy, needs=("control",)),
            Category("after data", [Checker("after data", "a1", track("a1", CheckResult.ok("x")))], needs=("data",)),
        ]
    )
    assert ran == ["c1", "c2", "o1", "z1"]
    assert built == []  # a skipped category's checkers are never even built
    assert statuses(report) == [
        ("control", "c1", "ok"),
        ("control", "c2", "fail"),
        ("control", "c3", "skipped"),
        ("control", "c4", "skipped"),
        ("other", "o1", "ok"),
        ("discovery", "z1", "ok"),
        ("discovery", "z2", "skipped"),
        ("data", "all data checks", "skipped"),
        ("after data", "all after data checks", "skipped"),  # transitively
    ]
    skipped = [o for c in report.categories for o in c.checks if o.status is Status.SKIPPED]
    assert {o.message for o in skipped} == {"the controller is not reachable"}
    assert not report.success


def test_a_non_fatal_failure_skips_nothing_and_warnings_do_not_fail() -> None:
    report = run_checks(
        [
            Category(
                "a",
                [
                    Checker("a", "f", lambda: CheckResult.fail("bad")),
                    Checker("a", "w", lambda: CheckResult.warn("meh"), fatal=True),
                    Checker("a", "o", ok()),
                ],
            ),
            Category("b", [Checker("b", "o", ok())], needs=("a",)),
        ]
    )
    assert statuses(report) == [("a", "f", "fail"), ("a", "w", "warn"), ("a", "o", "ok"), ("b", "o", "ok")]
    assert not report.success
    warn_only = run_checks([Category("a", [Checker("a", "w", lambda: CheckResult.warn("meh"))])])
    assert warn_only.success


def test_default_blocked_reason_names_the_failed_check() -> None:
    report = run_checks(
        [
            Category(
                "a",
                [Checker("a", "CA loads", lambda: CheckResult.fail("no"), fatal=True), Checker("a", "next", ok())],
            )
        ]
    )
    assert report.categories[0].checks[1].message == "'CA loads' failed"


def test_a_crashing_check_is_a_failure_not_a_crash() -> None:
    def boom() -> CheckResult:
        raise RuntimeError("kaput")

    def mesh_error() -> CheckResult:
        raise ControllerError("cannot connect", hint="start it")

    report = run_checks([Category("a", [Checker("a", "boom", boom), Checker("a", "mesh", mesh_error)])])
    crash, error = report.categories[0].checks
    assert crash.status is Status.FAIL
    assert "RuntimeError: kaput" in crash.message
    assert "--debug" in (crash.hint or "")
    assert (error.status, error.message, error.hint) == (Status.FAIL, "cannot connect", "start it")
    with pytest.raises(RuntimeError):
        run_checks([Category("a", [Checker("a", "boom", boom)])], raise_errors=True)


def test_a_category_whose_checkers_cannot_be_built_fails_and_blocks() -> None:
    def build() -> list[Checker]:
        raise ControllerError("no status", hint="h")

    report = run_checks([Category("data", build), Category("after", [Checker("after", "x", ok())], needs=("data",))])
    assert statuses(report) == [("data", "prepare the data checks", "fail"), ("after", "all after checks", "skipped")]


def test_on_category_sees_each_category_when_it_is_done() -> None:
    seen: list[str] = []
    run_checks(
        [Category("a", [Checker("a", "x", ok())]), Category("b", [Checker("b", "y", ok())])],
        on_category=lambda c: seen.append(c.name),
    )
    assert seen == ["a", "b"]


def test_a_checker_must_return_a_result() -> None:
    with pytest.raises(TypeError):
        run_checks([Category("a", [Checker("a", "x", lambda: "ok")])])  # type: ignore[arg-type, return-value]
