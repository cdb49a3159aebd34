"""The one-line error format of every command, without typer or rich.

``mesh proxy`` reports its errors through this module while never importing
typer (see ``mesh.cli._proxy_fast``), so it must stay dependency-free.
"""

from __future__ import annotations

import sys


def print_error(message: str, hint: str | None = None) -> None:
    err = sys.stderr
    color = err.isatty()
    red, dim, reset = ("\x1b[31m", "\x1b[2m", "\x1b[0m") if color else ("", "", "")
    err.write(f"{red}error:{reset} {message}\n")
    if hint:
        err.write(f"{dim}hint:{reset} {hint}\n")
