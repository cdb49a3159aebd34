"""Log lines: UTC time and component on every line, one line per event, JSON for machines."""

from __future__ import annotations

import io
import json
import logging
import re

import pytest

from mesh import _logging
from mesh.inject._fleet import app_lines

TEXT_LINE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z \[mesh proxy web\] (INFO|WARNING|ERROR) ")


def _capture(fmt: str, debug: bool = False) -> tuple[logging.Logger, io.StringIO]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    formatter = _logging.JsonFormatter("proxy web") if fmt == "json" else _logging.TextFormatter("proxy web", debug)
    handler.setFormatter(formatter)
    logger = logging.getLogger(f"test.logging.{fmt}.{debug}")
    logger.handlers[:] = [handler]
    logger.propagate = False
    logger.setLevel(logging.INFO)
    return logger, stream


def _fail() -> None:
    raise ValueError("the bad thing\nwith a second line")


def test_text_lines_carry_utc_time_and_component_and_stay_one_line() -> None:
    logger, stream = _capture("text")
    logger.info("ready: inbound %s", "10.0.0.2:4143")
    logger.warning("two\nlines")
    try:
        _fail()
    except ValueError:
        logger.exception("controller link failed")
    lines = stream.getvalue().splitlines()
    assert len(lines) == 3, lines  # one event, one line: the traceback is summed up, not printed
    assert all(TEXT_LINE.match(line) for line in lines), lines
    assert lines[1].endswith("WARNING two lines")
    assert lines[2].endswith(
        f"ERROR controller link failed: ValueError: the bad thing with a second line (at test_logging.py:{_fail.__code__.co_firstlineno + 1} in _fail)"
    ), lines[2]


def test_debug_keeps_the_whole_traceback_for_developers() -> None:
    logger, stream = _capture("text", debug=True)
    try:
        _fail()
    except ValueError:
        logger.exception("it broke")
    text = stream.getvalue()
    assert "Traceback (most recent call last)" in text and 'raise ValueError("the bad thing' in text


def test_json_lines_are_one_object_each() -> None:
    logger, stream = _capture("json")
    logger.info("ready\nnow")
    try:
        _fail()
    except ValueError:
        logger.exception("it broke")
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2
    first, second = (json.loads(line) for line in lines)
    assert first["component"] == "proxy web" and first["level"] == "INFO" and first["msg"] == "ready\nnow"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", first["ts"])
    assert second["error"].startswith("ValueError: the bad thing") and "Traceback" in second["traceback"]


def test_utc_timestamp() -> None:
    assert _logging.utc_timestamp(0.25) == "1970-01-01T00:00:00.250Z"
    assert _logging.utc_timestamp(1767607200.5) == "2026-01-05T10:00:00.500Z"


def test_the_format_comes_from_the_option_or_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(_logging.ENV_FORMAT, raising=False)
    assert _logging.log_format() == "text"
    monkeypatch.setenv(_logging.ENV_FORMAT, "json")
    assert _logging.log_format() == "json"
    assert _logging.log_format("text") == "text"
    with pytest.raises(Exception, match="--log-format: unknown format 'yaml'"):
        _logging.check_log_format("yaml")


def test_app_lines_tell_mesh_lines_from_the_apps_in_both_formats() -> None:
    lines = [
        "2026-01-05T10:00:00.123Z [mesh inject web] INFO app is ready",
        '{"ts": "2026-01-05T10:00:00.123Z", "level": "INFO", "component": "inject web", "msg": "x"}',
        "[mesh inject web] INFO an older mesh's line",
        "Traceback (most recent call last):",
        "KeyError: 'x'",
    ]
    assert app_lines(lines) == lines[3:]
    assert app_lines(lines[:3]) == lines[:3]  # no line of the app's: the sidecar's say something at least
