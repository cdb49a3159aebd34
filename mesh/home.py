"""MESH_HOME: where mesh keeps its state, and the safe way to write there.

Layout (DESIGN.md section 3)::

    ca/root.pem ca/root.key ca/issuer.pem ca/issuer.key ca/bundle.pem
    controller.json  join-token  operator/  run/

Writes go to a temporary file in the same directory, then ``os.replace``:
nothing half-written is ever left behind.
"""

from __future__ import annotations

import os
import stat
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from mesh.errors import HomeError

ENV_VAR = "MESH_HOME"


def default_home() -> Path:
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env).expanduser()
    return Path.home() / ".mesh"


@dataclass(frozen=True)
class MeshHome:
    """Paths inside one MESH_HOME. Creating the object touches no file."""

    root: Path

    @classmethod
    def resolve(cls, home: str | Path | None = None) -> MeshHome:
        return cls(Path(home).expanduser() if home else default_home())

    @property
    def ca_dir(self) -> Path:
        return self.root / "ca"

    @property
    def root_cert(self) -> Path:
        return self.ca_dir / "root.pem"

    @property
    def root_key(self) -> Path:
        return self.ca_dir / "root.key"

    @property
    def issuer_cert(self) -> Path:
        return self.ca_dir / "issuer.pem"

    @property
    def issuer_key(self) -> Path:
        return self.ca_dir / "issuer.key"

    @property
    def bundle(self) -> Path:
        return self.ca_dir / "bundle.pem"

    @property
    def controller_json(self) -> Path:
        return self.root / "controller.json"

    @property
    def join_token(self) -> Path:
        return self.root / "join-token"

    @property
    def operator_dir(self) -> Path:
        return self.root / "operator"

    @property
    def run_dir(self) -> Path:
        return self.root / "run"

    def has_ca(self) -> bool:
        return self.root_cert.exists() and self.issuer_key.exists()

    def ensure_dir(self, path: Path, mode: int = 0o700) -> Path:
        """Create ``path`` (and MESH_HOME, owner-only: it holds keys and tokens) if needed, with ``mode``.

        An existing MESH_HOME keeps its mode: that is the owner's choice (`mesh check` warns).
        """
        try:
            if not self.root.is_dir():
                # mkdir(parents=True) makes missing parents with the default mode (0755), so
                # MESH_HOME is made on its own: its parents as usual, MESH_HOME itself 0700.
                self.root.parent.mkdir(parents=True, exist_ok=True)
                try:
                    self.root.mkdir(mode=0o700)
                except FileExistsError:
                    pass  # made meanwhile by another mesh process
            path.mkdir(parents=True, exist_ok=True, mode=mode)
            os.chmod(path, mode)
        except PermissionError as exc:
            raise HomeError(
                f"cannot create {path}: permission denied",
                hint="choose a writable MESH_HOME with --home DIR or MESH_HOME=DIR",
            ) from exc
        except NotADirectoryError as exc:
            raise HomeError(
                f"cannot create {path}: a file stands where a directory should be",
                hint="move that file away or choose another MESH_HOME with --home DIR",
            ) from exc
        except OSError as exc:
            raise HomeError(f"cannot create {path}: {exc.strerror}") from exc
        return path


def atomic_write(path: Path, data: bytes | str, mode: int = 0o644) -> None:
    """Write ``data`` to ``path`` so that readers see the old or the new file, never half."""
    if isinstance(data, str):
        data = data.encode()
    directory = path.parent
    try:
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{path.name}.", suffix=".tmp")
    except FileNotFoundError as exc:
        raise HomeError(f"cannot write {path}: directory {directory} does not exist") from exc
    except PermissionError as exc:
        raise HomeError(f"cannot write {path}: permission denied") from exc
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def open_log(path: Path) -> BinaryIO:
    """``path`` opened for appending, owner-only (0600, an existing log tightened too): logs
    under MESH_HOME/run say who called what, where, and how `mesh join` works."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        return os.fdopen(fd, "ab")
    except BaseException:
        os.close(fd)
        raise


def loose_permissions(path: Path) -> bool:
    """True when a secret file can be read by group or others."""
    try:
        return bool(path.stat().st_mode & (stat.S_IRWXG | stat.S_IRWXO))
    except FileNotFoundError:
        return False
