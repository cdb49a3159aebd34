from __future__ import annotations

import pytest

from mesh.errors import IdentityError
from mesh.identity import (
    DEFAULT_TRUST_DOMAIN,
    SpiffeId,
    operator_identity,
    service_identity,
    validate_trust_domain,
)


def test_service_and_operator_uris() -> None:
    assert str(service_identity("mesh.local", "reviews")) == "spiffe://mesh.local/svc/reviews"
    assert (
        str(operator_identity("corp_1.example", "alice"))
        == "spiffe://corp_1.example/operator/alice"
    )
    assert DEFAULT_TRUST_DOMAIN == "mesh.local"


@pytest.mark.parametrize(
    "uri",
    ["spiffe://mesh.local/svc/reviews", "spiffe://a-b_c.d/operator/ops-1", "spiffe://x/svc/a", "spiffe://x/host/b-2"],
)
def test_parse_round_trips(uri: str) -> None:
    parsed = SpiffeId.parse(uri)
    assert str(parsed) == uri
    assert SpiffeId.parse(str(parsed)) == parsed


@pytest.mark.parametrize(
    "uri",
    [
        "",
        "https://mesh.local/svc/reviews",
        "spiffe://mesh.local",
        "spiffe://mesh.local/",
        "spiffe://mesh.local/svc/",
        "spiffe://mesh.local/svc/reviews/extra",
        "spiffe://mesh.local/pod/reviews",
        "spiffe://Mesh.Local/svc/reviews",
        "spiffe://mesh.local:443/svc/reviews",
        "spiffe://mesh.local/svc/Reviews",
        "spiffe://mesh.local/svc/reviews?x=1",
        "spiffe://mesh.local/host/",
        "spiffe://mesh.local/host/b.lan",
        "spiffe://mesh.local/hosts/b",
        "spiffe:///svc/reviews",
    ],
)
def test_parse_rejects(uri: str) -> None:
    with pytest.raises(IdentityError) as info:
        SpiffeId.parse(uri)
    assert "\n" not in info.value.message
    assert "invalid" in info.value.message


@pytest.mark.parametrize("name", ["", "-a", "a-", "A", "a_b", "a.b", "a" * 64, "é", "a b"])
def test_bad_service_names(name: str) -> None:
    with pytest.raises(IdentityError, match="invalid service name"):
        service_identity("mesh.local", name)


@pytest.mark.parametrize("name", ["a", "0", "reviews", "ratings-v2", "a" * 63])
def test_good_service_names(name: str) -> None:
    assert service_identity("mesh.local", name).name == name


@pytest.mark.parametrize("td", ["", "Mesh.local", "mesh local", "mesh/local", "mesh:1", "x" * 256])
def test_bad_trust_domains(td: str) -> None:
    with pytest.raises(IdentityError) as info:
        validate_trust_domain(td)
    assert info.value.message.startswith("invalid trust domain")
    assert info.value.hint and "mesh.local" in info.value.hint


def test_direct_construction_is_validated() -> None:
    with pytest.raises(IdentityError):
        SpiffeId("mesh.local", "pod", "reviews")  # type: ignore[arg-type]
    with pytest.raises(IdentityError):
        SpiffeId("mesh.local", "svc", "Bad")


def test_ids_are_hashable_and_comparable() -> None:
    a = service_identity("mesh.local", "a")
    assert a == SpiffeId.parse("spiffe://mesh.local/svc/a")
    assert len({a, SpiffeId.parse(str(a))}) == 1


def test_host_identities() -> None:
    """A joined host's CLI: spiffe://TD/host/NAME, NAME from the machine's host name."""
    from mesh.identity import host_identity, host_name_from

    assert str(host_identity("mesh.local", "rack2-node7")) == "spiffe://mesh.local/host/rack2-node7"
    assert SpiffeId.parse("spiffe://mesh.local/host/b").kind == "host"
    assert host_name_from("Rack2_Node7.example.com") == "rack2-node7"
    assert host_name_from("--") == "host"
    assert len(host_name_from("x" * 100)) == 63
    with pytest.raises(IdentityError, match="invalid host name"):
        host_identity("mesh.local", "B")
