"""Reading identity files with errors that name the file, and the permission warning."""

from __future__ import annotations

import warnings
from pathlib import Path

from mesh.errors import IdentityError
from mesh.home import loose_permissions


class InsecurePermissionsWarning(UserWarning):
    """A private key file is readable by group or others (not fatal: the operator decides)."""


def read_file(
    path: Path, what: str, *, hint: str | None = None, unreadable_hint: str = "run mesh as the user who owns MESH_HOME"
) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise IdentityError(f"{what} {path} does not exist", hint=hint) from None
    except IsADirectoryError:
        raise IdentityError(f"{what} {path} is a directory, expected a PEM file", hint=hint) from None
    except PermissionError:
        raise IdentityError(
            f"cannot read {what} {path}: permission denied",
            hint=unreadable_hint,
        ) from None
    except OSError as exc:
        raise IdentityError(f"cannot read {what} {path}: {exc.strerror}") from None


def warn_if_loose(key_path: Path) -> None:
    """Warn (never fail) when a private key is readable by anyone but its owner."""
    if loose_permissions(key_path):
        warnings.warn(
            f"private key {key_path} is readable by group or others; run: chmod 600 {key_path}",
            InsecurePermissionsWarning,
            stacklevel=3,
        )
