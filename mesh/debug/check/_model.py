"""What a check is, what it found, and the runner that goes through them in order.

Sans-IO: the runner only calls the checkers it is given; the clock and the
sleep used between retries are parameters, so tests run it without waiting.

Rules of the runner (the same as linkerd's healthcheck package):

- categories run in order, and the checkers of a category in order;
- a checker with ``retry_for > 0`` is called again (every ``retry_interval``
  seconds) while it does not pass, until ``retry_for`` seconds have gone by;
  its last result counts;
- a *fatal* checker that fails blocks its category: the rest of the category is
  skipped, and so is every category (or checker) that ``needs`` it. Each skipped
  check is recorded with the reason, never silently dropped;
- a checker that raises is a failure that names the exception: `mesh check`
  must never crash on the very problem it is looking for.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field


class Status(str, enum.Enum):
    OK = "ok"
    WARN = "warn"
    FAIL = "fail"
    SKIPPED = "skipped"


@dataclass(frozen=True, slots=True)
class CheckResult:
    """What one checker found: a one-line message, and what to do about it (``hint``)."""

    status: Status
    message: str
    hint: str | None = None

    @classmethod
    def ok(cls, message: str) -> CheckResult:
        return cls(Status.OK, message)

    @classmethod
    def warn(cls, message: str, hint: str | None = None) -> CheckResult:
        return cls(Status.WARN, message, hint)

    @classmethod
    def fail(cls, message: str, hint: str | None = None) -> CheckResult:
        return cls(Status.FAIL, message, hint)


@dataclass(frozen=True, slots=True)
class Checker:
    """One check: ``check()`` does the looking and returns a CheckResult.

    ``description`` says in one line what is checked (JSON carries it; the text
    output shows the result's message, which says what was found).
    ``blocked_reason`` is what the checks skipped after this fatal one failed
    say (default: "<description>" failed).
    ``needs`` names categories that must not be blocked for this checker to run.
    """

    category: str
    description: str
    check: Callable[[], CheckResult]
    retry_for: float = 0.0
    fatal: bool = False
    blocked_reason: str | None = None
    needs: tuple[str, ...] = ()

    def why_blocked(self) -> str:
        return self.blocked_reason or f"{self.description!r} failed"


@dataclass(frozen=True, slots=True)
class Category:
    """A named group of checkers; ``checkers`` may be a function called when its turn comes.

    A function lets a category depend on what earlier ones found (one data plane
    check per proxy that the control plane reported). ``needs``: categories
    whose fatal failure skips this whole category.
    """

    name: str
    checkers: Sequence[Checker] | Callable[[], Sequence[Checker]]
    needs: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class CheckOutcome:
    """A result as it is reported: the checker's description with what it found."""

    description: str
    status: Status
    message: str
    hint: str | None = None


@dataclass(frozen=True, slots=True)
class CategoryReport:
    name: str
    checks: tuple[CheckOutcome, ...]

    @property
    def failed(self) -> bool:
        return any(c.status is Status.FAIL for c in self.checks)


@dataclass(frozen=True, slots=True)
class Report:
    categories: tuple[CategoryReport, ...] = field(default_factory=tuple)

    @property
    def success(self) -> bool:
        """True when nothing failed; warnings and skipped checks are allowed."""
        return not any(c.failed for c in self.categories)

    def count(self, status: Status) -> int:
        return sum(1 for c in self.categories for o in c.checks if o.status is status)

    @property
    def worst(self) -> Status:
        for status in (Status.FAIL, Status.WARN):
            if self.count(status):
                return status
        return Status.OK


RETRY_INTERVAL = 0.5


def run_checks(
    categories: Iterable[Category],
    *,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    retry_interval: float = RETRY_INTERVAL,
    on_category: Callable[[CategoryReport], None] | None = None,
    raise_errors: bool = False,
) -> Report:
    """Run every category in order; ``on_category`` sees each one as soon as it is done."""
    blocked: dict[str, str] = {}  # category name -> why what needs it is skipped
    reports: list[CategoryReport] = []
    for category in categories:
        outcomes = _run_category(category, blocked, clock, sleep, retry_interval, raise_errors)
        report = CategoryReport(category.name, tuple(outcomes))
        reports.append(report)
        if on_category is not None:
            on_category(report)
    return Report(tuple(reports))


def _first_block(needs: Sequence[str], blocked: dict[str, str]) -> str | None:
    return next((blocked[name] for name in needs if name in blocked), None)


def _run_category(
    category: Category,
    blocked: dict[str, str],
    clock: Callable[[], float],
    sleep: Callable[[float], None],
    retry_interval: float,
    raise_errors: bool,
) -> list[CheckOutcome]:
    reason = _first_block(category.needs, blocked)
    if reason is not None:
        blocked[category.name] = reason
        return [CheckOutcome(f"all {category.name} checks", Status.SKIPPED, reason)]
    if callable(category.checkers):
        try:
            checkers = list(category.checkers())
        except Exception as exc:  # noqa: BLE001 - reported as a failure of the category
            if raise_errors:
                raise
            result = _failure_from(exc)
            blocked[category.name] = f"the {category.name} checks could not be prepared"
            return [CheckOutcome(f"prepare the {category.name} checks", result.status, result.message, result.hint)]
    else:
        checkers = list(category.checkers)

    outcomes: list[CheckOutcome] = []
    for index, checker in enumerate(checkers):
        reason = _first_block(checker.needs, blocked)
        if reason is not None:
            outcomes.append(CheckOutcome(checker.description, Status.SKIPPED, reason))
            continue
        result = _run_checker(checker, clock, sleep, retry_interval, raise_errors)
        outcomes.append(CheckOutcome(checker.description, result.status, result.message, result.hint))
        if checker.fatal and result.status is Status.FAIL:
            why = checker.why_blocked()
            blocked[category.name] = why
            outcomes.extend(CheckOutcome(rest.description, Status.SKIPPED, why) for rest in checkers[index + 1 :])
            break
    return outcomes


def _run_checker(
    checker: Checker,
    clock: Callable[[], float],
    sleep: Callable[[float], None],
    retry_interval: float,
    raise_errors: bool,
) -> CheckResult:
    deadline = clock() + checker.retry_for
    while True:
        try:
            result = checker.check()
        except Exception as exc:  # noqa: BLE001 - a crashing check is a failed check
            if raise_errors:
                raise
            result = _failure_from(exc)
        if not isinstance(result, CheckResult):
            raise TypeError(f"checker {checker.description!r} returned {result!r}, not a CheckResult")
        if result.status is Status.OK or clock() + retry_interval > deadline:
            return result
        sleep(retry_interval)


def _failure_from(exc: Exception) -> CheckResult:
    from mesh.errors import MeshError

    if isinstance(exc, MeshError):
        return CheckResult.fail(exc.message, exc.hint)
    return CheckResult.fail(
        f"the check itself failed: {type(exc).__name__}: {exc}",
        "run again with `mesh --debug check` for the traceback",
    )
