"""Plain data (parsed TOML, or JSON from the wire) → ``MeshConfig``, collecting every problem.

Reading never stops at the first problem: each key is checked, each bad one adds a
``ConfigIssue`` and reading goes on, so a user fixes a whole file in one round.
A value that failed is carried as ``_INVALID`` so that nothing built from it
reports a second, confusing error.

It is long because mesh.toml is: one reader per table, all built on the same few
helpers (key paths, expected/found, did-you-mean) and the same ``_INVALID``
convention. Splitting it by table would spread that convention over files that
each need all of it.
"""

from __future__ import annotations

import difflib
import json
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from mesh.config._duration import DURATION_EXPECTED, parse_duration
from mesh.config._issues import ConfigInvalid, ConfigIssue, render_value
from mesh.config._model import (
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
    ENV_NAME_RULE,
    GATEWAY_HOST_RULE,
    LABEL_RULE,
    SERVICE_NAME_RULE,
    TRUST_DOMAIN_RULE,
    is_valid_cidr,
    is_valid_env_name,
    is_valid_gateway_host,
    is_valid_header_name,
    is_valid_header_value,
    is_valid_ip_address,
    is_valid_label,
    is_valid_method,
    is_valid_service_name,
    is_valid_spiffe_id,
    is_valid_trust_domain,
    split_host_port,
)
from mesh.config._store_url import STORE_EXPECTED, StoreUrlError, parse_store_url
from mesh.config._telemetry import (
    ACCESS_LOG_EXPECTED,
    OTLP_EXPECTED,
    OtlpEndpointError,
    is_valid_access_log,
    parse_otlp_endpoint,
)


class _InvalidType:
    __slots__ = ()

    def __repr__(self) -> str:
        return "INVALID"


_INVALID: Any = _InvalidType()
_NOTHING = "nothing"


class _Bad(Exception):
    """Raised by a value check; ``expected``/``found`` override the rule's defaults."""

    def __init__(self, expected: str | None = None, found: str | None = None) -> None:
        super().__init__(expected)
        self.expected = expected
        self.found = found


class _Issues:
    def __init__(self, source: str) -> None:
        self.source = source
        self.items: list[ConfigIssue] = []

    def add(self, path: str, message: str) -> None:
        self.items.append(ConfigIssue(self.source, path, message))

    def expected(self, path: str, expected: str, found: str) -> None:
        self.add(path, f"expected {expected}, found {found}")

    def unknown_key(self, path: str, key: str, known: Mapping[str, object]) -> None:
        close = difflib.get_close_matches(key, list(known), n=1)
        if close:
            self.add(path, f'unknown key (did you mean "{close[0]}"?)')
        else:
            self.add(path, f"unknown key (known keys: {', '.join(known)})")


class _Reader(Protocol):
    @property
    def expected(self) -> str: ...

    def read(self, value: Any, path: str, issues: _Issues) -> Any: ...


@dataclass(frozen=True, slots=True)
class _Value:
    """A scalar-ish value: ``convert`` returns the model value or raises ``_Bad``."""

    expected: str
    convert: Callable[[Any], Any]

    def read(self, value: Any, path: str, issues: _Issues) -> Any:
        try:
            return self.convert(value)
        except _Bad as bad:
            found = bad.found if bad.found is not None else render_value(value)
            issues.expected(path, bad.expected or self.expected, found)
            return _INVALID


@dataclass(frozen=True, slots=True)
class _Nested:
    """A list or table: ``read_fn`` reports its own issues, with deeper key paths."""

    expected: str
    read_fn: Callable[[Any, str, _Issues], Any]

    def read(self, value: Any, path: str, issues: _Issues) -> Any:
        return self.read_fn(value, path, issues)


@dataclass(frozen=True, slots=True)
class _Key:
    reader: _Reader
    required: bool = False


# --- key paths -------------------------------------------------------------------------

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


def _join(path: str, key: str) -> str:
    """``route[0]`` + ``timeout`` → ``route[0].timeout``; odd keys are quoted as in TOML."""
    part = key if _BARE_KEY.fullmatch(key) else json.dumps(key, ensure_ascii=False)
    return f"{path}.{part}" if path else part


# --- scalar rules ----------------------------------------------------------------------


def _text(expected: str, valid: Callable[[str], bool] = lambda _: True) -> _Value:
    def convert(value: Any) -> str:
        if not isinstance(value, str) or not valid(value):
            raise _Bad
        return value

    return _Value(expected, convert)


def _one_of(*choices: str) -> _Value:
    quoted = [f'"{c}"' for c in choices]
    if len(quoted) == 2:
        expected = f"{quoted[0]} or {quoted[1]}"
    else:
        expected = "one of " + ", ".join(quoted)
    return _text(expected, lambda v: v in choices)


def _integer(low: int, high: int | None = None) -> _Value:
    expected = f"an integer {low}–{high}" if high is not None else f"an integer ≥ {low}"

    def convert(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise _Bad
        if value < low or (high is not None and value > high):
            raise _Bad
        return value

    return _Value(expected, convert)


def _number(low: float, high: float | None = None, *, above_low: bool = False) -> _Value:
    if above_low:
        expected = f"a number > {low:g}"
    elif high is None:
        expected = f"a number ≥ {low:g}"
    else:
        expected = f"a number {low:g}–{high:g}"

    def convert(value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise _Bad
        if value < low or (above_low and value == low) or (high is not None and value > high):
            raise _Bad
        return float(value)

    return _Value(expected, convert)


def _convert_bool(value: Any) -> bool:
    if not isinstance(value, bool):
        raise _Bad
    return value


_BOOL = _Value("true or false", _convert_bool)


def _duration(*, positive: bool) -> _Value:
    out_of_range = "a duration greater than 0" if positive else "a duration of 0 or more"

    def convert(value: Any) -> float:
        try:
            seconds = parse_duration(value)
        except ValueError:
            # "-1s" is well-formed but negative: say so rather than "expected a duration".
            if isinstance(value, str) and value.startswith("-") and _parses(value[1:]):
                raise _Bad(out_of_range) from None
            raise _Bad from None
        if positive and seconds == 0:
            raise _Bad(out_of_range)
        return seconds

    return _Value(DURATION_EXPECTED, convert)


def _parses(text: str) -> bool:
    try:
        parse_duration(text)
    except ValueError:
        return False
    return True


SERVICE_NAME_EXPECTED = f"a service name ({SERVICE_NAME_RULE})"
_SERVICE_NAME = _text(SERVICE_NAME_EXPECTED, is_valid_service_name)
_TRUST_DOMAIN = _text(f'a trust domain like "mesh.local" ({TRUST_DOMAIN_RULE})', is_valid_trust_domain)
_PATH = _text('a path starting with "/"', lambda v: v.startswith("/") and v.isprintable() and " " not in v)
_PRINCIPAL = _text(
    'a service name, a SPIFFE id like "spiffe://mesh.local/svc/reviews", or "*"',
    lambda v: v == "*" or is_valid_service_name(v) or is_valid_spiffe_id(v),
)
_RETRY_CONDITION = _text(
    ", ".join(f'"{c}"' for c in RETRY_CONDITIONS) + ' or a status code like "503"',
    lambda v: v in RETRY_CONDITIONS or (len(v) == 3 and v.isascii() and v.isdigit() and 100 <= int(v) <= 599),
)


def _convert_regex(value: Any) -> str:
    if not isinstance(value, str):
        raise _Bad
    try:
        re.compile(value)
    except re.error as exc:
        raise _Bad(found=f"{render_value(value)} ({exc.msg} at position {exc.pos})") from None
    return value


_REGEX = _Value("a regular expression", _convert_regex)


def _convert_listen(value: Any) -> str:
    if not isinstance(value, str) or split_host_port(value) is None:
        raise _Bad
    return value


_LISTEN = _Value('an address "host:port" like "127.0.0.1:9080"', _convert_listen)

# --- lists and tables of values --------------------------------------------------------


def _list(
    item: _Reader,
    expected: str,
    *,
    non_empty: bool = False,
    check: Callable[[tuple[Any, ...]], None] | None = None,
) -> _Nested:
    def read(value: Any, path: str, issues: _Issues) -> Any:
        if not isinstance(value, (list, tuple)) or (non_empty and not value):
            issues.expected(path, expected, render_value(value))
            return _INVALID
        items = tuple(item.read(v, f"{path}[{i}]", issues) for i, v in enumerate(value))
        if any(x is _INVALID for x in items):
            return _INVALID
        if check is not None:
            try:
                check(items)
            except _Bad as bad:
                found = bad.found if bad.found is not None else render_value(value)
                issues.expected(path, bad.expected or expected, found)
                return _INVALID
        return items

    return _Nested(expected, read)


def _string_map(
    key_valid: Callable[[str], bool],
    key_expected: str,
    value: _Reader,
    expected: str,
    *,
    non_empty: bool = False,
    lower_keys: bool = False,
) -> _Nested:
    def read(data: Any, path: str, issues: _Issues) -> Any:
        if not isinstance(data, Mapping) or (non_empty and not data):
            issues.expected(path, expected, render_value(data))
            return _INVALID
        out: dict[str, str] = {}
        ok = True
        for key, item in data.items():
            key_path = _join(path, key)
            if not key_valid(key):
                issues.expected(key_path, key_expected, render_value(key))
                ok = False
                continue
            name = key.lower() if lower_keys else key
            if name in out:
                issues.expected(
                    key_path,
                    f"{key_expected}, each given once (case does not matter)",
                    f"{render_value(key)} again",
                )
                ok = False
                continue
            checked = value.read(item, key_path, issues)
            if checked is _INVALID:
                ok = False
            out[name] = checked
        return out if ok else _INVALID

    return _Nested(expected, read)


_STRING = _text("a string")
_LABELS = _string_map(
    is_valid_label,
    f"a label name ({LABEL_RULE})",
    _text(f"a label value ({LABEL_RULE})", is_valid_label),
    'a table of labels like { version = "v1" }',
)
_SPLIT_LABELS = _string_map(
    is_valid_label,
    f"a label name ({LABEL_RULE})",
    _text(f"a label value ({LABEL_RULE})", is_valid_label),
    'a non-empty table of labels like { version = "v2" }',
    non_empty=True,
)
_ENV = _string_map(
    is_valid_env_name,
    f"an environment variable name ({ENV_NAME_RULE})",
    _text("a string", lambda v: "\0" not in v),
    'a table of strings like { LOG_LEVEL = "debug" }',
)
_HEADERS = _string_map(
    is_valid_header_name,
    "an HTTP header name",
    _text("a header value (a string without line breaks)", is_valid_header_value),
    'a table of header values like { "end-user" = "jason" }',
    lower_keys=True,
)


def _check_command(items: tuple[str, ...]) -> None:
    if not items[0]:
        raise _Bad("a non-empty list of strings starting with the program to run")


_COMMAND = _list(_STRING, "a non-empty list of strings", non_empty=True, check=_check_command)
_SERVICE_NAMES = _list(_SERVICE_NAME, "a list of service names")
_PRINCIPALS = _list(_PRINCIPAL, 'a list of callers (service names, SPIFFE ids or "*")')


def _check_interfaces(items: tuple[str, ...]) -> None:
    if "all" in items and len(items) > 1:
        raise _Bad('["all"] alone or a list of IP addresses')


_INTERFACES = _list(
    _text('"all" or an IP address like "127.0.0.1"', lambda v: v == "all" or is_valid_ip_address(v)),
    'a non-empty list of IP addresses, or ["all"]',
    non_empty=True,
    check=_check_interfaces,
)

# --- tables ----------------------------------------------------------------------------

_Finish = Callable[[dict[str, Any], str, _Issues], bool]


def _fields(data: Any, path: str, issues: _Issues, keys: Mapping[str, _Key], expected: str) -> dict[str, Any] | None:
    """Read the known keys of one table; report unknown and missing ones. None if not a table."""
    if not isinstance(data, Mapping):
        issues.expected(path, expected, render_value(data))
        return None
    values: dict[str, Any] = {}
    for key, value in data.items():
        key_path = _join(path, str(key))
        spec = keys.get(key)
        if spec is None:
            issues.unknown_key(key_path, str(key), keys)
            continue
        if value is None:  # JSON null: the same as leaving the key out
            continue
        values[key] = spec.reader.read(value, key_path, issues)
    for key, spec in keys.items():
        if spec.required and key not in values:
            issues.expected(_join(path, key), spec.reader.expected, _NOTHING)
    return values


def _table(
    build: Callable[..., Any],
    keys: Mapping[str, _Key],
    expected: str = "a table",
    finish: _Finish | None = None,
) -> _Nested:
    """A table whose keys are the keyword arguments of ``build`` (a model class).

    ``finish`` checks how keys relate to each other; it may fill ``values`` in
    and returns False when it reported a problem.
    """

    def read(data: Any, path: str, issues: _Issues) -> Any:
        values = _fields(data, path, issues, keys, expected)
        if values is None:
            return _INVALID
        complete = all(v is not _INVALID for v in values.values()) and all(
            key in values for key, spec in keys.items() if spec.required
        )
        if finish is not None and not finish(values, path, issues):
            return _INVALID
        return build(**values) if complete else _INVALID

    return _Nested(expected, read)


def _finish_discovery(values: dict[str, Any], path: str, issues: _Issues) -> bool:
    if values.get("mode") == "static" and "endpoints_file" not in values:
        issues.expected(
            _join(path, "endpoints_file"),
            'a path to an endpoints file (mode is "static")',
            _NOTHING,
        )
        return False
    return True


def _finish_match(values: dict[str, Any], path: str, issues: _Issues) -> bool:
    given = [key for key in ("path_exact", "path_prefix", "path_regex") if key in values]
    if len(given) > 1:
        issues.expected(path, "at most one of path_exact, path_prefix, path_regex", " and ".join(given))
        return False
    return True


def _finish_fault(values: dict[str, Any], path: str, issues: _Issues) -> bool:
    ok = True
    for fault, percent, expected in (
        ("delay", "delay_percent", DURATION_EXPECTED),
        ("abort_status", "abort_percent", "an integer 400–599"),
    ):
        if percent in values and fault not in values:
            issues.expected(_join(path, fault), f"{expected} ({percent} is set)", _NOTHING)
            ok = False
    return ok


def _finish_rate_limit(values: dict[str, Any], path: str, issues: _Issues) -> bool:
    rate = values.get("requests_per_second")
    if "burst" not in values and isinstance(rate, float):
        # Default bucket: one second's worth of requests, and at least one.
        values["burst"] = max(1, math.ceil(rate))
    return True


def _finish_policy(values: dict[str, Any], path: str, issues: _Issues) -> bool:
    if not any(key in values for key in ("allow", "deny", "rate_limit")):
        issues.expected(path, "at least one of allow, deny, rate_limit", _NOTHING)
        return False
    return True


def _check_split(items: tuple[SplitTarget, ...]) -> None:
    total = sum(target.weight for target in items)
    if items and total != 100:  # an empty split is the same as no split
        raise _Bad("weights that sum to 100", str(total))


_RATE_LIMIT = _table(
    RateLimitConfig,
    {
        "requests_per_second": _Key(_number(0, above_low=True), required=True),
        "burst": _Key(_integer(1)),
        "per_caller": _Key(_BOOL),
    },
    "a table like { requests_per_second = 100, burst = 200 }",
    _finish_rate_limit,
)

_MESH = _table(
    MeshSettings,
    {
        "trust_domain": _Key(_TRUST_DOMAIN),
        "authz_default": _Key(_one_of("allow", "deny")),
    },
)

_DISCOVERY = _table(
    DiscoveryConfig,
    {
        "mode": _Key(_one_of("zeroconf", "static", "controller")),
        "interfaces": _Key(_INTERFACES),
        "endpoints_file": _Key(_text("a path to an endpoints file", bool)),
    },
    finish=_finish_discovery,
)


def _convert_store(value: Any) -> str:
    if not isinstance(value, str):
        raise _Bad
    try:
        parse_store_url(value)
    except StoreUrlError as exc:
        raise _Bad(f"{STORE_EXPECTED}: {exc}") from None
    return value


_CONTROL = _table(ControlConfig, {"store": _Key(_Value(STORE_EXPECTED, _convert_store))})


def _convert_otlp_endpoint(value: Any) -> str:
    if not isinstance(value, str):
        raise _Bad
    try:
        parse_otlp_endpoint(value)
    except OtlpEndpointError as exc:
        raise _Bad(str(exc)) from None
    return value


_TELEMETRY = _table(
    TelemetryConfig,
    {
        "otlp_endpoint": _Key(_Value(OTLP_EXPECTED, _convert_otlp_endpoint)),
        "trace_sample": _Key(_number(0, 1)),
        "access_log": _Key(_text(ACCESS_LOG_EXPECTED, is_valid_access_log)),
    },
)

_SERVICE = _table(
    ServiceConfig,
    {
        "name": _Key(_SERVICE_NAME, required=True),
        "command": _Key(_COMMAND, required=True),
        "labels": _Key(_LABELS),
        "upstreams": _Key(_SERVICE_NAMES),
        "health": _Key(_PATH),
        "port": _Key(_integer(1, 65535)),
        "replicas": _Key(_integer(1)),
        "env": _Key(_ENV),
        "protocol": _Key(_one_of(*APP_PROTOCOLS)),
    },
)


def _finish_gateway(values: dict[str, Any], path: str, issues: _Issues) -> bool:
    ok = True
    if "to" not in values and "routes" not in values:
        issues.expected(_join(path, "to"), f"{SERVICE_NAME_EXPECTED}, or routes (somewhere to send requests)", _NOTHING)
        ok = False
    if "http_redirect" in values and "tls" not in values:
        issues.expected(
            _join(path, "tls"), "certificates to serve HTTPS with (http_redirect sends clients to HTTPS)", _NOTHING
        )
        ok = False
    if values.get("http_redirect") is not None and values.get("http_redirect") == values.get("listen"):
        issues.expected(_join(path, "http_redirect"), "an address other than listen", render_value(values["listen"]))
        ok = False
    return ok


def _finish_gateway_route(values: dict[str, Any], path: str, issues: _Issues) -> bool:
    host = values.get("host")
    if host == "*":
        del values["host"]  # "*" is any host, as leaving it out is
    elif isinstance(host, str):
        values["host"] = host.lower()  # host names are case-insensitive
    return True


_GATEWAY_ROUTE = _table(
    GatewayRoute,
    {
        "host": _Key(_text(GATEWAY_HOST_RULE, lambda v: is_valid_gateway_host(v.lower()))),
        "path_prefix": _Key(_PATH),
        "to": _Key(_SERVICE_NAME, required=True),
    },
    'a table like { host = "shop.example", path_prefix = "/api", to = "api" }',
    _finish_gateway_route,
)

_GATEWAY_TLS = _table(
    GatewayTLS,
    {
        "cert": _Key(_text("a path to a PEM certificate file", bool), required=True),
        "key": _Key(_text("a path to the PEM key file of that certificate", bool), required=True),
    },
    'a table like { cert = "certs/shop.pem", key = "certs/shop.key" }',
)

_CLIENT_LIMITS = _table(
    ClientLimitsConfig,
    {
        "connections": _Key(_integer(0)),
        "requests_per_second": _Key(_number(0)),
        "burst": _Key(_integer(0)),
    },
    "a table like { connections = 100, requests_per_second = 50, burst = 100 }",
)

_GATEWAY = _table(
    GatewayConfig,
    {
        "listen": _Key(_LISTEN, required=True),
        "to": _Key(_SERVICE_NAME),
        "routes": _Key(_list(_GATEWAY_ROUTE, "a list of { host, path_prefix, to } tables", non_empty=True)),
        "tls": _Key(_list(_GATEWAY_TLS, "a list of { cert, key } tables", non_empty=True)),
        "http_redirect": _Key(_LISTEN),
        "trust_forwarded": _Key(_list(_text('a network like "10.0.0.0/8"', is_valid_cidr), "a list of networks")),
        "client_limits": _Key(_CLIENT_LIMITS),
    },
    finish=_finish_gateway,
)

_MATCH = _table(
    RouteMatch,
    {
        "path_exact": _Key(_PATH),
        "path_prefix": _Key(_PATH),
        "path_regex": _Key(_REGEX),
        "method": _Key(_text('an upper-case HTTP method like "GET"', is_valid_method)),
        "headers": _Key(_HEADERS),
    },
    'a table like { path_prefix = "/api" }',
    _finish_match,
)

_SPLIT_TARGET = _table(
    SplitTarget,
    {
        "labels": _Key(_SPLIT_LABELS, required=True),
        "weight": _Key(_integer(0, 100), required=True),
    },
    'a table like { labels = { version = "v2" }, weight = 10 }',
)

_SPLIT = _list(_SPLIT_TARGET, "a list of { labels, weight } tables", check=_check_split)

_RETRIES = _table(
    RetryPolicy,
    {
        "attempts": _Key(_integer(0, 10)),
        "on": _Key(_list(_RETRY_CONDITION, "a list of retry conditions")),
        "budget": _Key(_number(0, 1)),
        "min_per_second": _Key(_integer(0)),
        "retryable": _Key(_BOOL),
    },
    'a table like { attempts = 2, on = ["5xx"] }',
)

_FAULT = _table(
    FaultConfig,
    {
        "delay": _Key(_duration(positive=False)),
        "delay_percent": _Key(_number(0, 100)),
        "abort_status": _Key(_integer(400, 599)),
        "abort_percent": _Key(_number(0, 100)),
    },
    'a table like { delay = "200ms", delay_percent = 10 }',
    _finish_fault,
)

_ROUTE = _table(
    RouteConfig,
    {
        "service": _Key(_SERVICE_NAME, required=True),
        "name": _Key(_text(f"a route name ({SERVICE_NAME_RULE})", is_valid_service_name)),
        "match": _Key(_MATCH),
        "split": _Key(_SPLIT),
        "timeout": _Key(_duration(positive=True)),
        "retries": _Key(_RETRIES),
        "fault": _Key(_FAULT),
        "rate_limit": _Key(_RATE_LIMIT),
    },
)

_POLICY = _table(
    PolicyConfig,
    {
        "service": _Key(_SERVICE_NAME, required=True),
        "allow": _Key(_PRINCIPALS),
        "deny": _Key(_PRINCIPALS),
        "rate_limit": _Key(_RATE_LIMIT),
    },
    finish=_finish_policy,
)

# Top level: [[array]] sections keep one result per entry (failed ones as _INVALID), so the
# cross-checks below still see the good entries and their indexes.
_TOP_TABLES: dict[str, _Reader] = {
    "mesh": _MESH,
    "discovery": _DISCOVERY,
    "control": _CONTROL,
    "telemetry": _TELEMETRY,
}
_TOP_ARRAYS: dict[str, _Reader] = {
    "service": _SERVICE,
    "gateway": _GATEWAY,
    "route": _ROUTE,
    "policy": _POLICY,
}
_TOP_KEYS: dict[str, object] = {**_TOP_TABLES, **_TOP_ARRAYS}


def parse_config(data: Mapping[str, Any], source: str = "<config>") -> MeshConfig:
    """Validate ``data`` (parsed mesh.toml, or the same shape as JSON) into a ``MeshConfig``.

    Raises ``ConfigInvalid`` listing every problem found, each named by ``source``
    and key path. A JSON ``null`` counts as a key left out.
    """
    issues = _Issues(source)
    config = _read_config(data, issues)
    if issues.items or config is None:
        raise ConfigInvalid(issues.items or [ConfigIssue(source, "", "invalid config")])
    return config


def _read_config(data: Any, issues: _Issues) -> MeshConfig | None:
    if not isinstance(data, Mapping):
        issues.expected("", "a table of mesh config sections", render_value(data))
        return None
    sections: dict[str, Any] = {}
    arrays: dict[str, list[Any]] = {name: [] for name in _TOP_ARRAYS}
    for key, value in data.items():
        if value is None:
            continue
        if key in _TOP_TABLES:
            sections[key] = _TOP_TABLES[key].read(value, key, issues)
        elif key in _TOP_ARRAYS:
            arrays[key] = _read_array(key, value, _TOP_ARRAYS[key], issues)
        else:
            issues.unknown_key(_join("", str(key)), str(key), _TOP_KEYS)
    _check_unique(arrays["service"], "service", "name", "a unique service name", issues)
    _check_unique_listen(arrays["gateway"], issues)
    _check_unique_route_names(arrays["route"], issues)
    _check_unique(arrays["policy"], "policy", "service", "one policy per service", issues)
    _check_subsets(arrays["service"], arrays["route"], issues)
    _check_overlapping_faults(arrays["route"], issues)
    if issues.items:
        return None
    return MeshConfig(
        mesh=sections.get("mesh", MeshSettings()),
        discovery=sections.get("discovery", DiscoveryConfig()),
        control=sections.get("control", ControlConfig()),
        telemetry=sections.get("telemetry", TelemetryConfig()),
        services=tuple(arrays["service"]),
        gateways=tuple(arrays["gateway"]),
        routes=tuple(arrays["route"]),
        policies=tuple(arrays["policy"]),
    )


def _read_array(key: str, value: Any, reader: _Reader, issues: _Issues) -> list[Any]:
    if not isinstance(value, (list, tuple)):
        issues.expected(key, f"an array of tables ([[{key}]])", render_value(value))
        return []
    return [reader.read(item, f"{key}[{i}]", issues) for i, item in enumerate(value)]


def _check_unique(items: list[Any], section: str, attribute: str, expected: str, issues: _Issues) -> None:
    first_at: dict[str, int] = {}
    for i, item in enumerate(items):
        if item is _INVALID:
            continue
        value = getattr(item, attribute)
        if value in first_at:
            issues.expected(
                f"{section}[{i}].{attribute}",
                expected,
                f"{render_value(value)} again (first at {section}[{first_at[value]}])",
            )
        else:
            first_at[value] = i


def _check_unique_listen(gateways: list[Any], issues: _Issues) -> None:
    first_at: dict[tuple[str, int], str] = {}
    for i, gateway in enumerate(gateways):
        if gateway is _INVALID:
            continue
        for key in ("listen", "http_redirect"):
            text = getattr(gateway, key)
            address = split_host_port(text) if text is not None else None
            if address is None or address[1] == 0:  # every ":0" listener gets its own ephemeral port
                continue
            where = f"gateway[{i}]" if key == "listen" else f"gateway[{i}].{key}"
            if address in first_at:
                issues.expected(
                    f"gateway[{i}].{key}",
                    "an address no other gateway listens on",
                    f"{render_value(text)} again (first at {first_at[address]})",
                )
            else:
                first_at[address] = where


def _check_subsets(services: list[Any], routes: list[Any], issues: _Issues) -> None:
    """A split target must use label keys that the service's instances have.

    Values cannot be checked here: other versions of a service may run on other
    hosts (a mesh.toml has one [[service]] per name), but a key the service
    never has is a typo that would send the whole split to no endpoint.
    """
    keys_of: dict[str, set[str]] = {}
    for service in services:
        if service is not _INVALID:
            keys_of.setdefault(service.name, set()).update(service.labels)
    for i, route in enumerate(routes):
        if route is _INVALID or route.service not in keys_of:
            continue
        known = keys_of[route.service]
        for j, target in enumerate(route.split):
            unknown = sorted(set(target.labels) - known)
            if unknown:
                have = ", ".join(sorted(known)) or "no labels"
                issues.expected(
                    f"route[{i}].split[{j}].labels",
                    f"label keys of service {render_value(route.service)} ({have})",
                    ", ".join(render_value(k) for k in unknown),
                )


def _check_overlapping_faults(routes: list[Any], issues: _Issues) -> None:
    """Two faults on routes with the same match for one service: which one applies would be arbitrary."""
    first_at: dict[tuple[str, Any], int] = {}
    for i, route in enumerate(routes):
        if route is _INVALID or route.fault is None:
            continue
        key = (route.service, route.match)
        if key in first_at:
            issues.expected(
                f"route[{i}].fault",
                "at most one fault per service and match",
                f"another fault on the same match (first at route[{first_at[key]}].fault)",
            )
        else:
            first_at[key] = i


def _check_unique_route_names(routes: list[Any], issues: _Issues) -> None:
    first_at: dict[tuple[str, str], int] = {}
    for i, route in enumerate(routes):
        if route is _INVALID or route.name is None:
            continue
        key = (route.service, route.name)
        if key in first_at:
            issues.expected(
                f"route[{i}].name",
                f"a route name unique within service {render_value(route.service)}",
                f"{render_value(route.name)} again (first at route[{first_at[key]}])",
            )
        else:
            first_at[key] = i
