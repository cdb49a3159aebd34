"""The small I/O of `mesh check`: imports, file modes, ports, HTTP and TLS probes.

Blocking and short: every network probe has a timeout of a few seconds. Each
function returns facts (or raises an OSError-like error the caller reports);
the verdicts are in ``_rules``.
"""

from __future__ import annotations

import errno
import http.client
import importlib
import os
import socket
import ssl
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

from mesh.debug.check._rules import FileMode, HomeFacts

DEPENDENCIES: tuple[str, ...] = ("trio", "h2", "httptools", "zeroconf", "cryptography", "rich", "typer")


def import_dependencies(names: Sequence[str] | None = None) -> tuple[dict[str, str], dict[str, str]]:
    """Import each module (default: ``DEPENDENCIES``): ``(versions of those that imported, why the others did not)``."""
    from importlib import metadata

    names = DEPENDENCIES if names is None else names
    versions: dict[str, str] = {}
    errors: dict[str, str] = {}
    for name in names:
        try:
            module = importlib.import_module(name)
        except Exception as exc:  # noqa: BLE001 - ImportError, or a broken native extension
            errors[name] = f"{type(exc).__name__}: {exc}"
            continue
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = str(getattr(module, "__version__", "?"))
    return versions, errors


def home_facts(path: Path) -> HomeFacts:
    try:
        st = path.stat()
    except FileNotFoundError:
        ancestor = path.parent
        while not ancestor.exists() and ancestor != ancestor.parent:
            ancestor = ancestor.parent
        writable = ancestor.is_dir() and os.access(ancestor, os.W_OK | os.X_OK)
        return HomeFacts(path, exists=False, ancestor=ancestor, ancestor_writable=writable)
    except NotADirectoryError:
        return HomeFacts(path, exists=False, ancestor=None, ancestor_writable=False)
    is_dir = path.is_dir()
    return HomeFacts(
        path,
        exists=True,
        is_dir=is_dir,
        writable=is_dir and os.access(path, os.W_OK | os.X_OK),
        mode=st.st_mode & 0o7777,
    )


def file_modes(paths: Sequence[Path]) -> list[FileMode]:
    """The permission bits of those of ``paths`` that exist."""
    found = []
    for path in paths:
        try:
            st = path.stat()
        except OSError:
            continue
        found.append(FileMode(path, st.st_mode & 0o777, is_dir=path.is_dir()))
    return found


def try_bind(host: str, port: int) -> OSError | None:
    """Could a listener bind ``host:port`` now? (SO_REUSEADDR, as trio's listeners set it.)"""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(1)
    except OSError as exc:
        return exc
    finally:
        sock.close()
    return None


def os_reason(exc: BaseException) -> str:
    if isinstance(exc, socket.timeout):
        return "timed out"
    if isinstance(exc, OSError) and exc.errno is not None:
        return {
            errno.ECONNREFUSED: "connection refused",
            errno.EHOSTUNREACH: "host unreachable",
            errno.ENETUNREACH: "network unreachable",
            errno.ECONNRESET: "connection reset",
        }.get(exc.errno, exc.strerror or str(exc))
    return str(exc) or type(exc).__name__


def tcp_connect(host: str, port: int, timeout: float) -> None:
    """Open and close one TCP connection; raises OSError."""
    with socket.create_connection((host, port), timeout=timeout):
        pass


class NoAdminPages(Exception):
    """The TLS handshake worked, but the peer does not serve the admin pages (ALPN mesh-admin)."""


class AdminPages:
    """A proxy's admin pages over mTLS (ALPN ``mesh-admin`` on its inbound listener), as an operator.

    ``certificate`` is the DER the proxy presented; ``get(path)`` reads one page on
    the same connection. Raises OSError (``ssl.SSLError`` included) when the
    connection or the handshake fails, NoAdminPages when the proxy does not
    serve its admin pages over mTLS.
    """

    def __init__(self, host: str, port: int, context: ssl.SSLContext, timeout: float) -> None:
        from mesh.net import ALPN_ADMIN

        self._conn = http.client.HTTPSConnection(host, port, context=context, timeout=timeout)
        try:
            self._conn.connect()
            tls = self._conn.sock
            assert isinstance(tls, ssl.SSLSocket)
            der = tls.getpeercert(binary_form=True)
            if not der:
                raise ssl.SSLError("the server presented no certificate")
            self.certificate: bytes = der
            if tls.selected_alpn_protocol() != ALPN_ADMIN:
                raise NoAdminPages("it does not serve its admin pages over mTLS (a mesh older than this CLI?)")
        except BaseException:
            self._conn.close()
            raise

    def get(self, path: str) -> tuple[int, bytes]:
        self._conn.request("GET", path, headers={"User-Agent": "mesh-check"})
        response = self._conn.getresponse()
        return response.status, response.read()

    def close(self) -> None:
        self._conn.close()


def certificate_times(der: bytes) -> tuple[str | None, datetime, datetime]:
    """``(SPIFFE id or None, not_before, not_after)`` of a DER certificate."""
    from cryptography import x509

    from mesh.identity import spiffe_id_of

    cert = x509.load_der_x509_certificate(der)
    try:
        identity: str | None = str(spiffe_id_of(cert))
    except Exception:  # noqa: BLE001 - reported as "no SPIFFE id"
        identity = None
    return identity, cert.not_valid_before_utc, cert.not_valid_after_utc


def pid_alive(pid: int) -> bool:
    from mesh.controller import daemon

    alive = daemon.alive

    return alive(pid)
