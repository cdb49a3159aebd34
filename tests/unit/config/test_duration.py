from __future__ import annotations

import math

import pytest
from hypothesis import given, strategies as st

from mesh.config import format_duration, parse_duration


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("250ms", 0.25),
        ("2s", 2.0),
        ("1m", 60.0),
        ("1h", 3600.0),
        ("1.5s", 1.5),
        ("24h", 86400.0),
        ("0s", 0.0),
        ("0.5ms", 0.0005),
        (".5s", 0.5),
        ("1m30s", 90.0),
        ("1h30m", 5400.0),
    ],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(
    "text",
    ["", "2", "10", "ten", "2 s", " 2s", "2S", "-1s", "1.s", "2sec", "1d", "1e3s", "ms", "٣s"],
)
def test_parse_duration_refuses(text: str) -> None:
    with pytest.raises(ValueError, match="expected a duration like 250ms, 2s, 1m"):
        parse_duration(text)


@pytest.mark.parametrize("value", [2, 2.5, None, True])
def test_parse_duration_refuses_numbers(value: object) -> None:
    with pytest.raises(ValueError, match=r"expected a duration like 250ms, 2s, 1m, found "):
        parse_duration(value)  # type: ignore[arg-type]


def test_parse_duration_message_renders_found_value() -> None:
    with pytest.raises(ValueError) as info:
        parse_duration("ten")
    assert str(info.value) == 'expected a duration like 250ms, 2s, 1m, found "ten"'


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0s"),
        (0.25, "250ms"),
        (0.0005, "0.5ms"),
        (2, "2s"),
        (1.5, "1.5s"),
        (90, "90s"),
        (120, "2m"),
        (3600, "1h"),
        (86400, "24h"),
        (5400, "90m"),
        (3601, "3601s"),
        (1e-05, "0.01ms"),
    ],
)
def test_format_duration(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


@pytest.mark.parametrize("seconds", [-1, math.inf, math.nan])
def test_format_duration_refuses(seconds: float) -> None:
    with pytest.raises(ValueError):
        format_duration(seconds)


UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}


@given(st.integers(min_value=0, max_value=10**9), st.sampled_from(sorted(UNITS)))
def test_whole_numbers_of_any_unit(number: int, unit: str) -> None:
    expected = number / 1000 if unit == "ms" else number * UNITS[unit]
    assert parse_duration(f"{number}{unit}") == expected


@given(st.floats(min_value=0, allow_nan=False, allow_infinity=False))
def test_format_then_parse_gives_back_the_same_float(seconds: float) -> None:
    text = format_duration(seconds)
    assert parse_duration(text) == seconds
    assert "e" not in text  # never scientific notation: "1e-05s" would not parse


@given(st.integers(min_value=0, max_value=10**6), st.sampled_from(sorted(UNITS)))
def test_parse_then_format_is_stable(number: int, unit: str) -> None:
    seconds = parse_duration(f"{number}{unit}")
    assert parse_duration(format_duration(seconds)) == seconds
    assert format_duration(parse_duration(format_duration(seconds))) == format_duration(seconds)


@given(st.integers())
def test_bare_integers_are_refused(number: int) -> None:
    with pytest.raises(ValueError):
        parse_duration(str(number))


@given(st.text(max_size=12))
def test_parse_duration_never_crashes(text: str) -> None:
    try:
        seconds = parse_duration(text)
    except ValueError:
        return
    assert seconds >= 0 and math.isfinite(seconds)
