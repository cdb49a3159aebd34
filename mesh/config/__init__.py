"""mesh.toml: the typed, frozen config model, its loading and its validation.

    config = load_config("mesh.toml")           # file → MeshConfig, or ConfigInvalid
    config = parse_config(data, "controller")   # dict/JSON → the same checks
    data = config.to_dict()                     # → plain JSON-able data

Every problem in a config is reported at once, one line each:
``mesh.toml: route[1].split[0].weight: expected an integer 0–100, found "ten"``.
Pure code: no I/O beyond reading the file, no trio.
"""

from __future__ import annotations

from mesh.config._duration import DURATION_EXPECTED, format_duration, parse_duration
from mesh.config._frozen import FrozenMap
from mesh.config._issues import ConfigInvalid, ConfigIssue, render_value
from mesh.config._load import load_config, load_config_text
from mesh.config._model import (
    DEFAULT_RETRY_ON,
    DEFAULT_TIMEOUT,
    DEFAULT_TRUST_DOMAIN,
    RETRY_CONDITIONS,
    ClientLimitsConfig,
    ControlConfig,
    DiscoveryConfig,
    FaultConfig,
    GatewayConfig,
    GatewayRoute,
    GatewayTLS,
    MeshConfig,
    MeshSettings,
    PolicyConfig,
    RateLimitConfig,
    RetryPolicy,
    RouteConfig,
    RouteMatch,
    ServiceConfig,
    SplitTarget,
    TelemetryConfig,
)
from mesh.config._names import (
    APP_PROTOCOLS,
    DEFAULT_PROTOCOL,
    GATEWAY_HOST_RULE,
    HTTP_PROTOCOLS,
    SERVICE_NAME_RULE,
    TRUST_DOMAIN_RULE,
    is_valid_cidr,
    is_valid_gateway_host,
    is_valid_service_name,
    is_valid_spiffe_id,
    is_valid_trust_domain,
    split_host_port,
)
from mesh.config._store_url import (
    DEFAULT_ETCD_PREFIX,
    EMBEDDED,
    STORE_EXPECTED,
    StoreUrl,
    StoreUrlError,
    parse_store_url,
)
from mesh.config._telemetry import (
    ACCESS_LOG_EXPECTED,
    OTLP_EXPECTED,
    SAMPLE_EXPECTED,
    TRACES_PATH,
    OtlpEndpoint,
    OtlpEndpointError,
    is_valid_access_log,
    parse_otlp_endpoint,
    parse_sample_rate,
)
from mesh.config._validate import parse_config

__all__ = [
    "ACCESS_LOG_EXPECTED",
    "OTLP_EXPECTED",
    "SAMPLE_EXPECTED",
    "TRACES_PATH",
    "OtlpEndpoint",
    "OtlpEndpointError",
    "TelemetryConfig",
    "is_valid_access_log",
    "parse_otlp_endpoint",
    "parse_sample_rate",
    "APP_PROTOCOLS",
    "DEFAULT_PROTOCOL",
    "GATEWAY_HOST_RULE",
    "HTTP_PROTOCOLS",
    "DEFAULT_RETRY_ON",
    "DEFAULT_TIMEOUT",
    "DEFAULT_TRUST_DOMAIN",
    "DEFAULT_ETCD_PREFIX",
    "DURATION_EXPECTED",
    "EMBEDDED",
    "RETRY_CONDITIONS",
    "SERVICE_NAME_RULE",
    "STORE_EXPECTED",
    "TRUST_DOMAIN_RULE",
    "ClientLimitsConfig",
    "ConfigInvalid",
    "ConfigIssue",
    "ControlConfig",
    "DiscoveryConfig",
    "FaultConfig",
    "FrozenMap",
    "GatewayConfig",
    "GatewayRoute",
    "GatewayTLS",
    "MeshConfig",
    "MeshSettings",
    "PolicyConfig",
    "RateLimitConfig",
    "RetryPolicy",
    "RouteConfig",
    "RouteMatch",
    "ServiceConfig",
    "SplitTarget",
    "StoreUrl",
    "StoreUrlError",
    "format_duration",
    "is_valid_cidr",
    "is_valid_gateway_host",
    "is_valid_service_name",
    "is_valid_spiffe_id",
    "is_valid_trust_domain",
    "load_config",
    "load_config_text",
    "parse_config",
    "parse_duration",
    "parse_store_url",
    "render_value",
    "split_host_port",
]
