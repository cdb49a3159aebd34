"""Counters, gauges and histograms, and the registry that renders them.

These sit on the proxy's hot path: every request increments counters and observes
a histogram. So:

- ``labels(*values)`` is one dict lookup keyed by the tuple of values as given;
  the child is created (and the values checked) only the first time a label set
  appears. Callers that can, keep the child and skip even that lookup.
- ``inc``/``observe`` are an add (plus a bisect for histograms): no allocation,
  no lock. mesh runs single-threaded under trio; these objects are not
  thread-safe and need not be.

Label values are ``str`` or ``int`` (an HTTP status needs no ``str()`` per
request); ``"200"`` and ``200`` are the same series. ``bool`` and ``float`` are
refused because they compare equal to ints (``True == 1``) and would alias.
"""

from __future__ import annotations

import math
import re
from abc import ABC, abstractmethod
from bisect import bisect_left
from collections.abc import Callable, Sequence
from itertools import pairwise
from typing import ClassVar, Generic, TypeVar

from mesh.telemetry._exposition import format_value, render_text
from mesh.telemetry._quantile import histogram_quantile
from mesh.telemetry._sample import Sample

# Linkerd's response_latency_ms buckets.
DEFAULT_LATENCY_BUCKETS_MS: tuple[float, ...] = (
    1, 2, 3, 4, 5, 10, 20, 30, 40, 50, 100, 200, 300, 400, 500,
    1000, 2000, 3000, 4000, 5000, 10000, 20000, 30000, 40000, 50000,
)  # fmt: skip

LabelValue = str | int

_METRIC_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")


# ---------------------------------------------------------------- children: one series each


class CounterChild:
    """One series of a counter. Only goes up."""

    __slots__ = ("_value",)

    def __init__(self) -> None:
        self._value: float = 0

    def inc(self, amount: float = 1) -> None:
        if amount < 0:
            raise ValueError(f"a counter only goes up; cannot add {amount}")
        self._value += amount

    @property
    def value(self) -> float:
        return self._value


class GaugeChild:
    """One series of a gauge: a stored value, or a function read at render time."""

    __slots__ = ("_function", "_value")

    def __init__(self) -> None:
        self._value: float = 0
        self._function: Callable[[], float] | None = None

    def set(self, value: float) -> None:
        """Store ``value``; a function set before is dropped."""
        self._function = None
        self._value = value

    def inc(self, amount: float = 1) -> None:
        if self._function is not None:
            raise ValueError("this gauge is computed by a function; use set() to store a value")
        self._value += amount

    def dec(self, amount: float = 1) -> None:
        if self._function is not None:
            raise ValueError("this gauge is computed by a function; use set() to store a value")
        self._value -= amount

    def set_function(self, function: Callable[[], float]) -> None:
        """Compute the value with ``function()`` whenever it is read (e.g. at scrape time)."""
        self._function = function

    @property
    def value(self) -> float:
        if self._function is not None:
            return self._function()
        return self._value


class HistogramChild:
    """One series of a histogram: counts per bucket, sum and count of the observations."""

    __slots__ = ("_bucket_counts", "_count", "_sum", "_upper_bounds")

    def __init__(self, upper_bounds: tuple[float, ...]) -> None:
        self._upper_bounds = upper_bounds  # finite bounds, shared by all series of the family
        self._bucket_counts = [0] * (len(upper_bounds) + 1)  # not cumulative; last is +Inf
        self._sum: float = 0
        self._count = 0

    def observe(self, value: float) -> None:
        # bisect_left: a value equal to a bound belongs to that bucket (`le` = less or equal).
        self._bucket_counts[bisect_left(self._upper_bounds, value)] += 1
        self._sum += value
        self._count += 1

    @property
    def count(self) -> int:
        return self._count

    @property
    def sum(self) -> float:
        return self._sum

    def cumulative_buckets(self) -> list[tuple[float, int]]:
        """``(upper_bound, observations ≤ upper_bound)``; the last pair is ``(inf, count)``."""
        result: list[tuple[float, int]] = []
        running = 0
        for bound, count in zip((*self._upper_bounds, math.inf), self._bucket_counts, strict=True):
            running += count
            result.append((bound, running))
        return result

    def quantile(self, q: float) -> float | None:
        """Estimate of the ``q``-quantile from the buckets; None before any observation."""
        return histogram_quantile(q, self.cumulative_buckets())


# ---------------------------------------------------------------- families

ChildT = TypeVar("ChildT", CounterChild, GaugeChild, HistogramChild)


class _MetricFamily(Generic[ChildT], ABC):
    __slots__ = ("_children", "_help", "_labelnames", "_name", "_series", "_unlabelled")

    type_name: ClassVar[str]

    def __init__(self, name: str, help: str, labelnames: Sequence[str]) -> None:
        self._name = name
        self._help = help
        self._labelnames = tuple(labelnames)
        # Lookup cache keyed by the values exactly as passed (may hold int and str
        # aliases of one series); _series is keyed by the rendered strings, one per series.
        self._children: dict[tuple[LabelValue, ...], ChildT] = {}
        self._series: dict[tuple[str, ...], ChildT] = {}
        self._unlabelled: ChildT | None = None
        if not self._labelnames:
            self._unlabelled = self._add_child(())

    @property
    def name(self) -> str:
        return self._name

    @property
    def help(self) -> str:
        return self._help

    @property
    def labelnames(self) -> tuple[str, ...]:
        return self._labelnames

    def labels(self, *values: LabelValue) -> ChildT:
        """The series for these label values (in ``labelnames`` order), created on first use."""
        child = self._children.get(values)
        if child is None:
            child = self._add_child(values)
        return child

    def _add_child(self, values: tuple[LabelValue, ...]) -> ChildT:
        if len(values) != len(self._labelnames):
            expected = ", ".join(self._labelnames) or "none"
            raise ValueError(f"{self._name} takes {len(self._labelnames)} label values ({expected}), got {len(values)}")
        key = tuple(self._label_text(name, value) for name, value in zip(self._labelnames, values, strict=True))
        child = self._series.get(key)
        if child is None:
            child = self._new_child()
            self._series[key] = child
        self._children[values] = child
        return child

    def _label_text(self, labelname: str, value: object) -> str:
        if isinstance(value, str):
            return str(value)  # str() also turns a str subclass (e.g. a StrEnum) into plain text
        if isinstance(value, int) and not isinstance(value, bool):
            return int.__repr__(value)
        raise TypeError(
            f"{self._name}: label {labelname} takes a str or int value, got {type(value).__name__} {value!r}"
        )

    def _require_unlabelled(self) -> ChildT:
        if self._unlabelled is None:
            raise ValueError(
                f"{self._name} has labels ({', '.join(self._labelnames)}); pick a series with .labels(...) first"
            )
        return self._unlabelled

    @abstractmethod
    def _new_child(self) -> ChildT: ...

    def _series_items(self) -> list[tuple[tuple[tuple[str, str], ...], ChildT]]:
        # Sorted by label values so that a scrape reads the same way every time.
        return [
            (tuple(zip(self._labelnames, key, strict=True)), child)
            for key, child in sorted(self._series.items(), key=lambda item: item[0])
        ]

    @abstractmethod
    def samples(self) -> list[Sample]: ...


class Counter(_MetricFamily[CounterChild]):
    """A value that only goes up (requests, bytes). The name is exposed exactly as given."""

    __slots__ = ()
    type_name = "counter"

    def _new_child(self) -> CounterChild:
        return CounterChild()

    def inc(self, amount: float = 1) -> None:
        """For a counter without labels."""
        self._require_unlabelled().inc(amount)

    @property
    def value(self) -> float:
        return self._require_unlabelled().value

    def samples(self) -> list[Sample]:
        return [Sample(self._name, labels, child.value) for labels, child in self._series_items()]


class Gauge(_MetricFamily[GaugeChild]):
    """A value that goes up and down (open connections), or is computed when read."""

    __slots__ = ()
    type_name = "gauge"

    def _new_child(self) -> GaugeChild:
        return GaugeChild()

    def set(self, value: float) -> None:
        self._require_unlabelled().set(value)

    def inc(self, amount: float = 1) -> None:
        self._require_unlabelled().inc(amount)

    def dec(self, amount: float = 1) -> None:
        self._require_unlabelled().dec(amount)

    def set_function(self, function: Callable[[], float]) -> None:
        self._require_unlabelled().set_function(function)

    @property
    def value(self) -> float:
        return self._require_unlabelled().value

    def samples(self) -> list[Sample]:
        samples = []
        for labels, child in self._series_items():
            try:
                value = child.value
            except Exception:  # noqa: BLE001
                # A failing gauge function must not take /metrics down with it.
                value = math.nan
            samples.append(Sample(self._name, labels, value))
        return samples


class Histogram(_MetricFamily[HistogramChild]):
    """Observations counted into buckets (latencies), with their sum and count."""

    __slots__ = ("_upper_bounds",)
    type_name = "histogram"

    def __init__(
        self,
        name: str,
        help: str,
        labelnames: Sequence[str],
        buckets: Sequence[float] = DEFAULT_LATENCY_BUCKETS_MS,
    ) -> None:
        self._upper_bounds = _finite_bounds(name, buckets)
        super().__init__(name, help, labelnames)

    @property
    def buckets(self) -> tuple[float, ...]:
        """The finite upper bounds; ``+Inf`` is always there too."""
        return self._upper_bounds

    def _new_child(self) -> HistogramChild:
        return HistogramChild(self._upper_bounds)

    def observe(self, value: float) -> None:
        self._require_unlabelled().observe(value)

    @property
    def count(self) -> int:
        return self._require_unlabelled().count

    @property
    def sum(self) -> float:
        return self._require_unlabelled().sum

    def quantile(self, q: float) -> float | None:
        return self._require_unlabelled().quantile(q)

    def samples(self) -> list[Sample]:
        bucket_name, sum_name, count_name = (
            f"{self._name}_bucket",
            f"{self._name}_sum",
            f"{self._name}_count",
        )
        samples = []
        for labels, child in self._series_items():
            for bound, cumulative in child.cumulative_buckets():
                samples.append(Sample(bucket_name, (*labels, ("le", format_value(bound))), cumulative))
            samples.append(Sample(sum_name, labels, child.sum))
            samples.append(Sample(count_name, labels, child.count))
        return samples


def _finite_bounds(name: str, buckets: Sequence[float]) -> tuple[float, ...]:
    bounds = tuple(buckets)
    if bounds and math.isinf(bounds[-1]) and bounds[-1] > 0:
        bounds = bounds[:-1]  # +Inf is implicit
    for bound in bounds:
        if isinstance(bound, bool) or not isinstance(bound, (int, float)) or not math.isfinite(bound):
            raise ValueError(f"{name}: bucket bounds must be finite numbers, got {bound!r}")
    if any(lower >= upper for lower, upper in pairwise(bounds)):
        raise ValueError(f"{name}: bucket bounds must be strictly increasing, got {list(bounds)}")
    return bounds


# ---------------------------------------------------------------- registry

_FamilyT = TypeVar("_FamilyT", Counter, Gauge, Histogram)


class MetricsRegistry:
    """Every metric of one process, by name; ``render()`` is the body of ``/metrics``."""

    __slots__ = ("_families", "_sample_names")

    def __init__(self) -> None:
        self._families: dict[str, Counter | Gauge | Histogram] = {}
        # Names that appear on sample lines (a histogram's _bucket, _sum, _count too),
        # so that two metrics can never write lines that read as one.
        self._sample_names: dict[str, str] = {}

    def counter(self, name: str, help: str, labelnames: Sequence[str] = ()) -> Counter:
        return self._register(Counter(name, help, self._check(name, labelnames)), (name,))

    def gauge(self, name: str, help: str, labelnames: Sequence[str] = ()) -> Gauge:
        return self._register(Gauge(name, help, self._check(name, labelnames)), (name,))

    def histogram(
        self,
        name: str,
        help: str,
        labelnames: Sequence[str] = (),
        buckets: Sequence[float] = DEFAULT_LATENCY_BUCKETS_MS,
    ) -> Histogram:
        labelnames = self._check(name, labelnames)
        if "le" in labelnames:
            raise ValueError(f"{name}: 'le' is the bucket label of a histogram; use another name")
        histogram = Histogram(name, help, labelnames, buckets)
        return self._register(histogram, (f"{name}_bucket", f"{name}_sum", f"{name}_count"))

    def get(self, name: str) -> Counter | Gauge | Histogram | None:
        return self._families.get(name)

    def samples(self) -> list[Sample]:
        """What ``render()`` writes, as data (the same order)."""
        return [sample for family in self._sorted_families() for sample in family.samples()]

    def render(self) -> str:
        """Prometheus text format 0.0.4; families sorted by name, series by label values."""
        return render_text(self._sorted_families())

    def _sorted_families(self) -> list[Counter | Gauge | Histogram]:
        return [self._families[name] for name in sorted(self._families)]

    def _check(self, name: str, labelnames: Sequence[str]) -> tuple[str, ...]:
        if not isinstance(name, str) or not _METRIC_NAME.fullmatch(name):
            raise ValueError(f"invalid metric name {name!r}: expected [a-zA-Z_:][a-zA-Z0-9_:]*")
        if isinstance(labelnames, str):
            raise TypeError(f"{name}: labelnames must be a sequence of names, not the str {labelnames!r}")
        names = tuple(labelnames)
        for label in names:
            if not isinstance(label, str) or not _LABEL_NAME.fullmatch(label) or label.startswith("__"):
                raise ValueError(
                    f"{name}: invalid label name {label!r}: expected [a-zA-Z_][a-zA-Z0-9_]* not starting with __"
                )
        if len(set(names)) != len(names):
            raise ValueError(f"{name}: duplicate label names in {list(names)}")
        return names

    def _register(self, family: _FamilyT, sample_names: tuple[str, ...]) -> _FamilyT:
        for sample_name in (family.name, *sample_names):
            owner = self._sample_names.get(sample_name)
            if owner == family.name:
                raise ValueError(f"metric {family.name} is already registered")
            if owner is not None:
                raise ValueError(
                    f"metric {family.name} would write {sample_name} lines, like the already registered metric {owner}"
                )
        self._families[family.name] = family
        for sample_name in (family.name, *sample_names):
            self._sample_names[sample_name] = family.name
        return family
