"""The one error root of mesh and its subtree per domain.

Every error a user can see says what went wrong (``message``) and, where we
know it, what to do about it (``hint``). The CLI prints both on one line each
and exits 1; ``--debug`` shows the traceback as well.
"""

from __future__ import annotations


class MeshError(Exception):
    """Root of every error mesh raises on purpose."""

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message


class HomeError(MeshError):
    """MESH_HOME is missing, unreadable or holds something unexpected."""


class ConfigError(MeshError):
    """A mesh.toml (or an applied config) is invalid."""


class IdentityError(MeshError):
    """CA, certificates, keys and peer identities."""


class ProxyError(MeshError):
    """The data plane could not start or keep serving."""


class DiscoveryError(MeshError):
    """Service discovery (static file, zeroconf, controller)."""


class ControllerError(MeshError):
    """The control plane or the CLI's access to it."""


class StoreError(ControllerError):
    """The controller's store (embedded or etcd) cannot be opened, read or written."""


class ServiceError(MeshError):
    """Installing or removing the systemd units of `mesh install-service`."""


def first_leaf(error: BaseException, prefer: tuple[type[BaseException], ...] = (Exception,)) -> BaseException:
    """The error inside trio's exception groups: the first leaf of a ``prefer`` type, else the
    first leaf. Handlers catch what they expect from the leaf, not from the group around it."""
    if not isinstance(error, BaseExceptionGroup):
        return error
    matched = error.subgroup(lambda e: isinstance(e, prefer)) or error
    while isinstance(matched, BaseExceptionGroup):
        matched = matched.exceptions[0]
    return matched
