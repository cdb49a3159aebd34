"""What one `mesh check` run knows: its inputs, the category names and timings, and what earlier
checks learned (the controller's address, its health and status) for later ones."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from mesh import __version__
from mesh.errors import MeshError
from mesh.home import MeshHome, read_host_record

ENVIRONMENT = "environment"
CA = "ca"
CONTROL_PLANE = "control plane"
STORE = "store"
DISCOVERY = "discovery"
DATA_PLANE = "data plane"
POLICY = "policy"
GATEWAY = "gateway"

DEFAULT_CONTROLLER_ADDRESS = ("127.0.0.1", 4190)
CONNECT_RETRY = 5.0  # the controller may have just been started
HEALTH_RETRY = 3.0
PROXY_RETRY = 3.0  # a proxy catches up with a new snapshot within moments
NETWORK_TIMEOUT = 3.0
ZEROCONF_TIMEOUT = 3.0

CA_ROTATE_HINT = "run `mesh ca rotate` for a new issuer (leaves of the old one keep working until they expire)"
ROOT_HINT = (
    "the root is replaced by hand (docs/security.md, Rotation); `mesh ca init --force` starts a new trust anchor"
)


def _utcnow() -> datetime:
    return datetime.now(UTC)


class CheckContext:
    """The inputs of one `mesh check` run, and what its checks found along the way."""

    def __init__(
        self,
        home: MeshHome,
        *,
        pre: bool = False,
        proxy: bool = False,
        now: Callable[[], datetime] = _utcnow,
        cli_version: str = __version__,
        zeroconf_timeout: float = ZEROCONF_TIMEOUT,
    ) -> None:
        self.home = home
        self.pre = pre
        self.proxy = proxy
        self.now = now
        self.cli_version = cli_version
        self.zeroconf_timeout = zeroconf_timeout
        # Learned by earlier checks:
        self.trust_domain: str | None = None
        self.controller: Any = None  # mesh.discovery.ControllerAddress
        self.controller_record: dict[str, Any] = {}
        self.health: dict[str, Any] | None = None
        self.health_window: tuple[float, float] = (0.0, 0.0)
        self.status: dict[str, Any] | None = None
        self._config: tuple[int, dict[str, Any]] | None = None
        self._cli_creds: Any = None
        self.host = read_host_record(home)
        # What this host is to the mesh: where the controller runs, or one that joined it. Homes
        # from before host.json: a CA means the controller's host, a bare controller.json a join.
        if self.host is not None:
            self.role: str | None = self.host.role
        elif home.has_ca():
            self.role = "controller"
        elif home.controller_json.exists():
            self.role = "joined"
        else:
            self.role = None

    # -- controller access -----------------------------------------------------------

    @property
    def joined(self) -> bool:
        return self.role == "joined"

    def request(self, method: str, path: str, timeout: float = NETWORK_TIMEOUT) -> Any:
        from mesh.net import controller_request

        return controller_request(self.home, method, path, None, timeout)

    def applied_config(self) -> tuple[int, dict[str, Any]] | None:
        """``(config version, config)`` in force at the controller; None when it cannot say."""
        if self._config is None and self.health is not None:
            try:
                response = self.request("GET", "/v1/config")
            except MeshError:
                return None
            if response.status == 200 and isinstance(response.body, dict):
                self._config = (int(response.body.get("version") or 0), dict(response.body.get("config") or {}))
        return self._config

    def cli_creds(self) -> Any:
        """The CLI's identity: the operator's, else this host's (`mesh join`)."""
        if self._cli_creds is None:
            from mesh.net import cli_credentials

            self._cli_creds = cli_credentials(self.home)
        return self._cli_creds

    def discovery_interfaces(self) -> tuple[str, tuple[str, ...]]:
        """``(mode, interfaces)`` from the applied config; zeroconf on loopback by default. A host
        whose address is recorded (host.json) spans its interface: its sidecars do."""
        applied = self.applied_config()
        discovery = (applied[1].get("discovery") or {}) if applied else {}
        mode = str(discovery.get("mode") or "zeroconf")
        interface = self.host.zeroconf_interface if self.host is not None else None
        interfaces = tuple(discovery.get("interfaces") or ((interface,) if interface else ("127.0.0.1",)))
        return mode, interfaces
