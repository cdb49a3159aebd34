"""The gateway's certificates for outside clients: chosen by SNI, reloaded when their files change.

Each ``--tls-cert``/``--tls-key`` pair gets an ``SSLContext`` of its own. The first pair's
context is the one every handshake starts with; its SNI callback moves the handshake
to the context of the pair whose DNS names cover the name the client asked for (an
exact name first, then a ``*.`` wildcard one label deep). A client that sends no SNI,
or a name no certificate has, gets the first pair, as nginx's default server does.

Reloading: ``reload()`` looks at the files (inode, size, modification time) and
re-reads a pair whose files changed. The new certificate replaces the old one only
once it checks out (readable, key and certificate belong together, within its dates);
until then the old one is served and the refusal is reported once per change, so a
renewal that writes the certificate before its key (a moment of mismatch) costs
nothing. Handshakes in progress and open connections keep the context they started
with; new handshakes get the new one. Nothing is dropped.
"""

from __future__ import annotations

import logging
import os
import ssl
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import NamedTuple

from mesh.errors import IdentityError
from mesh.identity import ServerCertificate, edge_server_context, iso_utc, read_server_certificate

log = logging.getLogger("mesh.proxy")

EXPIRY_WARNING = timedelta(days=30)  # as `mesh check` warns

Stamp = tuple[tuple[int, int, int, int] | None, ...]


class Reloaded(NamedTuple):
    """What a look at the files came to, for one pair: a new certificate served, or refused."""

    refused: bool
    message: str


def _utcnow() -> datetime:
    from datetime import UTC

    return datetime.now(UTC)


def file_stamp(*paths: Path) -> Stamp:
    """What changes when a file is replaced or rewritten (None: cannot be looked at now)."""
    stamps: list[tuple[int, int, int, int] | None] = []
    for path in paths:
        try:
            st = os.stat(path)  # follows symlinks: a swapped link target is a change too
        except OSError:
            stamps.append(None)
            continue
        stamps.append((st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns))
    return tuple(stamps)


@dataclass(frozen=True)
class _Served:
    """One pair as it is served now."""

    certificate: ServerCertificate
    context: ssl.SSLContext
    stamp: Stamp  # of the files this certificate was read from


def load_checked(cert_path: Path, key_path: Path, now: datetime) -> ServerCertificate:
    """A pair read, checked and within its dates, or IdentityError saying what is wrong."""
    certificate = read_server_certificate(cert_path, key_path)
    problem = certificate.validity_problem(now)
    if problem is not None:
        raise IdentityError(
            problem, hint="renew the certificate, or give the gateway another --tls-cert/--tls-key pair"
        )
    return certificate


class EdgeCertificates:
    """The certificates a gateway serves, by SNI; loaded (and checked) at construction."""

    def __init__(self, pairs: Sequence[tuple[Path, Path]], now: Callable[[], datetime] = _utcnow) -> None:
        if not pairs:
            raise ValueError("at least one certificate/key pair")
        self._now = now
        self._pairs = [(Path(c), Path(k)) for c, k in pairs]
        served = []
        for cert_path, key_path in self._pairs:
            stamp = file_stamp(cert_path, key_path)  # before reading: a change meanwhile is seen next time
            certificate = load_checked(cert_path, key_path, now())
            served.append(_Served(certificate, edge_server_context(certificate), stamp))
        self._served = served
        self._refused: dict[int, Stamp] = {}  # pair index → the stamp whose files were refused (reported once)
        self._exact: dict[str, int] = {}
        self._wildcard: dict[str, int] = {}
        self._index()

    # -- what handshakes use ----------------------------------------------------------

    @property
    def context(self) -> ssl.SSLContext:
        """The context every handshake starts with (the first pair's, with the SNI callback)."""
        return self._served[0].context

    @property
    def certificates(self) -> list[ServerCertificate]:
        return [s.certificate for s in self._served]

    def select(self, server_name: str | None) -> ServerCertificate:
        return self._served[self._choose(server_name)].certificate

    def _choose(self, server_name: str | None) -> int:
        if not server_name:
            return 0
        name = server_name.lower().rstrip(".")
        index = self._exact.get(name)
        if index is None:
            _, dot, parent = name.partition(".")
            index = self._wildcard.get(parent, 0) if dot else 0
        return index

    def _on_sni(self, ssl_object: ssl.SSLObject, server_name: str | None, context: ssl.SSLContext) -> None:
        chosen = self._served[self._choose(server_name)].context
        if chosen is not context:
            ssl_object.context = chosen
        return None  # go on with the handshake (an alert number would end it)

    def _index(self) -> None:
        exact: dict[str, int] = {}
        wildcard: dict[str, int] = {}
        for index, served in enumerate(self._served):
            for name in served.certificate.names:
                if name.startswith("*."):
                    wildcard.setdefault(name[2:], index)  # the first pair that has a name serves it
                else:
                    exact.setdefault(name, index)
        self._exact, self._wildcard = exact, wildcard
        self._served[0].context.sni_callback = self._on_sni

    # -- reloading --------------------------------------------------------------------

    def reload(self) -> list[Reloaded]:
        """Re-read the pairs whose files changed; what was swapped, or refused (to log)."""
        lines: list[Reloaded] = []
        changed = False
        for index, (cert_path, key_path) in enumerate(self._pairs):
            stamp = file_stamp(cert_path, key_path)
            current = self._served[index]
            if stamp == current.stamp or stamp == self._refused.get(index):
                continue
            try:
                certificate = load_checked(cert_path, key_path, self._now())
                context = edge_server_context(certificate)
            except IdentityError as exc:
                self._refused[index] = stamp
                lines.append(
                    Reloaded(
                        True, f"kept serving {current.certificate.label}: the new files do not check out: {exc.message}"
                    )
                )
                continue
            self._refused.pop(index, None)
            if certificate.fingerprint == current.certificate.fingerprint:
                self._served[index] = _Served(current.certificate, current.context, stamp)  # touched, not changed
                continue
            self._served[index] = _Served(certificate, context, stamp)
            changed = True
            lines.append(
                Reloaded(
                    False,
                    f"now serving a new certificate for {certificate.label} from {cert_path} "
                    f"(until {iso_utc(certificate.not_after)}; was until {iso_utc(current.certificate.not_after)})",
                )
            )
        if changed:
            self._index()
        return lines

    def expiring(self, within: timedelta = EXPIRY_WARNING) -> list[ServerCertificate]:
        """Certificates served now that expire within ``within``."""
        now = self._now()
        return [s.certificate for s in self._served if s.certificate.not_after - now < within]
