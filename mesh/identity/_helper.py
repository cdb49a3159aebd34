"""The identity helper: a short-lived mesh process that does for a sidecar what needs cryptography.

A sidecar never loads the cryptography package (~9 MB of memory each: docs/performance.md,
Memory). What it cannot do with the ``ssl`` module and ``_der.py`` alone, it asks of a child
process it starts (``mesh _identity-helper``, this same mesh: ``mesh.self_command``), one
request on the child's stdin, one JSON answer on its stdout:

- ``new-key``: a fresh P-256 key and a CSR for an identity (at start-up and each renewal);
- ``issue``: the same, signed by MESH_HOME's CA (a sidecar without a controller);
- ``check``: ``--cert/--key/--bundle`` contents, checked as ``load_credentials`` checks them.

The private key exists only in the child's memory, the pipe between the two, and the sidecar's
memory: never in a file, an argument or the environment. An error is ``{"error", "hint"}``, the
IdentityError the sidecar raises in its turn; warnings go to the stderr both share.
This module is imported by the sidecar for ``HELPER_COMMAND``: cryptography loads inside the
operations only.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any, BinaryIO

from mesh.errors import IdentityError

HELPER_COMMAND = "_identity-helper"
_NOT_UNDERSTOOD = "the identity helper got a request it does not understand"


def _new_key(request: dict[str, Any]) -> dict[str, Any]:
    from mesh.identity._certs import generate_key, key_to_pem, make_csr
    from mesh.identity._spiffe import SpiffeId

    key = generate_key()
    return {"key": key_to_pem(key).decode(), "csr": make_csr(key, SpiffeId.parse(request["identity"])).decode()}


def _issue(request: dict[str, Any]) -> dict[str, Any]:
    from mesh.home import MeshHome
    from mesh.identity._ca import CertificateAuthority
    from mesh.identity._spiffe import service_identity

    ca = CertificateAuthority.load(MeshHome(Path(request["home"])))
    creds = ca.issue(service_identity(ca.trust_domain, request["service"]), timedelta(seconds=request["ttl_seconds"]))
    return {
        "identity": str(creds.identity),
        "chain": creds.cert_chain_pem.decode(),
        "key": creds.key_pem.decode(),
        "bundle": creds.bundle_pem.decode(),
    }


def _check(request: dict[str, Any]) -> dict[str, Any]:
    from mesh.identity._credentials import check_credentials

    cert, key, bundle = (Path(request[name]) for name in ("cert_path", "key_path", "bundle_path"))
    chain_pem, key_pem, bundle_pem = (
        request[name].encode("latin-1") for name in ("chain_pem", "key_pem", "bundle_pem")
    )
    creds = check_credentials(cert, key, bundle, chain_pem, key_pem, bundle_pem)
    return {"identity": str(creds.identity)}


_OPERATIONS: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "new-key": _new_key,
    "issue": _issue,
    "check": _check,
}


def serve_helper(stdin: BinaryIO | None = None, stdout: BinaryIO | None = None) -> None:
    """The child's side: one request in, one answer out."""
    source = stdin or sys.stdin.buffer
    sink = stdout or sys.stdout.buffer
    try:
        request = json.loads(source.read())
        operation = _OPERATIONS[request["op"]]
    except (ValueError, KeyError, TypeError):
        answer: dict[str, Any] = {"error": _NOT_UNDERSTOOD}
    else:
        try:
            answer = operation(request)
        except IdentityError as exc:
            answer = {"error": exc.message, "hint": exc.hint}
        except (KeyError, TypeError):  # a field missing or of the wrong type
            answer = {"error": _NOT_UNDERSTOOD}
    sink.write(json.dumps(answer).encode())
    sink.flush()
