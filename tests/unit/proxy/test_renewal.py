"""The proxy's one renewal loop (mesh.proxy._control.keep_renewed) on a mock clock."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import trio

from mesh.errors import ControllerError
from mesh.home import MeshHome
from mesh.identity import (
    CLOCK_SKEW,
    CertificateAuthority,
    IssuedCredentials,
    cert_to_pem,
    generate_key,
    key_to_pem,
    service_identity,
)
from mesh.identity._certs import make_leaf
from mesh.proxy._control import keep_renewed

BASE = datetime.now(UTC).replace(microsecond=0)  # within the issuer's life


def now() -> datetime:
    return BASE + timedelta(seconds=trio.current_time())


class Holder:
    """What keep_renewed needs of a Proxy: its identity and set_credentials."""

    class Identity:
        def __init__(self, creds: Any, received_at: datetime) -> None:
            self.creds = creds
            self.received_at = received_at

    def __init__(self, creds: Any) -> None:
        self.identity = self.Identity(creds, now())
        self.renewed_at: list[float] = []

    def set_credentials(self, creds: Any, received_at: datetime | None = None) -> None:
        self.identity = self.Identity(creds, received_at or now())
        self.renewed_at.append(trio.current_time())


@pytest.fixture
def ca(tmp_path: Any) -> CertificateAuthority:
    return CertificateAuthority.init(MeshHome(tmp_path / "home"))


def signer(ca: CertificateAuthority, ttl: timedelta, cap: datetime | None = None) -> Any:
    """Leaves as the controller signs them, on the mock clock: backdated by CLOCK_SKEW, ``ttl``
    from now, never beyond ``cap`` (an issuer near its end)."""
    identity = service_identity(ca.trust_domain, "web")

    def sign() -> IssuedCredentials:
        key = generate_key()
        start = now() - CLOCK_SKEW
        end = now() + ttl if cap is None else min(now() + ttl, max(cap, start + timedelta(seconds=1)))
        leaf = make_leaf(key.public_key(), identity, ca.issuer_cert, ca._issuer_key, ttl=end - start, not_before=start)
        chain = cert_to_pem(leaf) + cert_to_pem(ca.issuer_cert)
        return IssuedCredentials(identity, chain, key_to_pem(key), ca.bundle_pem, leaf.not_valid_after_utc)

    return sign


async def run_for(holder: Holder, obtain: Any, seconds: float) -> None:
    with trio.move_on_after(seconds):
        await keep_renewed(holder, obtain, now=now)  # type: ignore[arg-type]


async def test_renews_at_70_percent_of_each_granted_life(ca: CertificateAuthority, autojump_clock: Any) -> None:
    sign = signer(ca, timedelta(seconds=60))
    holder = Holder(sign())

    async def obtain(current: Any) -> Any:
        await trio.sleep(1)  # the round trip to the controller (whole seconds: notAfter has no fraction)
        return sign()

    await run_for(holder, obtain, 600)
    # 42 s after each certificate arrived (+ 1 s to get it): never from the backdated notBefore.
    assert holder.renewed_at == pytest.approx([43 * n for n in range(1, 14)])


async def test_a_leaf_cut_short_never_turns_into_a_signing_loop(ca: CertificateAuthority, autojump_clock: Any) -> None:
    """The issuer ends at t=100 s: each leaf is shorter than the last, then already over.
    Renewals stay at least 6 s (10 % of a 60 s life) apart."""
    sign = signer(ca, timedelta(seconds=60), cap=BASE + timedelta(seconds=100))
    holder = Holder(sign())
    signed = 0

    async def obtain(current: Any) -> Any:
        nonlocal signed
        signed += 1
        return sign()

    await run_for(holder, obtain, 400)
    gaps = [b - a for a, b in itertools.pairwise(holder.renewed_at)]
    assert holder.renewed_at[0] == pytest.approx(42)
    assert min(gaps) >= 6 - 1e-6
    assert signed <= 2 + (400 - 42) / 6


async def test_failures_are_retried_with_backoff_and_the_old_certificate_kept(
    ca: CertificateAuthority, autojump_clock: Any
) -> None:
    sign = signer(ca, timedelta(seconds=60))
    first = sign()
    holder = Holder(first)
    attempts: list[float] = []

    async def obtain(current: Any) -> Any:
        attempts.append(trio.current_time())
        if len(attempts) <= 5:
            raise ControllerError("the controller is away")
        return sign()

    await run_for(holder, obtain, 60)
    assert attempts[0] == pytest.approx(42)
    assert [round(b - a, 1) for a, b in itertools.pairwise(attempts)] == [0.2, 0.4, 0.8, 1.6, 3.2]
    assert len(holder.renewed_at) == 1 and holder.identity.creds is not first
