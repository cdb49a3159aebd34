"""Revoked certificates, as a holder of mesh credentials knows them.

The controller keeps revocations in its store and lists the revoked serials in
every snapshot; a proxy puts them in one ``RevocationList`` shared by all its
TLS contexts. ``peer_identity`` looks the peer's serial up there after each
handshake: one set lookup, nothing per request (docs/security.md, Revocation).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from mesh.errors import IdentityError


class CertificateRevoked(IdentityError):
    """The peer presented a certificate that an operator revoked (`mesh ca revoke`)."""


class RevocationList:
    """The serials in force now; replaced whole when a snapshot brings another list."""

    __slots__ = ("serials",)

    def __init__(self, serials: Iterable[int] = ()) -> None:
        self.serials: frozenset[int] = frozenset(serials)

    def replace(self, serials: Iterable[int]) -> frozenset[int]:
        """Put ``serials`` in force; returns those that were not revoked before."""
        fresh = frozenset(serials)
        added = fresh - self.serials
        self.serials = fresh
        return added

    def __contains__(self, serial: object) -> bool:
        return serial in self.serials

    def __len__(self) -> int:
        return len(self.serials)


def serial_text(serial: int) -> str:
    """How mesh writes a serial everywhere (`mesh ca issued`, `inspect`, the store): lower-case hex."""
    return format(serial, "x")


def parse_serial(text: str) -> int:
    """A serial as an operator may paste it: ``1f3a…``, ``0x1F3A…`` or OpenSSL's ``1F:3A:…``."""
    cleaned = text.strip().lower().replace(":", "")
    if cleaned.startswith("0x"):
        cleaned = cleaned[2:]
    try:
        value = int(cleaned, 16)
    except ValueError:
        raise IdentityError(
            f"invalid certificate serial {text!r}: expected hexadecimal digits",
            hint="copy it from `mesh ca issued` or `mesh ca inspect` (e.g. 3f9c0e…)",
        ) from None
    if value <= 0 or value.bit_length() > 160:  # RFC 5280 4.1.2.2: positive, at most 20 octets
        raise IdentityError(
            f"invalid certificate serial {text!r}: a serial is a positive number of at most 20 bytes",
            hint="copy it from `mesh ca issued` or `mesh ca inspect`",
        )
    return value


def serials_from(values: Any) -> set[int]:
    """The serials a snapshot lists (hex strings); anything else in the list is ignored."""
    found: set[int] = set()
    for value in values or ():
        if isinstance(value, str):
            try:
                found.add(parse_serial(value))
            except IdentityError:
                continue
    return found
