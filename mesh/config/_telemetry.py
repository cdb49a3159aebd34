"""Where a proxy's telemetry goes beyond metrics: spans to an OTLP/HTTP collector, access logs
to a file or stdout (pure parsing, for mesh.toml's ``[telemetry]`` and the commands' flags).

    http://127.0.0.1:4318               spans are POSTed to http://127.0.0.1:4318/v1/traces
    https://otel.example:4318           TLS, the system's trust store
    http://127.0.0.1:9411/api/traces    a URL with a path is used as it is

As OpenTelemetry's ``OTEL_EXPORTER_OTLP_ENDPOINT``: a URL without a path is the
collector's base, and the traces path ``/v1/traces`` is added. No credentials in the
URL (URLs end up in logs, `ps` and mesh.toml).
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

TRACES_PATH = "/v1/traces"
OTLP_EXPECTED = 'an http:// or https:// URL of an OTLP/HTTP collector, like "http://127.0.0.1:4318"'
SAMPLE_EXPECTED = "a sampling rate from 0.0 (none) to 1.0 (every new trace)"
ACCESS_LOG_EXPECTED = 'a file path, or "-" for standard output'
STDOUT = "-"


class OtlpEndpointError(ValueError):
    """What is wrong with an OTLP endpoint, in words that follow "expected …"."""


@dataclass(frozen=True, slots=True)
class OtlpEndpoint:
    tls: bool
    host: str
    port: int
    path: str  # what spans are POSTed to, query included

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'https' if self.tls else 'http'}://{host}:{self.port}{self.path}"


def parse_otlp_endpoint(text: str) -> OtlpEndpoint:
    """An OTLP/HTTP collector URL; raises OtlpEndpointError saying what was expected."""
    if not isinstance(text, str) or not text.isprintable() or " " in text:
        raise OtlpEndpointError(OTLP_EXPECTED)
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https"):
        raise OtlpEndpointError(f"{OTLP_EXPECTED} (the scheme is http or https)")
    if parts.username is not None or parts.password is not None:
        raise OtlpEndpointError(f"{OTLP_EXPECTED}, without credentials (they would show in logs and `ps`)")
    if parts.fragment:
        raise OtlpEndpointError(f"{OTLP_EXPECTED}, without a #fragment")
    try:
        port = parts.port
    except ValueError:
        raise OtlpEndpointError(f"{OTLP_EXPECTED} (the port is 1-65535)") from None
    if not parts.hostname or port == 0:
        raise OtlpEndpointError(f"{OTLP_EXPECTED} (with a host, and a port 1-65535 if any)")
    tls = parts.scheme == "https"
    path = parts.path if parts.path not in ("", "/") else TRACES_PATH
    if parts.query:
        path += "?" + parts.query
    return OtlpEndpoint(tls, parts.hostname, port or (443 if tls else 80), path)


def parse_sample_rate(value: object) -> float:
    """A sampling rate, 0.0-1.0, from a number or its text; ValueError otherwise."""
    if isinstance(value, bool):
        raise ValueError(SAMPLE_EXPECTED)
    try:
        rate = float(value) if isinstance(value, (int, float, str)) else float("nan")
    except ValueError:
        raise ValueError(SAMPLE_EXPECTED) from None
    if not 0.0 <= rate <= 1.0:  # NaN fails too
        raise ValueError(SAMPLE_EXPECTED)
    return rate


def is_valid_access_log(value: object) -> bool:
    return isinstance(value, str) and bool(value.strip()) and "\0" not in value and value.isprintable()
