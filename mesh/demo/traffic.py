"""``traffic``: a gentle load generator for the demo, so dashboards (`mesh top`, `mesh stat`) move.

It GETs one URL, one request at a time, never more often than ``--rate`` per second,
until SIGINT/SIGTERM (exit 0) or ``--count`` requests. It prints nothing but errors
(status >= 400 or no response), at most one line per second; errors hidden by that
limit are counted in the next line.
"""

from __future__ import annotations

import signal
import sys
import time
from typing import TextIO

from mesh.demo._client import Client, UpstreamError

DEFAULT_URL = "http://127.0.0.1:9080/productpage"
DEFAULT_RATE = 2.0
ERROR_LINE_INTERVAL = 1.0


class _Stopped(BaseException):
    """Raised by the signal handler to leave the loop (even from inside a request)."""


_stop_requested = False


def _stop(signum: int, frame: object) -> None:
    # The flag too: a signal that lands in a finalizer (a socket's __del__) has its exception
    # swallowed by the interpreter ("Exception ignored in …"); the loop then stops on the flag.
    global _stop_requested
    _stop_requested = True
    raise _Stopped


class ErrorReporter:
    """At most one error line per ``interval`` seconds; the rest are counted, not printed."""

    def __init__(self, interval: float = ERROR_LINE_INTERVAL, out: TextIO | None = None) -> None:
        self.interval = interval
        self.out = out if out is not None else sys.stderr
        self.last = float("-inf")
        self.suppressed = 0

    def report(self, message: str, now: float) -> None:
        if now - self.last < self.interval:
            self.suppressed += 1
            return
        more = f" (+{self.suppressed} more errors)" if self.suppressed else ""
        self.out.write(f"traffic: {message}{more}\n")
        self.out.flush()
        self.last = now
        self.suppressed = 0


def run(url: str, rate: float, count: int | None = None, headers: dict[str, str] | None = None) -> int:
    interval = 1.0 / rate
    timeout = max(5.0, interval)
    http = Client()
    reporter = ErrorReporter()
    sent = 0
    next_at = time.monotonic()
    while (count is None or sent < count) and not _stop_requested:
        delay = next_at - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        started = time.monotonic()
        # One request at a time, and the next one no sooner than `interval` after this one
        # started: never faster than the rate, however quickly (or slowly) replies come.
        next_at = started + interval
        sent += 1
        try:
            reply = http.get(url, headers, timeout=timeout)
        except UpstreamError as exc:
            reporter.report(f"GET {url}: {exc.summary}", time.monotonic())
            continue
        if reply.status >= 400:
            reporter.report(f"GET {url}: {reply.summary}", time.monotonic())
    return 0


def main(
    url: str = DEFAULT_URL,
    rate: float = DEFAULT_RATE,
    count: int | None = None,
    headers: dict[str, str] | None = None,
) -> int:
    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    try:
        return run(url, rate, count, headers)
    except _Stopped:
        return 0
