"""What a running sidecar reads from a certificate, without the cryptography package.

A sidecar looks at certificates for a few facts only: the peer's SPIFFE id and
serial after each handshake (OpenSSL has already verified the chain), and its own
certificate's dates, serial and SAN, its bundle's roots, a gateway's DNS names. This
module reads those fields from the DER itself: cryptography costs a sidecar ~9 MB of
memory (docs/performance.md, Memory). It reads, it never verifies: signatures and
chains are OpenSSL's business (in the handshake) and cryptography's (`mesh ca`,
`mesh check`). Anything malformed is a ``ValueError``; the tests read the same
certificates with cryptography and compare every field.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from dataclasses import dataclass
from datetime import UTC, datetime

from mesh.errors import IdentityError

# Tags (universal class unless noted).
_BOOLEAN, _INTEGER, _BIT_STRING, _OCTET_STRING, _OID = 0x01, 0x02, 0x03, 0x04, 0x06
_UTC_TIME, _GENERALIZED_TIME, _SEQUENCE, _SET = 0x17, 0x18, 0x30, 0x31
_VERSION, _ISSUER_UID, _SUBJECT_UID, _EXTENSIONS = 0xA0, 0x81, 0x82, 0xA3  # tbsCertificate's context tags
_SAN_DNS, _SAN_URI = 0x82, 0x86  # GeneralName [2] dNSName, [6] uniformResourceIdentifier

# Extension ids as their DER contents (compared as bytes: no decoding per handshake).
_OID_SAN = bytes([0x55, 0x1D, 0x11])  # 2.5.29.17
_OID_BASIC_CONSTRAINTS = bytes([0x55, 0x1D, 0x13])  # 2.5.29.19
_OID_COMMON_NAME = "2.5.4.3"
# The short names cryptography's rfc4514_string uses (RFC 4514 section 3); others print as dotted OIDs.
_SHORT_NAMES = {
    "2.5.4.3": "CN",
    "2.5.4.7": "L",
    "2.5.4.8": "ST",
    "2.5.4.10": "O",
    "2.5.4.11": "OU",
    "2.5.4.6": "C",
    "2.5.4.9": "STREET",
    "0.9.2342.19200300.100.1.25": "DC",
    "0.9.2342.19200300.100.1.1": "UID",
}
# String types an attribute value may have, and how their bytes decode.
_TEXT_ENCODINGS = {
    0x0C: "utf-8",
    0x13: "latin-1",
    0x14: "latin-1",
    0x16: "latin-1",
    0x1E: "utf-16-be",
    0x1C: "utf-32-be",
}

_PEM_CERTIFICATE = re.compile(rb"-----BEGIN CERTIFICATE-----(.*?)-----END CERTIFICATE-----", re.DOTALL)


def _tlv(data: bytes, pos: int, end: int) -> tuple[int, int, int]:
    """The element at ``pos``: (tag, start of its content, end of its content)."""
    if pos + 2 > end:
        raise ValueError("truncated DER")
    tag, length = data[pos], data[pos + 1]
    pos += 2
    if tag & 0x1F == 0x1F:
        raise ValueError("multi-byte DER tags are not used in certificates")
    if length & 0x80:
        count = length & 0x7F
        if count == 0 or count > 4 or pos + count > end:
            raise ValueError("bad DER length")
        length = int.from_bytes(data[pos : pos + count], "big")
        pos += count
    if pos + length > end:
        raise ValueError("DER element runs past its container")
    return tag, pos, pos + length


def _children(data: bytes, start: int, end: int) -> list[tuple[int, int, int]]:
    items = []
    while start < end:
        item = _tlv(data, start, end)
        items.append(item)
        start = item[2]
    return items


def _expect(item: tuple[int, int, int], tag: int, what: str) -> tuple[int, int]:
    if item[0] != tag:
        raise ValueError(f"expected {what}")
    return item[1], item[2]


def _oid(content: bytes) -> str:
    if not content:
        raise ValueError("empty OID")
    arcs: list[int] = []
    value = 0
    for byte in content:
        value = (value << 7) | (byte & 0x7F)
        if not byte & 0x80:
            arcs.append(value)
            value = 0
    first = arcs[0]
    head = [0, first] if first < 40 else [1, first - 40] if first < 80 else [2, first - 80]
    return ".".join(str(arc) for arc in head + arcs[1:])


def _time(tag: int, content: bytes) -> datetime:
    text = content.decode("ascii")
    if tag == _UTC_TIME and len(text) == 13 and text.endswith("Z"):
        year = int(text[:2])
        text = f"{1900 + year if year >= 50 else 2000 + year}{text[2:]}"  # RFC 5280 4.1.2.5.1
    elif not (tag == _GENERALIZED_TIME and len(text) == 15 and text.endswith("Z")):
        raise ValueError("expected a UTCTime or GeneralizedTime in Z form")
    if not text[:14].isdigit():
        raise ValueError("a time is digits and Z")
    # Slices, not strptime: this runs at every handshake, and strptime is ~10x slower.
    year, month, day = int(text[0:4]), int(text[4:6]), int(text[6:8])
    return datetime(year, month, day, int(text[8:10]), int(text[10:12]), int(text[12:14]), tzinfo=UTC)


def _escape(value: str) -> str:
    """An attribute value as RFC 4514 (and cryptography's ``rfc4514_string``) writes it."""
    if not value:
        return ""
    for special in ("\\", '"', "+", ",", ";", "<", ">"):
        value = value.replace(special, "\\" + special)
    value = value.replace("\0", "\\00")
    if value[0] == "#" or (value[0] == " " and len(value) > 1):
        value = "\\" + value
    if value[-1] == " ":
        value = value[:-1] + "\\ "
    return value


def _name(data: bytes, start: int, end: int) -> tuple[str, tuple[str, ...]]:
    """A Name as its RFC 4514 string (last RDN first), and its common names."""
    rdns: list[str] = []
    common_names: list[str] = []
    for rdn in _children(data, start, end):
        attributes = []
        for attribute in _children(data, *_expect(rdn, _SET, "a relative distinguished name")):
            oid_item, value_item = _children(data, *_expect(attribute, _SEQUENCE, "an attribute"))[:2]
            oid = _oid(data[slice(*_expect(oid_item, _OID, "an attribute type"))])
            tag, value_start, value_end = value_item
            raw = data[value_start:value_end]
            encoding = _TEXT_ENCODINGS.get(tag)
            text = _escape(raw.decode(encoding)) if encoding else "#" + data[oid_item[2] : value_end].hex()
            if oid == _OID_COMMON_NAME and encoding:
                common_names.append(raw.decode(encoding))
            attributes.append(f"{_SHORT_NAMES.get(oid, oid)}={text}")
        rdns.append("+".join(attributes))
    return ",".join(reversed(rdns)), tuple(common_names)


@dataclass(frozen=True, slots=True)
class CertificateFacts:
    """The fields of one certificate a sidecar uses. The names of cryptography's
    ``x509.Certificate`` where it has the same field (code may take either)."""

    der: bytes
    serial_number: int
    not_valid_before_utc: datetime
    not_valid_after_utc: datetime
    subject_der: bytes  # the subject Name's contents, read when asked (not per handshake: errors, a CN)
    uri_sans: tuple[str, ...]
    dns_sans: tuple[str, ...]
    is_ca: bool
    public_key_info: bytes  # the SubjectPublicKeyInfo, DER

    @property
    def subject(self) -> str:
        """RFC 4514, as cryptography's ``subject.rfc4514_string()``."""
        return self._subject()[0]

    @property
    def common_names(self) -> tuple[str, ...]:
        return self._subject()[1]

    def _subject(self) -> tuple[str, tuple[str, ...]]:
        try:
            return _name(self.subject_der, 0, len(self.subject_der))
        except (ValueError, IndexError, UnicodeDecodeError):
            return "(a subject that cannot be read)", ()

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.der).hexdigest()


def _extensions(data: bytes, start: int, end: int) -> tuple[tuple[str, ...], tuple[str, ...], bool]:
    uris: list[str] = []
    dns: list[str] = []
    is_ca = False
    (outer,) = _children(data, start, end)
    for extension in _children(data, *_expect(outer, _SEQUENCE, "the extension list")):
        parts = _children(data, *_expect(extension, _SEQUENCE, "an extension"))
        oid = data[slice(*_expect(parts[0], _OID, "an extension id"))]
        value_start, value_end = _expect(parts[-1], _OCTET_STRING, "an extension value")
        if oid == _OID_SAN:
            (names,) = _children(data, value_start, value_end)
            for tag, name_start, name_end in _children(data, *_expect(names, _SEQUENCE, "GeneralNames")):
                if tag == _SAN_URI:
                    uris.append(data[name_start:name_end].decode("ascii"))
                elif tag == _SAN_DNS:
                    dns.append(data[name_start:name_end].decode("ascii"))
        elif oid == _OID_BASIC_CONSTRAINTS:
            (constraints,) = _children(data, value_start, value_end)
            fields = _children(data, *_expect(constraints, _SEQUENCE, "BasicConstraints"))
            if fields and fields[0][0] == _BOOLEAN:
                is_ca = data[fields[0][1] : fields[0][2]] != b"\x00"
    return tuple(uris), tuple(dns), is_ca


def read_der_certificate(der: bytes) -> CertificateFacts:
    """The facts of one DER certificate; ValueError when it is not one."""
    try:
        data = bytes(der)
        tag, start, end = _tlv(data, 0, len(data))
        if tag != _SEQUENCE or end != len(data):
            raise ValueError("a certificate is one DER SEQUENCE")
        tbs = _children(data, start, end)[0]
        fields = _children(data, *_expect(tbs, _SEQUENCE, "tbsCertificate"))
        if fields and fields[0][0] == _VERSION:
            fields = fields[1:]
        serial_item, _signature, issuer, validity, subject, spki, *rest = fields
        serial = int.from_bytes(data[slice(*_expect(serial_item, _INTEGER, "a serial number"))], "big", signed=True)
        _expect(issuer, _SEQUENCE, "the issuer")
        not_before, not_after = (
            _time(item[0], data[item[1] : item[2]])
            for item in _children(data, *_expect(validity, _SEQUENCE, "the validity"))
        )
        subject_start, subject_end = _expect(subject, _SEQUENCE, "the subject")
        _expect(spki, _SEQUENCE, "the subject public key")
        uris: tuple[str, ...] = ()
        dns: tuple[str, ...] = ()
        is_ca = False
        for item in rest:
            if item[0] == _EXTENSIONS:
                uris, dns, is_ca = _extensions(data, item[1], item[2])
            elif item[0] not in (_ISSUER_UID, _SUBJECT_UID):
                raise ValueError("unexpected field in tbsCertificate")
    except (ValueError, IndexError, UnicodeDecodeError) as exc:
        raise ValueError(f"not a DER certificate: {exc}") from None
    return CertificateFacts(
        der=data,
        serial_number=serial,
        not_valid_before_utc=not_before,
        not_valid_after_utc=not_after,
        subject_der=data[subject_start:subject_end],
        uri_sans=uris,
        dns_sans=dns,
        is_ca=is_ca,
        public_key_info=data[spki[1] - _header_size(data, spki) : spki[2]],
    )


def _header_size(data: bytes, item: tuple[int, int, int]) -> int:
    """How many bytes the tag and length of ``item`` take (its content starts after them)."""
    length = item[2] - item[1]
    return 2 if length < 0x80 else 2 + (length.bit_length() + 7) // 8


def read_pem_certificates(pem: bytes | str, *, source: str = "input") -> list[CertificateFacts]:
    """Every CERTIFICATE block of ``pem`` in order (other PEM blocks are skipped), with the errors
    of ``mesh.identity.load_certificates``."""
    data = pem.encode() if isinstance(pem, str) else pem
    if b"-----BEGIN CERTIFICATE-----" not in data:
        raise IdentityError(
            f"{source} holds no PEM certificate",
            hint="pass a file with -----BEGIN CERTIFICATE----- blocks",
        )
    blocks = _PEM_CERTIFICATE.findall(data)
    try:
        if len(blocks) != data.count(b"-----BEGIN CERTIFICATE-----"):
            raise ValueError("a CERTIFICATE block without its END line")
        return [read_der_certificate(base64.b64decode(b"".join(block.split()), validate=True)) for block in blocks]
    except (ValueError, binascii.Error):
        raise IdentityError(
            f"{source} holds a corrupted PEM certificate",
            hint="restore the file from a backup or re-create it",
        ) from None
