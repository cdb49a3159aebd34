"""One exposed value: what ``render`` writes per line and ``parse_prometheus_text`` reads back."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Sample:
    """A sample line of the Prometheus text format, without its (optional) timestamp.

    ``labels`` keeps the pairs in the order they were written (a tuple, so a
    sample can be hashed and compared); ``labels_dict`` is the mapping view.
    """

    name: str
    labels: tuple[tuple[str, str], ...]
    value: float

    def label(self, key: str) -> str | None:
        for name, value in self.labels:
            if name == key:
                return value
        return None

    @property
    def labels_dict(self) -> dict[str, str]:
        return dict(self.labels)
