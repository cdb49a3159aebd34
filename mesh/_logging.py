"""Log lines of mesh processes: one line per event, with its time (UTC) and its component.

Two formats, chosen by ``--log-format`` (a root option, ``mesh --log-format json …``) or
``MESH_LOG_FORMAT`` (which the root option sets, so children such as the services of
`mesh up` and re-exec'd sidecars log the same way):

    text  2026-01-05T10:00:00.123Z [mesh proxy web] INFO proxy web ready: …
    json  {"ts": "2026-01-05T10:00:00.123Z", "level": "INFO", "component": "proxy web",
           "logger": "mesh.proxy", "msg": "proxy web ready: …"}

An exception logged with its traceback stays one event: in text, its type and message and
the line that raised it are appended to the message (the whole traceback only with
``--debug``, for developers); in JSON the traceback is one more field. ``is_mesh_line``
tells a mesh line from an app's (``mesh up`` shows an app's last words, not its sidecar's).
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import time
import traceback
from pathlib import Path

ENV_FORMAT = "MESH_LOG_FORMAT"
FORMATS = ("text", "json")
# `2026-01-05T10:00:00.123Z [mesh ` (or a bare `[mesh `, from older versions) / a JSON log line of
# ours / an access log line (`--access-log -`: mesh.telemetry.access_line).
_MESH_LINE = re.compile(r'^(\d{4}-\d\d-\d\dT[\d:.]+Z )?\[mesh |^\{"ts": |^\{"time":"')


def log_format(given: str | None = None) -> str:
    """The format asked for (the option, else MESH_LOG_FORMAT), ``text`` when neither says."""
    chosen = (given or os.environ.get(ENV_FORMAT) or "text").strip().lower()
    return chosen if chosen in FORMATS else "text"


def check_log_format(given: str) -> str:
    """``--log-format``: one of FORMATS, else a clear error."""
    from mesh.errors import MeshError

    chosen = given.strip().lower()
    if chosen not in FORMATS:
        raise MeshError(f"--log-format: unknown format {given!r}", hint=f"one of {', '.join(FORMATS)}")
    return chosen


def utc_timestamp(created: float) -> str:
    """ISO 8601, UTC, milliseconds: ``2026-01-05T10:00:00.123Z``."""
    seconds = int(created)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{int((created - seconds) * 1000):03d}Z"


def is_mesh_line(line: str) -> bool:
    """A line a mesh process logged (either format), not one of the app's."""
    return _MESH_LINE.match(line) is not None


def _one_line(text: str) -> str:
    return " ".join(part.strip() for part in text.splitlines() if part.strip())


def _exception_summary(exc_info: tuple) -> str:
    """``ValueError: bad thing (at mesh/x.py:12 in f)``: what and where, in one line."""
    kind, value, tb = exc_info
    where = ""
    frames = traceback.extract_tb(tb) if tb is not None else []
    if frames:
        last = frames[-1]
        where = f" (at {Path(last.filename).name}:{last.lineno} in {last.name})"
    detail = _one_line(str(value)) if value is not None else ""
    name = kind.__name__ if kind is not None else "Exception"
    return f"{name}: {detail}{where}" if detail else f"{name}{where}"


class TextFormatter(logging.Formatter):
    def __init__(self, component: str, tracebacks: bool = False) -> None:
        super().__init__()
        self.prefix = f"[mesh {component}]"
        self.tracebacks = tracebacks

    def format(self, record: logging.LogRecord) -> str:
        message = _one_line(record.getMessage())
        if record.exc_info and record.exc_info[0] is not None:
            message = f"{message}: {_exception_summary(record.exc_info)}"
        line = f"{utc_timestamp(record.created)} {self.prefix} {record.levelname} {message}"
        if self.tracebacks and record.exc_info and record.exc_info[0] is not None:
            line += "\n" + self.formatException(record.exc_info)
        return line


class JsonFormatter(logging.Formatter):
    def __init__(self, component: str) -> None:
        super().__init__()
        self.component = component

    def format(self, record: logging.LogRecord) -> str:
        event = {
            "ts": utc_timestamp(record.created),
            "level": record.levelname,
            "component": self.component,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if record.exc_info and record.exc_info[0] is not None:
            event["error"] = _exception_summary(record.exc_info)
            event["traceback"] = self.formatException(record.exc_info)
        return json.dumps(event, ensure_ascii=False)


def setup_logging(
    component: str,
    debug: bool = False,
    level: str | None = None,
    log_file: Path | None = None,
    fmt: str | None = None,
) -> None:
    """Log lines to stderr, or to ``log_file`` (when the terminal shows a live panel instead)."""
    chosen = logging.DEBUG if debug else getattr(logging, (level or "INFO").upper(), logging.INFO)
    if log_file:
        from mesh.home import open_log

        open_log(log_file).close()  # created owner-only before logging opens it
    handler: logging.Handler = logging.FileHandler(log_file) if log_file else logging.StreamHandler(sys.stderr)
    formatter: logging.Formatter = (
        JsonFormatter(component) if log_format(fmt) == "json" else TextFormatter(component, tracebacks=debug)
    )
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(chosen)
    # Third-party chatter stays out of the user's way unless asked for.
    for noisy in ("zeroconf", "hpack", "h2"):
        logging.getLogger(noisy).setLevel(logging.WARNING if not debug else logging.INFO)
