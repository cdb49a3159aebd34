"""`mesh ca revoke`: revoked certificates, kept in the store and refused everywhere.

    POST /v1/revocations   revoke a certificate by serial, or every live one of an identity (operators)
    GET  /v1/revocations   the revocations in force (readers)

A revocation lives in the store (``revocations/<serial>``, ``_durable.py``) until
its certificate has expired, so every controller sharing the store knows it and
a restarted one still does. The controller refuses every request made with a
revoked certificate (a renewal included: a stolen key cannot renew itself), and
lists the revoked serials in every snapshot, so each proxy refuses peers that
present one (``mesh.identity.verified_peer``) and cuts their open connections.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Any

from mesh.controller._api import ApiRequest
from mesh.errors import IdentityError, StoreError
from mesh.net import ApiError, ApiResponse

log = logging.getLogger("mesh.controller")

MAX_REASON = 200
NEW_CERTIFICATE_HINT = (
    "the holder needs a new certificate: restart its service (a new proxy asks for one with the join token; "
    "rotate the token too if it may have leaked)"
)


class Revocations:
    """The revocation endpoints and the check every authenticated request passes."""

    def __init__(self, app: Any) -> None:
        self.app = app  # ControllerApp: its state, store and who-is-asking checks

    def refuse_revoked(self, request: ApiRequest) -> None:
        """ApiError 403 when the request's client certificate is revoked (one dict lookup)."""
        revoked = self.app.state.revoked
        if request.peer_serial is None or not revoked:
            return
        from mesh.identity import serial_text

        serial = serial_text(request.peer_serial)
        record = revoked.get(serial)
        if record is None:
            return
        log.warning(
            "refused %s %s from %s: its certificate %s is revoked", request.method, request.path, request.peer, serial
        )
        raise ApiError(
            403, f"the certificate {serial} of {request.peer} was revoked ({describe(record)})", NEW_CERTIFICATE_HINT
        )

    async def until_revoked(self, request: ApiRequest, stream: AsyncIterator[Any]) -> AsyncIterator[Any]:
        """A proxy's watch, ended after the snapshot that revokes its certificate (which it gets, to
        say why): its registration is then withdrawn as a departed proxy's, so callers stop
        trying it within a second or two, and it cannot watch again (``refuse_revoked``)."""
        serial = None if request.peer_serial is None else format(request.peer_serial, "x")
        async with aclosing(stream):  # type: ignore[type-var]
            async for item in stream:
                yield item
                if serial in self.app.state.revoked:
                    log.warning("ended the watch of %s: its certificate %s is revoked", request.peer, serial)
                    return

    async def revoke(self, request: ApiRequest) -> ApiResponse:
        app = self.app
        operator = app._require_operator(request)
        body = request.json()
        if not isinstance(body, dict):
            raise ApiError(400, "expected a JSON object")
        reason = body.get("reason") or ""
        if not isinstance(reason, str) or len(reason) > MAX_REASON:
            raise ApiError(400, f"reason must be a text of at most {MAX_REASON} characters")
        serial, identity = body.get("serial"), body.get("identity")
        if bool(serial) == bool(identity) or not isinstance(serial or identity, str):
            raise ApiError(400, 'expected {"serial": HEX} or {"identity": "spiffe://…" or a service name}')
        try:
            found = await (self._by_serial(serial) if serial else self._by_identity(str(identity)))
        except StoreError as exc:
            raise ApiError(503, f"cannot read the issued certificates: {exc.message}", exc.hint) from None
        if request.peer_serial is not None and any(_serial_int(c) == request.peer_serial for c in found):
            raise ApiError(
                409,
                f"refused to revoke {request.peer}'s own certificate, which this request is made with",
                "revoke it from another operator's host, or give this host a new operator identity first",
            )
        already = [c for c in found if c["serial"] in app.state.revoked]
        now = time.time()
        records = [
            {
                "serial": c["serial"],
                "identity": c["identity"],
                "not_after": c["not_after"],
                "reason": reason,
                "revoked_by": str(operator),
                "revoked_at": round(now, 3),
            }
            for c in found
            if c["serial"] not in app.state.revoked
        ]
        if records:
            app._refuse_if_read_only("revoke a certificate")
            try:
                await app.durable.revoke_certificates(records)
            except StoreError as exc:
                raise app._read_only_error("revoke a certificate", exc.message) from None
            for record in records:
                log.warning(
                    "%s revoked certificate %s of %s%s",
                    operator,
                    record["serial"],
                    record["identity"],
                    f": {reason}" if reason else "",
                )
            app.changed()
        return ApiResponse(
            200, {"revoked": records, "already_revoked": [app.state.revoked[c["serial"]] for c in already]}
        )

    async def _by_serial(self, text: str) -> list[dict[str, Any]]:
        from mesh.identity import parse_serial, serial_text

        try:
            serial = serial_text(parse_serial(text))
        except IdentityError as exc:
            raise ApiError(400, exc.message, exc.hint) from None
        record = await self.app.durable.certificate(serial)
        if record is None or float(record.get("not_after", 0)) <= time.time():
            raise ApiError(
                404,
                f"no certificate with serial {serial} in force: the controllers of this mesh did not sign it, "
                "or it has expired",
                "`mesh ca issued` lists the certificates in force (one made by `mesh ca issue` is signed "
                "locally, not recorded, and cannot be revoked: replace the CA's issuer with `mesh ca rotate`)",
            )
        return [record]

    async def _by_identity(self, text: str) -> list[dict[str, Any]]:
        from mesh.identity import SpiffeId, service_identity

        trust_domain = self.app.state.trust_domain
        try:
            identity = SpiffeId.parse(text) if text.startswith("spiffe://") else service_identity(trust_domain, text)
        except IdentityError as exc:
            raise ApiError(400, exc.message, exc.hint) from None
        if identity.trust_domain != trust_domain:
            raise ApiError(400, f"{identity} is not of this mesh's trust domain {trust_domain}")
        now = time.time()
        found = [
            c
            for c in await self.app.durable.certificates()
            if c.get("identity") == str(identity) and float(c.get("not_after", 0)) > now
        ]
        if not found:
            raise ApiError(
                404,
                f"no certificate of {identity} in force was signed by the controllers of this mesh",
                "`mesh ca issued` lists the certificates in force and their identities",
            )
        return found

    async def list(self, request: ApiRequest) -> ApiResponse:
        self.app._require_reader(request)
        now = time.time()
        records = [r for r in self.app.state.revoked.values() if float(r.get("not_after", 0)) > now]
        return ApiResponse(200, {"revocations": sorted(records, key=lambda r: r.get("revoked_at", 0))})


def describe(record: dict[str, Any]) -> str:
    """``by spiffe://…/operator/alice at 2026-12-06 12:00:00 UTC: key leaked``"""
    when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(float(record.get("revoked_at", 0))))
    reason = record.get("reason")
    return f"by {record.get('revoked_by', '?')} at {when}" + (f": {reason}" if reason else "")


def _serial_int(certificate: dict[str, Any]) -> int:
    try:
        return int(str(certificate.get("serial")), 16)
    except ValueError:
        return 0
