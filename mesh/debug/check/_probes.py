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


def http_get(host: str, port: int, path: str, timeout: float) -> tuple[int, bytes]:
    """One plain HTTP/1.1 GET (no proxy from the environment): ``(status, body)``."""
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request("GET", path, headers={"User-Agent": "mesh-check"})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def tls_peer_certificate(host: str, port: int, context: ssl.SSLContext, timeout: float) -> bytes:
    """Handshake with ``context`` and return the DER of the certificate the server presents.

    After the handshake the connection is read from briefly (TLS 1.3 session
    tickets) and closed with close_notify, so the server sees an orderly end
    of a connection that carried no request.
    """
    with socket.create_connection((host, port), timeout=timeout) as raw:
        with context.wrap_socket(raw, server_hostname=None) as tls:
            der = tls.getpeercert(binary_form=True)
            if not der:
                raise ssl.SSLError("the server presented no certificate")
            tls.settimeout(0.05)
            try:
                tls.recv(1)  # takes in the session tickets the server sends after the handshake
            except (TimeoutError, ssl.SSLError, OSError):
                pass
            try:
                tls.setblocking(False)
                tls.unwrap()  # sends close_notify; the answer is not waited for
            except (ssl.SSLError, OSError, ValueError):
                pass
            return der


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
    from mesh.controller._daemon import alive

    return alive(pid)
