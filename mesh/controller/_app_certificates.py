"""The controller's API: certificates (``/v1/certificates``, ``POST /v1/operator-grants``)."""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import math
import secrets
import time
from datetime import timedelta
from typing import Any

from mesh.controller._api import ApiRequest
from mesh.controller._app_base import HandlerBase, _object, _string, log
from mesh.errors import IdentityError, StoreError
from mesh.identity import CONTROLLER_SERVICE
from mesh.net import ApiError, ApiResponse

MAX_LEAF_TTL = timedelta(hours=24)
# Host and operator identities belong to people's CLIs: long-lived, renewed by joining again.
CLI_CERT_TTL = timedelta(days=365)
GRANT_TTL = timedelta(minutes=15)
MAX_GRANT_TTL = timedelta(hours=24)


class CertificateHandlers(HandlerBase):
    # -- certificates -------------------------------------------------------------

    async def sign(self, request: ApiRequest) -> ApiResponse:
        from mesh.identity import service_identity

        body = _object(request.json())
        kind = body.get("kind") or "svc"
        if kind == "host":
            return await self._sign_host(request, body)
        if kind == "operator":
            return await self._sign_operator(request, body)
        if kind != "svc":
            raise ApiError(400, f"unknown identity kind {kind!r}: expected svc, host or operator")
        service = _string(body, "service")
        csr = _string(body, "csr").encode()
        ttl = _leaf_ttl(body.get("ttl_seconds"))
        if service == CONTROLLER_SERVICE:
            raise ApiError(403, f"{service!r} is reserved for the controller")
        if request.peer is not None:
            self._require_service(request, service)  # renewal: only for yourself
        else:
            self._check_join_token(body, service)
        try:
            identity = service_identity(self.state.trust_domain, service)
        except IdentityError as exc:
            raise ApiError(400, exc.message, exc.hint) from None
        return await self._signed(csr, identity, ttl, "renewal" if request.peer else "join token")

    def _check_join_token(self, body: dict[str, Any], what: str) -> None:
        token = str(body.get("token") or "").encode()
        if not token or not hmac.compare_digest(token, self._join_token):
            log.warning("refused a certificate for %s: %s join token", what, "wrong" if token else "no")
            raise ApiError(
                403,
                "the join token is missing or wrong",
                "use the token that `mesh up` printed (MESH_HOME/join-token on the controller's host)",
            )

    async def _signed(self, csr: bytes, identity: Any, ttl: timedelta, how: str) -> ApiResponse:
        try:
            chain = self.ca.sign_csr(csr, identity, ttl)
        except IdentityError as exc:
            raise ApiError(400, exc.message, exc.hint) from None
        log.info("signed a certificate for %s (%s)", identity, how)
        await self._record_certificate(chain, str(identity))
        return ApiResponse(200, {"certificate": chain.decode(), "bundle": self.ca.bundle_pem.decode()})

    async def _sign_host(self, request: ApiRequest, body: dict[str, Any]) -> ApiResponse:
        """`mesh join`: a host identity, which reads the mesh (status, stats, routes, tap) and nothing more."""
        from mesh.identity import host_identity

        name = _string(body, "name")
        csr = _string(body, "csr").encode()
        try:
            identity = host_identity(self.state.trust_domain, name)
        except IdentityError as exc:
            raise ApiError(400, exc.message, exc.hint) from None
        if request.peer is not None:
            peer = self._require_peer(request)
            if peer != identity:
                log.warning("refused a certificate for %s from %s", identity, peer)
                raise ApiError(403, f"{peer} may not act for host {name!r}")
        else:
            self._check_join_token(body, str(identity))
        address = _host_address(body.get("address"), request.remote_ip)
        response = await self._signed(csr, identity, CLI_CERT_TTL, "joined" if request.peer is None else "renewal")
        record = {
            "address": address,
            "name": name,
            "identity": str(identity),
            "operator": bool(self.state.joined_hosts.get(address, {}).get("operator")),
            "version": str(body.get("mesh_version") or ""),
            "joined_at": round(time.time(), 3),
            "seen_from": request.remote_ip,
        }
        try:
            await self.durable.record_host(record)
        except StoreError as exc:  # joined all the same; `mesh status --hosts` lists it once its proxies call
            log.warning("host %s joined, but is not recorded in %s: %s", name, self.durable.location, exc.message)
        log.info("host %s joined from %s (its address: %s)", name, request.remote_ip or "?", address)
        return response

    async def _sign_operator(self, request: ApiRequest, body: dict[str, Any]) -> ApiResponse:
        """An operator identity for another host: only with a grant an operator made (or as a
        renewal by the operator itself)."""
        from mesh.identity import operator_identity

        csr = _string(body, "csr").encode()
        peer = request.peer
        if peer is not None:
            peer = self._require_operator(request)  # renewal: only for yourself
            identity = peer
            how = "renewal"
        else:
            self._check_join_token(body, "an operator")
            grant = _string(body, "grant")
            try:
                record = await self.durable.redeem_grant(_grant_digest(grant))
            except StoreError as exc:
                raise ApiError(503, f"cannot redeem the operator grant: {exc.message}", exc.hint) from None
            if record is None:
                log.warning(
                    "refused an operator certificate from %s: unknown, used or expired grant", request.remote_ip
                )
                raise ApiError(
                    403,
                    "the operator grant is unknown, already used or expired",
                    "ask an operator for a new one: `mesh operator grant NAME` on the controller's host",
                )
            identity = operator_identity(self.state.trust_domain, str(record["name"]))
            how = f"granted by {record.get('by')}"
        response = await self._signed(csr, identity, CLI_CERT_TTL, how)
        address = _host_address(body.get("address"), request.remote_ip)
        joined = self.state.joined_hosts.get(address)
        if joined is not None and not joined.get("operator"):
            try:
                await self.durable.record_host({**joined, "operator": True, "operator_identity": str(identity)})
            except StoreError as exc:
                log.debug("operator of %s not recorded: %s", address, exc.message)
        return response

    async def grant_operator(self, request: ApiRequest) -> ApiResponse:
        """`mesh operator grant NAME`: a secret, good once within its time, that `mesh join
        --operator` trades for an operator identity named NAME."""
        from mesh.identity import validate_name

        operator = self._require_operator(request)
        body = _object(request.json())
        name = _string(body, "name")
        try:
            validate_name(name, "operator")
        except IdentityError as exc:
            raise ApiError(400, exc.message, exc.hint) from None
        asked = body.get("ttl_seconds", GRANT_TTL.total_seconds())
        longest = MAX_GRANT_TTL.total_seconds()
        if isinstance(asked, bool) or not isinstance(asked, (int, float)) or not 60 <= asked <= longest:
            raise ApiError(400, "ttl_seconds must be a number of seconds from 60 to 86400 (24 h)")
        grant = secrets.token_urlsafe(24)
        expires_at = time.time() + float(asked)
        self._refuse_if_read_only("grant an operator identity")
        try:
            await self.durable.put_grant(
                _grant_digest(grant), {"name": name, "by": str(operator), "expires_at": expires_at}, float(asked)
            )
        except StoreError as exc:
            raise self._read_only_error("grant an operator identity", exc.message) from None
        log.info("%s granted an operator identity %r, good once until %s", operator, name, time.ctime(expires_at))
        return ApiResponse(200, {"grant": grant, "name": name, "expires_at": expires_at})

    async def _record_certificate(self, chain: bytes, identity: str) -> None:
        """Kept in the store until it expires; a store that cannot write must not stop renewals."""
        from mesh.identity import load_certificates

        leaf = load_certificates(chain)[0]
        try:
            await self.durable.record_certificate(
                format(leaf.serial_number, "x"), identity, leaf.not_valid_after_utc.timestamp(), self.address
            )
        except StoreError as exc:
            log.debug("signed, but not recorded in the store: %s", exc.message)

    async def certificates(self, request: ApiRequest) -> ApiResponse:
        self._require_operator(request)
        try:
            issued = await self.durable.certificates()
        except StoreError as exc:
            raise ApiError(503, f"cannot read the issued certificates: {exc.message}", exc.hint) from None
        now = time.time()
        return ApiResponse(200, {"certificates": [c for c in issued if float(c.get("not_after", 0)) > now]})


def _leaf_ttl(asked: Any) -> timedelta:
    """The lifetime of a leaf to sign: what the caller asked for, within [MIN_LEAF_TTL, 24 h]
    (a shorter one would be renewed too often; the proxy refuses to ask for it anyway)."""
    from mesh.identity import MIN_LEAF_TTL

    if asked is None:
        return MAX_LEAF_TTL
    if isinstance(asked, bool) or not isinstance(asked, (int, float)) or not math.isfinite(asked):
        raise ApiError(400, f"ttl_seconds must be a number of seconds, not {asked!r}")
    return min(max(timedelta(seconds=asked), MIN_LEAF_TTL), MAX_LEAF_TTL)


def _grant_digest(grant: str) -> str:
    """Grants are kept by their hash: the store (an etcd others may read) never holds the secret."""
    return hashlib.sha256(grant.encode()).hexdigest()


def _host_address(claimed: Any, remote_ip: str | None) -> str:
    """The address a joining host says it has (`mesh join` records what it dialled from, or
    --advertise), else the one its connection came from."""
    if isinstance(claimed, str) and claimed:
        try:
            return str(ipaddress.ip_address(claimed))
        except ValueError:
            raise ApiError(400, f"invalid host address {claimed!r}: expected an IP address") from None
    return remote_ip or "?"
