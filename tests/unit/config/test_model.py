"""The valid side: defaults, the DESIGN.md example, immutability, to_dict/parse_config round trips."""

from __future__ import annotations

import dataclasses
import json
import pickle

import pytest
from hypothesis import given, strategies as st

from mesh.config import (
    DiscoveryConfig,
    FaultConfig,
    FrozenMap,
    GatewayConfig,
    MeshConfig,
    MeshSettings,
    PolicyConfig,
    RateLimitConfig,
    RetryPolicy,
    RouteConfig,
    RouteMatch,
    ServiceConfig,
    SplitTarget,
    is_valid_service_name,
    is_valid_spiffe_id,
    load_config,
    load_config_text,
    parse_config,
)

from .conftest import DESIGN_EXAMPLE, TESTDATA


def test_design_example_loads_into_the_typed_model() -> None:
    config = load_config_text(DESIGN_EXAMPLE, "mesh.toml")
    assert config == MeshConfig(
        mesh=MeshSettings(trust_domain="mesh.local", authz_default="allow"),
        discovery=DiscoveryConfig(mode="zeroconf", interfaces=("127.0.0.1",)),
        services=(
            ServiceConfig(
                name="reviews",
                command=("python", "-m", "mesh.demo", "reviews"),
                labels={"version": "v1"},
                upstreams=("ratings",),
                health="/health",
            ),
        ),
        gateways=(GatewayConfig(listen="127.0.0.1:9080", to="productpage"),),
        routes=(
            RouteConfig(
                service="reviews",
                match=RouteMatch(path_prefix="/", headers={"end-user": "jason"}),
                split=(
                    SplitTarget(labels={"version": "v2"}, weight=90),
                    SplitTarget(labels={"version": "v3"}, weight=10),
                ),
                timeout=2.0,
                retries=RetryPolicy(attempts=2, on=("5xx", "connect-failure"), budget=0.2),
                fault=FaultConfig(delay=0.2, delay_percent=10, abort_status=503, abort_percent=5),
            ),
        ),
        policies=(PolicyConfig(service="ratings", allow=("reviews",)),),
    )


def test_design_example_round_trips_through_json() -> None:
    config = load_config_text(DESIGN_EXAMPLE, "mesh.toml")
    wire = json.loads(json.dumps(config.to_dict()))
    assert parse_config(wire, "controller") == config
    assert MeshConfig.from_dict(wire) == config
    assert wire["route"][0]["timeout"] == "2s"
    assert wire["route"][0]["fault"]["delay"] == "200ms"
    assert wire["service"][0]["labels"] == {"version": "v1"}


def test_testdata_sample_is_valid_and_round_trips() -> None:
    config = load_config(TESTDATA / "mesh.toml")
    assert config.summary() == {"services": 3, "gateways": 1, "routes": 2, "policies": 1}
    assert parse_config(json.loads(json.dumps(config.to_dict()))) == config
    ratings = config.policy_for("ratings")
    assert ratings is not None and ratings.rate_limit == RateLimitConfig(
        100.0, 100, per_caller=True
    )
    assert config.service("reviews") is not None and config.service("reviews").replicas == 2  # type: ignore[union-attr]
    assert [r.name for r in config.routes_for("reviews")] == ["jason-canary"]
    assert config.service("nope") is None and config.policy_for("nope") is None


def test_empty_config_means_all_defaults() -> None:
    config = load_config_text("", "mesh.toml")
    assert config == MeshConfig()
    assert config.mesh.trust_domain == "mesh.local"
    assert config.mesh.authz_default == "allow"
    assert config.discovery == DiscoveryConfig(
        mode="zeroconf", interfaces=("127.0.0.1",), endpoints_file=None
    )
    assert config.to_dict() == {
        "mesh": {"trust_domain": "mesh.local", "authz_default": "allow"},
        "discovery": {"mode": "zeroconf", "interfaces": ["127.0.0.1"]},
        "control": {"store": "embedded"},
        "telemetry": {"trace_sample": 1.0},
        "service": [],
        "gateway": [],
        "route": [],
        "policy": [],
    }


def test_route_and_service_defaults() -> None:
    config = load_config_text('[[route]]\nservice = "a"\n[[service]]\nname = "a"\ncommand = ["x"]')
    route = config.routes[0]
    assert route.timeout == 10.0
    assert route.retries == RetryPolicy(
        attempts=2,
        on=("5xx", "connect-failure", "reset"),
        budget=0.2,
        min_per_second=10,
        retryable=False,
    )
    assert (
        route.match == RouteMatch()
        and route.split == ()
        and route.fault is None
        and route.rate_limit is None
    )
    service = config.services[0]
    assert (service.replicas, service.port, service.health, service.env, service.labels) == (
        1,
        None,
        None,
        {},
        {},
    )


def test_rate_limit_burst_defaults_to_one_second_of_requests() -> None:
    config = load_config_text(
        '[[route]]\nservice = "a"\nrate_limit = { requests_per_second = 2.5 }\n'
        '[[route]]\nservice = "b"\nrate_limit = { requests_per_second = 0.1 }'
    )
    assert [r.rate_limit.burst for r in config.routes] == [3, 1]  # type: ignore[union-attr]


def test_fault_percent_defaults_to_every_request() -> None:
    fault = (
        load_config_text('[[route]]\nservice = "a"\nfault = { abort_status = 503 }').routes[0].fault
    )
    assert fault == FaultConfig(abort_status=503, abort_percent=100.0)
    assert fault.to_dict() == {"abort_status": 503, "abort_percent": 100.0}  # type: ignore[union-attr]


def test_header_names_are_stored_lower_case() -> None:
    match = (
        load_config_text('[[route]]\nservice = "a"\nmatch = { headers = { "End-User" = "Jason" } }')
        .routes[0]
        .match
    )
    assert dict(match.headers) == {"end-user": "Jason"}


def test_policy_allow_none_versus_empty() -> None:
    config = load_config_text(
        '[[policy]]\nservice = "a"\ndeny = ["b"]\n[[policy]]\nservice = "c"\nallow = []\n'
        '[[policy]]\nservice = "d"\nallow = ["*", "spiffe://other.domain/svc/x"]'
    )
    assert [p.allow for p in config.policies] == [None, (), ("*", "spiffe://other.domain/svc/x")]
    assert parse_config(config.to_dict()) == config


def test_json_null_means_not_set() -> None:
    config = parse_config({"mesh": None, "route": [{"service": "a", "name": None, "fault": None}]})
    assert config.routes[0] == RouteConfig(service="a")


def test_relative_endpoints_file_is_taken_from_the_config_directory(tmp_path) -> None:  # noqa: ANN001
    (tmp_path / "mesh.toml").write_text(
        '[discovery]\nmode = "static"\nendpoints_file = "endpoints.toml"\n'
    )
    config = load_config(tmp_path / "mesh.toml")
    assert config.discovery.endpoints_file == str(tmp_path / "endpoints.toml")
    (tmp_path / "abs.toml").write_text(
        '[discovery]\nmode = "static"\nendpoints_file = "/etc/mesh/e.toml"\n'
    )
    assert load_config(tmp_path / "abs.toml").discovery.endpoints_file == "/etc/mesh/e.toml"


def test_model_is_frozen_hashable_and_picklable() -> None:
    config = load_config(TESTDATA / "mesh.toml")
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.mesh.trust_domain = "x"  # type: ignore[misc]
    with pytest.raises(TypeError):
        config.services[0].labels["version"] = "v9"  # type: ignore[index]
    assert isinstance(config.services, tuple) and isinstance(config.services[0].labels, FrozenMap)
    assert hash(config) == hash(load_config(TESTDATA / "mesh.toml"))
    assert pickle.loads(pickle.dumps(config)) == config


def test_constructors_freeze_containers() -> None:
    service = ServiceConfig(name="a", command=["x", "y"], labels={"v": "1"}, upstreams=["b"])  # type: ignore[arg-type]
    assert service.command == ("x", "y") and service.upstreams == ("b",)
    assert isinstance(service.labels, FrozenMap) and service.labels == {"v": "1"}
    assert hash(service)


def test_gateway_host_and_port() -> None:
    assert (
        GatewayConfig("127.0.0.1:9080", "a").host,
        GatewayConfig("127.0.0.1:9080", "a").port,
    ) == ("127.0.0.1", 9080)
    assert GatewayConfig("[::1]:80", "a").host == "::1"
    assert GatewayConfig("localhost:0", "a").port == 0


@pytest.mark.parametrize("name", ["a", "reviews", "ratings-v2", "0", "a" * 63, "a-b-c"])
def test_valid_service_names(name: str) -> None:
    assert is_valid_service_name(name)


@pytest.mark.parametrize("name", ["", "A", "-a", "a-", "a_b", "a.b", "a" * 64, None, 3])
def test_invalid_service_names(name: object) -> None:
    assert not is_valid_service_name(name)


@pytest.mark.parametrize(
    ("text", "valid"),
    [
        ("spiffe://mesh.local/svc/reviews", True),
        ("spiffe://mesh.local/operator/admin", True),
        ("spiffe://mesh.local", False),
        ("spiffe://mesh.local/", False),
        ("spiffe://mesh.local/svc//x", False),
        ("spiffe://mesh.local/svc/..", False),
        ("spiffe://Mesh.Local/svc/x", False),
        ("https://mesh.local/svc/x", False),
    ],
)
def test_spiffe_ids(text: str, valid: bool) -> None:
    assert is_valid_spiffe_id(text) is valid


# --- generated configs round-trip ------------------------------------------------------

names = st.from_regex(r"[a-z][a-z0-9-]{0,10}[a-z0-9]", fullmatch=True)
labels = st.dictionaries(st.from_regex(r"[a-z][a-z0-9]{0,6}", fullmatch=True), names, max_size=3)
durations = st.sampled_from(["1ms", "250ms", "1.5s", "2s", "90s", "1m", "1h30m", "24h"])


@st.composite
def splits(draw: st.DrawFn) -> list[dict[str, object]]:
    count = draw(st.integers(1, 4))
    cuts = sorted(draw(st.lists(st.integers(0, 100), min_size=count - 1, max_size=count - 1)))
    weights = [b - a for a, b in zip([0, *cuts], [*cuts, 100], strict=True)]
    return [{"labels": draw(labels.filter(bool)), "weight": w} for w in weights]


routes = st.fixed_dictionaries(
    # Routes name services run elsewhere ("remote-…"): the label keys of a split can
    # only be checked against services defined in the same file.
    {"service": names.map(lambda n: f"remote-{n}"[:63])},
    optional={
        "timeout": durations,
        "split": splits(),
        "match": st.fixed_dictionaries(
            {},
            optional={
                "path_prefix": st.just("/api"),
                "method": st.just("GET"),
                "headers": st.dictionaries(names, names, max_size=2),
            },
        ),
        "retries": st.fixed_dictionaries(
            {},
            optional={
                "attempts": st.integers(0, 10),
                "budget": st.floats(0, 1),
                "on": st.lists(st.sampled_from(["5xx", "reset", "503"])),
            },
        ),
        "fault": st.fixed_dictionaries(
            {}, optional={"delay": durations, "abort_status": st.integers(400, 599)}
        ),
        "rate_limit": st.fixed_dictionaries(
            {"requests_per_second": st.floats(0.01, 1e6)},
            optional={"burst": st.integers(1, 1000), "per_caller": st.booleans()},
        ),
    },
)
services = st.fixed_dictionaries(
    {"name": names, "command": st.lists(st.text(min_size=1), min_size=1, max_size=3)},
    optional={
        "labels": labels,
        "upstreams": st.lists(names, max_size=3),
        "replicas": st.integers(1, 5),
        "port": st.integers(1, 65535),
        "env": st.dictionaries(
            st.from_regex(r"[A-Z_]{1,8}", fullmatch=True), st.text().filter(lambda s: "\0" not in s)
        ),
    },
)
configs = st.fixed_dictionaries(
    {},
    optional={
        "mesh": st.fixed_dictionaries(
            {},
            optional={
                "trust_domain": st.from_regex(r"[a-z0-9._-]{1,20}", fullmatch=True),
                "authz_default": st.sampled_from(["allow", "deny"]),
            },
        ),
        "service": st.lists(services, max_size=3, unique_by=lambda s: s["name"]),
        # One route per service: two faults on the same match are rightly refused.
        "route": st.lists(routes, max_size=3, unique_by=lambda r: r["service"]),
    },
)


@given(configs)
def test_generated_configs_round_trip(data: dict[str, object]) -> None:
    config = parse_config(data, "generated")
    wire = json.loads(json.dumps(config.to_dict()))
    again = parse_config(wire, "wire")
    assert again == config
    assert again.to_dict() == config.to_dict()


@pytest.mark.parametrize(
    ("interfaces", "expected"),
    [
        (("127.0.0.1",), None),
        (("all",), None),  # every interface, but no address
        (("127.0.0.1", "10.0.0.5", "192.168.1.20"), "10.0.0.5"),
        (("192.168.1.20",), "192.168.1.20"),
        (("127.0.0.2",), None),  # all of 127/8 is loopback
    ],
)
def test_lan_address_is_the_first_interface_other_hosts_reach(
    interfaces: tuple[str, ...], expected: str | None
) -> None:
    # `mesh up` binds and advertises its services there (docs/cli.md, "Several hosts").
    assert DiscoveryConfig(interfaces=interfaces).lan_address == expected
