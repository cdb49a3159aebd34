"""Where this host's controllers are, as MESH_HOME records them (``controller.json``, written by
`mesh up`, `mesh controller` and `mesh join`): the address and identity to dial, and the bundle
that proves it. Zeroconf finds controllers too (``find_controller``); this is the recorded way."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING

from mesh.discovery._endpoint import parse_address
from mesh.errors import ControllerError, MeshError

if TYPE_CHECKING:
    from mesh.home import MeshHome


@dataclass(frozen=True)
class ControllerAddress:
    host: str
    port: int
    identity: str
    bundle_pem: bytes

    @property
    def address(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    def sibling(self, address: str) -> ControllerAddress:
        """Another controller of the same mesh: same identity and bundle, another address."""
        host, port = parse_address(address)
        return ControllerAddress(host, port, self.identity, self.bundle_pem)


def controller_from_home(home: MeshHome, override: str | None = None) -> ControllerAddress | None:
    """The controller recorded in MESH_HOME/controller.json (``--controller HOST:PORT`` overrides the address)."""
    found = controllers_from_home(home, override)
    return found[0] if found else None


def controllers_from_home(home: MeshHome, override: str | None = None) -> list[ControllerAddress]:
    """Every controller controller.json knows, this host's first (``--controller`` replaces the first)."""
    path = home.controller_json
    if not path.exists():
        if override is None:
            return []
        raise ControllerError(
            f"--controller {override} given, but {path} does not exist",
            hint="run `mesh up` on this host, or `mesh join HOST:PORT --token T --ca-fingerprint F`",
        )
    try:
        record = json.loads(path.read_text())
        host, port = parse_address(override or record["address"])
        bundle_path = home.root / record.get("bundle", "ca/bundle.pem")
        bundle = bundle_path.read_bytes()
        identity = record.get("identity") or f"spiffe://{record['trust_domain']}/svc/mesh-controller"
        first = ControllerAddress(host, port, identity, bundle)
        others = [first.sibling(str(a)) for a in record.get("controllers") or [] if str(a) != first.address]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ControllerError(f"cannot read {path}: {exc}", hint="run `mesh up` again to rewrite it") from None
    except MeshError:
        others = []  # a bad entry in the list: the recorded controller still works
    return [first, *others]
