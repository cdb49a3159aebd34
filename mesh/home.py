"""MESH_HOME: where mesh keeps its state, and the safe way to write there.

Layout (DESIGN.md section 3)::

    ca/root.pem ca/root.key ca/issuer.pem ca/issuer.key ca/bundle.pem
    controller.json  host.json  join-token  operator/  host/  run/

``host.json`` says what this host is to the mesh (``HostRecord``): its role
(``controller``: a controller runs here; ``joined``: `mesh join` made it part of
a mesh whose controller is elsewhere) and its own address, which `mesh inject`,
`mesh proxy` and `mesh gateway` listen on and advertise by default.

Writes go to a temporary file in the same directory, then ``os.replace``:
nothing half-written is ever left behind.
"""

from __future__ import annotations

import json
import os
import stat
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

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
    def host_dir(self) -> Path:
        """The host identity of a joined host (``spiffe://TD/host/NAME``): cert.pem, key.pem."""
        return self.root / "host"

    @property
    def host_json(self) -> Path:
        return self.root / "host.json"

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


HOST_ROLES = ("controller", "joined")


@dataclass(frozen=True)
class HostRecord:
    """``MESH_HOME/host.json``: this host's role in the mesh and its own address.

    ``address``: what other hosts dial for this host (None: none is known, everything stays on
    loopback). ``bind``: where listeners for other hosts bind: the address itself, or the wildcard
    when the address was given as ``--advertise`` (it need not be one of this host's, behind NAT).
    """

    role: str
    address: str | None = None
    bind: str | None = None
    name: str | None = None  # the host identity's name (joined hosts)
    controller: str | None = None  # the controller it joined (joined hosts)
    operator: bool = False  # it holds an operator identity (`mesh join --operator`, or the controller's host)

    @property
    def zeroconf_interface(self) -> str | None:
        """The interface zeroconf spans by default: the address, when it is one of this host's."""
        return self.address if self.address is not None and self.bind == self.address else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "role": self.role,
            "address": self.address,
            "bind": self.bind,
            "name": self.name,
            "controller": self.controller,
            "operator": self.operator,
        }


def read_host_record(home: MeshHome) -> HostRecord | None:
    """This host's record, or None (never written, or unreadable: then every default is loopback)."""
    try:
        data = json.loads(home.host_json.read_text())
        role = str(data["role"])
        if role not in HOST_ROLES:
            return None
        address = data.get("address") or None
        return HostRecord(
            role=role,
            address=str(address) if address else None,
            bind=str(data.get("bind") or address) if address else None,
            name=data.get("name") or None,
            controller=data.get("controller") or None,
            operator=bool(data.get("operator")),
        )
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def write_host_record(home: MeshHome, record: HostRecord) -> None:
    home.ensure_dir(home.root)
    atomic_write(home.host_json, json.dumps(record.to_dict(), indent=2) + "\n", mode=0o644)


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
