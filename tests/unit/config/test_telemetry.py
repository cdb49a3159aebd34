"""mesh.toml's [telemetry] and the OTLP endpoint URLs it (and --otlp-endpoint) accepts."""

from __future__ import annotations

import pytest

from mesh.config import (
    ConfigInvalid,
    MeshConfig,
    OtlpEndpointError,
    TelemetryConfig,
    load_config_text,
    parse_otlp_endpoint,
    parse_sample_rate,
)


def test_endpoints() -> None:
    base = parse_otlp_endpoint("http://127.0.0.1:4318")
    assert (base.tls, base.host, base.port, base.path, base.url) == (False, "127.0.0.1", 4318, "/v1/traces", "http://127.0.0.1:4318/v1/traces")
    assert parse_otlp_endpoint("http://collector:4318/").path == "/v1/traces"
    # A path is the traces URL itself, as OTEL_EXPORTER_OTLP_TRACES_ENDPOINT.
    assert parse_otlp_endpoint("http://collector:9411/custom/traces?tenant=a").path == "/custom/traces?tenant=a"
    tls = parse_otlp_endpoint("https://otel.example")
    assert (tls.tls, tls.port) == (True, 443) and parse_otlp_endpoint("http://otel").port == 80
    assert parse_otlp_endpoint("http://[::1]:4318").url == "http://[::1]:4318/v1/traces"


@pytest.mark.parametrize(
    "text, why",
    [
        ("collector:4318", "the scheme is http or https"),
        ("grpc://collector:4317", "the scheme is http or https"),
        ("http://user:secret@collector:4318", "without credentials"),
        ("http://collector:4318#x", "without a #fragment"),
        ("http://collector:99999", "the port is 1-65535"),
        ("http://:4318", "with a host"),
        ("http://collector:0", "with a host"),
        ("http://coll ector", ""),
        ("", ""),
    ],
)
def test_bad_endpoints_say_what_is_expected(text: str, why: str) -> None:
    with pytest.raises(OtlpEndpointError) as raised:
        parse_otlp_endpoint(text)
    assert str(raised.value).startswith("an http:// or https:// URL of an OTLP/HTTP collector") and why in str(raised.value)


def test_sample_rates() -> None:
    assert parse_sample_rate("0.25") == 0.25 and parse_sample_rate(1) == 1.0 and parse_sample_rate("0") == 0.0
    for bad in ("1.5", "-0.1", "nan", "all", True, None):
        with pytest.raises(ValueError):
            parse_sample_rate(bad)


def test_the_table() -> None:
    assert load_config_text("").telemetry == TelemetryConfig()
    config = load_config_text('[telemetry]\notlp_endpoint = "http://127.0.0.1:4318"\ntrace_sample = 0.1\naccess_log = "/tmp/a.log"\n')
    assert config.telemetry == TelemetryConfig("http://127.0.0.1:4318", 0.1, "/tmp/a.log")
    assert MeshConfig.from_dict(config.to_dict()).telemetry == config.telemetry  # it travels as JSON
    with pytest.raises(ConfigInvalid) as raised:
        load_config_text('[telemetry]\notlp_endpoint = 4318\naccess_log = ""\nexport = "otlp"\n', "mesh.toml")
    text = str(raised.value)
    assert 'mesh.toml: telemetry.otlp_endpoint: expected an http:// or https:// URL of an OTLP/HTTP collector, like "http://127.0.0.1:4318", found 4318' in text
    assert 'telemetry.access_log: expected a file path, or "-" for standard output, found ""' in text
    assert "telemetry.export: unknown key" in text
