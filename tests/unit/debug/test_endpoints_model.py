"""Endpoint health: what the controller knows joined with what the scrape found."""

from __future__ import annotations

import pytest

from mesh.debug.endpoints import config_sync, endpoint_health, time_left

NOW = 1_000_000.0


def entry(**over: object) -> dict:
    return {"watching": True, "acked_version": 5, "source": "registration", "cert_expiry": NOW + 20 * 3600, **over}


@pytest.mark.parametrize(
    ("fields", "reachable", "expected"),
    [
        ({}, True, ("ok", "serving")),
        ({}, None, ("ok", "registered")),
        ({}, False, ("fail", "admin server unreachable: refused")),
        ({"cert_expiry": NOW - 1}, True, ("fail", "certificate expired")),
        ({"cert_expiry": NOW + 600}, True, ("warn", "certificate expires in 10m")),
        ({"acked_version": 4}, True, ("warn", "config at 4 (controller at 5)")),
        ({"watching": False}, True, ("warn", "config not watching (controller at 5)")),
        ({"watching": False, "source": "zeroconf"}, True, ("ok", "serving")),
        ({"cert_expiry": None}, True, ("ok", "serving")),
    ],
)
def test_endpoint_health(fields: dict, reachable: bool | None, expected: tuple[str, str]) -> None:
    assert endpoint_health(entry(**fields), 5, "refused", reachable, NOW) == expected


def test_sync_and_time_left_as_mesh_status_shows_them() -> None:
    assert config_sync(entry(), 5) == "current"
    assert config_sync(entry(acked_version=3), 5) == "at 3"
    assert [time_left(s) for s in (-1, 0, 30, 90, 7200)] == ["expired", "expired", "30s", "2m", "2h"]
