"""Log lines of mesh processes: one line each, prefixed so they can be told apart."""

from __future__ import annotations

import logging
import sys
from pathlib import Path


def setup_logging(
    component: str, debug: bool = False, level: str | None = None, log_file: Path | None = None
) -> None:
    """Log lines to stderr, or to ``log_file`` (when the terminal shows a live panel instead)."""
    chosen = logging.DEBUG if debug else getattr(logging, (level or "INFO").upper(), logging.INFO)
    if log_file:
        from mesh.home import open_log

        open_log(log_file).close()  # created owner-only before logging opens it
    handler: logging.Handler = logging.FileHandler(log_file) if log_file else logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(f"[mesh {component}] %(levelname)s %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(chosen)
    # Third-party chatter stays out of the user's way unless asked for.
    for noisy in ("zeroconf", "hpack", "h2"):
        logging.getLogger(noisy).setLevel(logging.WARNING if not debug else logging.INFO)
