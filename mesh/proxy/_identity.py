"""The sidecar's own identity: its credentials, the TLS contexts made from them, and the client
contexts it dials peers with."""

from __future__ import annotations

import json
import ssl
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import trio

from mesh.errors import IdentityError
from mesh.net import ALPN_ADMIN, ALPN_H2, ALPN_HTTP1, ALPN_TCP
from mesh.proxy._exchange import (
    ConnectFailure,
    Reason,
)
from mesh.proxy._listeners import reason_label

if TYPE_CHECKING:
    from mesh.proxy._server import Proxy


class Identity:
    """The proxy's current credentials and the TLS contexts built from them."""

    def __init__(self, creds: Any, received_at: datetime | None = None, revoked: Any = None) -> None:
        from mesh.identity import RevocationList, client_context, server_context

        self.creds = creds
        self.serial: int = creds.leaf_facts.serial_number
        # When the certificate arrived, by our clock: renewal counts its lifetime from here.
        self.received_at = received_at or datetime.now(UTC)
        # One list for every context, kept across renewals: the controller's snapshots replace it.
        self.revoked = revoked if revoked is not None else RevocationList()
        self.server = server_context(creds, alpn=(ALPN_HTTP1, ALPN_TCP, ALPN_H2, ALPN_ADMIN), revoked=self.revoked)
        self._clients = {
            alpn: client_context(creds, alpn=(alpn,), revoked=self.revoked) for alpn in (ALPN_HTTP1, ALPN_TCP, ALPN_H2)
        }

    def client(self, alpn: str) -> ssl.SSLContext:
        return self._clients[alpn]

    @property
    def trust_domain(self) -> str:
        return str(self.creds.identity.trust_domain)


async def ask_identity_helper(request: dict[str, Any]) -> dict[str, Any]:
    """One request to a fresh identity helper process (mesh/identity/_helper.py): what needs the
    cryptography package (keys, CSRs, the local CA) runs there, so this process never loads it.
    Its stderr (warnings) is ours; the answer, which may hold a private key, comes over a pipe."""
    from mesh.identity import HELPER_COMMAND
    from mesh.self_command import child_env, mesh_command

    argv = [*mesh_command(), HELPER_COMMAND]
    try:
        result = await trio.run_process(
            argv, stdin=json.dumps(request).encode(), capture_stdout=True, check=False, env=child_env()
        )
    except OSError as exc:
        raise IdentityError(f"cannot start the identity helper process {argv[0]}: {exc.strerror or exc}") from None
    try:
        answer = json.loads(result.stdout)
    except ValueError:
        answer = None
    if result.returncode != 0 or not isinstance(answer, dict):
        raise IdentityError(
            f"the identity helper process ({' '.join(argv)}) failed with exit status {result.returncode}",
            hint="its error is printed above; `mesh check` looks at this installation",
        )
    if "error" in answer:
        raise IdentityError(str(answer["error"]), hint=answer.get("hint"))
    return answer


class PeerTLS:
    """The proxy's client contexts toward peers (ContextProvider). They are read from the proxy's
    identity at each connect, so a renewed certificate is used at once; refusals are counted."""

    def __init__(self, proxy: Proxy) -> None:
        self._proxy = proxy

    def __call__(self, alpn: str) -> ssl.SSLContext:
        identity = self._proxy.identity
        if identity.serial in identity.revoked:
            # Every peer would refuse it after the handshake; say why here, before a connection is made.
            raise ConnectFailure(
                Reason.TLS_FAILED,
                f"this proxy's certificate ({identity.creds.identity}, {identity.serial:x}) was revoked by an "
                "operator: peers refuse it; restart the service for a new certificate",
                ours=True,
            )
        return identity.client(alpn)

    def refused(self, reason: str) -> None:
        self._proxy.metrics.tls_failures.labels("outbound", reason_label(reason)).inc()

    def connected(self, serial: int, stream: trio.abc.Stream) -> None:
        """A peer's handshake succeeded: its connection is cut if its certificate is revoked later."""
        self._proxy.peers.track(serial, getattr(stream, "socket", None))
