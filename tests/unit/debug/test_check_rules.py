"""The verdicts of `mesh check`, from plain facts (no files, sockets or clocks)."""

from __future__ import annotations

import errno
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from mesh.debug.check import Status, _rules as rules

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


def test_python_version() -> None:
    assert rules.python_version((3, 11, 7)).message == "Python 3.11.7 (mesh needs 3.11 or newer)"
    assert rules.python_version((3, 13, 0)).status is Status.OK
    old = rules.python_version((3, 10, 12))
    assert old.status is Status.FAIL
    assert "3.10.12 is too old" in old.message and "install.sh" in (old.hint or "")


def test_dependencies() -> None:
    good = rules.dependencies({"trio": "0.35.0", "h2": "4.4.1"}, {})
    assert (good.status, good.message) == (Status.OK, "dependencies import (trio 0.35.0, h2 4.4.1)")
    bad = rules.dependencies({"trio": "0.35.0"}, {"zeroconf": "ModuleNotFoundError: No module named 'zeroconf'"})
    assert bad.status is Status.FAIL
    assert "cannot import zeroconf" in bad.message and "install" in (bad.hint or "")


def home(**kw: object) -> rules.HomeFacts:
    return rules.HomeFacts(Path("/x/.mesh"), **kw)  # type: ignore[arg-type]


def test_mesh_home_states() -> None:
    private = rules.mesh_home(home(exists=True, is_dir=True, writable=True, mode=0o700), pre=False)
    assert private.status is Status.OK and "mode 0700" in private.message

    group = rules.mesh_home(home(exists=True, is_dir=True, writable=True, mode=0o750), pre=False)
    assert group.status is Status.WARN
    assert group.message.startswith("MESH_HOME /x/.mesh is readable by group (mode 0750)")
    assert group.hint == "chmod 700 /x/.mesh"
    both = rules.mesh_home(home(exists=True, is_dir=True, writable=True, mode=0o755), pre=False)
    assert "readable by group and others" in both.message

    missing = rules.mesh_home(home(exists=False, ancestor=Path("/x"), ancestor_writable=True), pre=False)
    assert missing.status is Status.FAIL and "mesh up --detach" in (missing.hint or "")
    assert "--pre" in (missing.hint or "")

    creatable = rules.mesh_home(home(exists=False, ancestor=Path("/x"), ancestor_writable=True), pre=True)
    assert creatable.status is Status.OK and "can create it in /x" in creatable.message
    not_creatable = rules.mesh_home(home(exists=False, ancestor=Path("/"), ancestor_writable=False), pre=True)
    assert not_creatable.status is Status.FAIL and "/ is not writable" in not_creatable.message

    a_file = rules.mesh_home(home(exists=True, is_dir=False), pre=True)
    assert a_file.status is Status.FAIL and "not a directory" in a_file.message
    read_only = rules.mesh_home(home(exists=True, is_dir=True, writable=False, mode=0o500), pre=False)
    assert read_only.status is Status.FAIL and "not writable" in read_only.message


def test_port_free() -> None:
    assert rules.port_free("127.0.0.1:4190", None).status is Status.OK
    used = rules.port_free("127.0.0.1:4190", OSError(errno.EADDRINUSE, "Address already in use"))
    assert used.status is Status.FAIL and "in use" in used.message
    assert "mesh status" in (used.hint or "") and "--listen" in (used.hint or "")
    foreign = rules.port_free("10.9.9.9:4190", OSError(errno.EADDRNOTAVAIL, "Cannot assign requested address"))
    assert "Cannot assign requested address" in foreign.message


def test_on_path(tmp_path: Path) -> None:
    this = tmp_path / "venv" / "bin" / "mesh"
    this.parent.mkdir(parents=True)
    this.write_text("")
    assert rules.on_path(str(this), str(this)).status is Status.OK
    missing = rules.on_path(None, str(this))
    assert missing.status is Status.WARN and f"add {this.parent} to PATH" in (missing.hint or "")
    other = tmp_path / "other" / "mesh"
    other.parent.mkdir()
    other.write_text("")
    elsewhere = rules.on_path(str(other), str(this))
    assert elsewhere.status is Status.WARN and "not this installation" in elsewhere.message


def test_cert_validity() -> None:
    def check(not_before: datetime, not_after: datetime):  # noqa: ANN202
        return rules.cert_validity(
            "issuer certificate", not_before, not_after, NOW, warn_below=timedelta(days=60), hint="rotate"
        )

    good = check(NOW - timedelta(days=1), NOW + timedelta(days=364))
    assert good.status is Status.OK and "valid for 364d more" in good.message
    soon = check(NOW - timedelta(days=300), NOW + timedelta(days=29, hours=23))
    assert (soon.status, soon.hint) == (Status.WARN, "rotate")
    assert "expires in 29d 23h (on 2026-07-01T11:00:00Z)" in soon.message
    gone = check(NOW - timedelta(days=365), NOW - timedelta(hours=2))
    assert gone.status is Status.FAIL and "expired 2h ago" in gone.message
    future = check(NOW + timedelta(hours=1), NOW + timedelta(days=365))
    assert future.status is Status.FAIL and "not valid before" in future.message and "clock" in (future.hint or "")


def test_key_permissions() -> None:
    root = Path("/x/.mesh")
    tight = [rules.FileMode(root / "ca", 0o700, is_dir=True), rules.FileMode(root / "ca/root.key", 0o600)]
    good = rules.key_permissions(tight, root)
    assert good.status is Status.OK and "ca/, ca/root.key" in good.message
    loose = tight + [rules.FileMode(root / "ca/issuer.key", 0o644), rules.FileMode(root / "operator", 0o755, is_dir=True)]
    bad = rules.key_permissions(loose, root)
    assert bad.status is Status.WARN
    assert "ca/issuer.key is 0644" in bad.message and "operator/ is 0755" in bad.message
    assert bad.hint == "chmod 600 /x/.mesh/ca/issuer.key; chmod 700 /x/.mesh/operator"


def test_bundle_has_root() -> None:
    assert rules.bundle_has_root(["sha256:aa", "sha256:bb"], "sha256:bb").message.endswith("(2 trust anchors)")
    missing = rules.bundle_has_root(["sha256:aa"], "sha256:bb")
    assert missing.status is Status.FAIL and "cat ca/root.pem >> ca/bundle.pem" in (missing.hint or "")


def test_controller_unreachable_says_whether_the_process_is_gone() -> None:
    log = Path("/x/.mesh/run/controller.log")
    gone = rules.controller_unreachable("127.0.0.1:4190", "connection refused", pid=42, pid_alive=False, log_path=log)
    assert gone.status is Status.FAIL
    assert gone.message.endswith("its process (pid 42) is gone")
    assert "mesh up --detach" in (gone.hint or "") and str(log) in (gone.hint or "") and "mesh status" in (gone.hint or "")
    stuck = rules.controller_unreachable("127.0.0.1:4190", "timed out", pid=42, pid_alive=True, log_path=log)
    assert "alive but does not accept connections" in stuck.message
    unknown = rules.controller_unreachable("127.0.0.1:4190", "timed out", pid=None, pid_alive=None, log_path=log)
    assert "pid" not in unknown.message


def test_version_match() -> None:
    assert rules.version_match("0.1.0", "0.1.0").status is Status.OK
    other = rules.version_match("0.0.9", "0.1.0")
    assert other.status is Status.WARN and "0.0.9" in other.message and "mesh up --detach" in (other.hint or "")


@pytest.mark.parametrize(
    ("skew", "uncertainty", "status"),
    [(0.01, 0.02, Status.OK), (-4.9, 0.0, Status.OK), (5.5, 0.1, Status.WARN), (-7.0, 0.0, Status.WARN),
     (5.05, 0.1, Status.OK), (61.0, 0.1, Status.FAIL), (-120.0, 1.0, Status.FAIL)],
)
def test_clock_skew(skew: float, uncertainty: float, status: Status) -> None:
    result = rules.clock_skew(skew, uncertainty)
    assert result.status is status
    if status is not Status.OK:
        assert "NTP" in (result.hint or "")
        assert ("ahead" if skew > 0 else "behind") in result.message


def test_status_summary() -> None:
    status = {
        "controller": {"state_version": 7, "config_version": 2},
        "services": {"web": [{}, {}], "db": [{}]},
        "watches": [{}, {}, {}],
    }
    assert rules.status_summary(status).message == (
        "GET /v1/status: 2 services, 3 endpoints, 3 proxies watching (state version 7, config version 2)"
    )


def test_zeroconf_and_controller_advert() -> None:
    assert rules.zeroconf(True, "seen in 0.01 s").status is Status.OK
    broken = rules.zeroconf(False, "no browser saw it")
    assert broken.status is Status.FAIL and "multicast" in (broken.hint or "")

    kw = {"expected_port": 4190, "expected_identity": "spiffe://td/svc/mesh-controller", "where": "127.0.0.1", "timeout": 3.0}
    found = rules.Advert("127.0.0.1", 4190, "spiffe://td/svc/mesh-controller", "0.1.0")
    assert rules.controller_advert(found, **kw).status is Status.OK  # type: ignore[arg-type]
    none = rules.controller_advert(None, **kw)  # type: ignore[arg-type]
    assert none.status is Status.WARN and "within 3 s" in none.message
    other = rules.controller_advert(rules.Advert("127.0.0.1", 5555, found.identity, "0.1.0"), **kw)  # type: ignore[arg-type]
    assert other.status is Status.WARN and "5555" in other.message


# -- proxies ---------------------------------------------------------------------------

ENTRY = {
    "address": "127.0.0.1:4143",
    "identity": "spiffe://td/svc/web",
    "admin_port": 4191,
    "instance": "web-1",
    "mesh_version": "0.1.0",
    "watching": True,
    "acked_version": 5,
}


def facts(**kw: object) -> rules.ProxyFacts:
    base: dict[str, object] = {
        "admin": "127.0.0.1:4143",  # the inbound listener: admin pages over mTLS
        "ready_status": 200,
        "config": {
            "version": "0.1.0",
            "certificate_expiry": (NOW + timedelta(hours=20)).isoformat(),
            "controller": {"connected": True, "snapshot_version": 5, "config_version": 1},
        },
        "tls_identity": "spiffe://td/svc/web",
        "tls_not_before": NOW - timedelta(hours=4),
        "tls_not_after": NOW + timedelta(hours=20),
    }
    base.update(kw)
    return rules.ProxyFacts(**base)  # type: ignore[arg-type]


def proxy(entry: dict | None = None, state_version: int = 5, **kw: object):  # noqa: ANN201
    return rules.proxy("web", entry or ENTRY, facts(**kw), state_version=state_version, cli_version="0.1.0", now=NOW)


def test_proxy_healthy_is_one_line() -> None:
    result = proxy()
    assert result.status is Status.OK
    assert result.message == "web 127.0.0.1:4143 (web-1): ready, certificate 20h left, config current (v5), mesh 0.1.0"


def test_proxy_not_ready_or_gone() -> None:
    draining = proxy(ready_status=503)
    assert draining.status is Status.FAIL and "GET /ready answered 503" in draining.message
    gone = proxy(ready_status=None, ready_error="connection refused", config=None, config_error=None)
    assert gone.status is Status.FAIL and "its admin pages at 127.0.0.1:4143 do not answer" in gone.message
    assert "curl http://127.0.0.1:4191/config" in (draining.hint or "")


def test_a_proxy_that_answers_nowhere_is_gone_in_one_sentence() -> None:
    gone = proxy(
        entry={**ENTRY, "watching": False, "acked_version": None, "source": "registration"},
        ready_status=None,
        ready_error="connection refused",
        config=None,
        tls_identity=None,
        tls_error="connection refused",
    )
    assert gone.status is Status.FAIL
    assert gone.message == (
        "web 127.0.0.1:4143 (web-1): nothing answers at its inbound listener 127.0.0.1:4143 (connection refused): "
        "the proxy is gone"
    )
    assert "30 s" in (gone.hint or "") and "\n" not in (gone.hint or "")


def test_a_registered_proxy_whose_watch_ended() -> None:
    ended = proxy(
        entry={**ENTRY, "watching": False, "acked_version": None, "source": "registration"},
        config={**facts().config, "controller": None},  # type: ignore[dict-item]
    )
    assert ended.status is Status.WARN and "not watching the controller (its watch stream ended)" in ended.message


def test_proxy_certificate_freshness_uses_the_life_of_its_certificate() -> None:
    # 2 h left of a 24 h certificate: under 10 %.
    stale = proxy(
        config={"certificate_expiry": (NOW + timedelta(hours=2)).isoformat(), "controller": {"connected": True, "snapshot_version": 5}},
        tls_not_before=NOW - timedelta(hours=22),
        tls_not_after=NOW + timedelta(hours=2),
    )
    assert stale.status is Status.FAIL and "(8% of its life)" in stale.message and "70 %" in (stale.hint or "")
    # 2 h left of a 3 h certificate is fresh.
    short = proxy(
        config={"certificate_expiry": (NOW + timedelta(hours=2)).isoformat(), "controller": {"connected": True, "snapshot_version": 5}},
        tls_not_before=NOW - timedelta(hours=1),
        tls_not_after=NOW + timedelta(hours=2),
    )
    assert short.status is Status.OK
    expired = proxy(
        config={"certificate_expiry": (NOW - timedelta(minutes=5)).isoformat(), "controller": {"connected": True, "snapshot_version": 5}},
    )
    assert expired.status is Status.FAIL and "expired 5m ago" in expired.message


def test_proxy_tls_problems() -> None:
    refused = proxy(tls_identity=None, tls_error="the peer does not trust our certificate's CA")
    assert refused.status is Status.FAIL and "mTLS to its inbound listener failed" in refused.message
    impostor = proxy(tls_identity="spiffe://td/svc/other")
    assert impostor.status is Status.FAIL and "presents spiffe://td/svc/other" in impostor.message


def test_proxy_config_currency() -> None:
    behind = proxy(
        entry={**ENTRY, "acked_version": 3},
        state_version=5,
        config={**facts().config, "controller": {"connected": True, "snapshot_version": 3}},  # type: ignore[dict-item]
    )
    assert behind.status is Status.WARN and "config at snapshot 3, the controller is at 5" in behind.message
    # The proxy's own view counts: it may have caught up since the status was read.
    caught_up = proxy(entry={**ENTRY, "acked_version": 3}, state_version=5)
    assert caught_up.status is Status.OK
    cut_off = proxy(config={**facts().config, "controller": {"connected": False, "snapshot_version": 4}})  # type: ignore[dict-item]
    assert cut_off.status is Status.FAIL and "not connected to the controller (serving with snapshot 4)" in cut_off.message
    zeroconf_only = proxy(
        entry={**ENTRY, "watching": False, "acked_version": None, "instance": "zeroconf:127.0.0.1:4143", "source": "zeroconf"},
        config={**facts().config, "controller": None},  # type: ignore[dict-item]
    )
    assert zeroconf_only.status is Status.WARN and "not watching the controller" in zeroconf_only.message


def test_proxy_version_and_several_problems() -> None:
    result = proxy(entry={**ENTRY, "mesh_version": "0.0.9", "acked_version": 3}, ready_status=503,
                   config={**facts().config, "controller": {"connected": True, "snapshot_version": 3}})  # type: ignore[dict-item]
    assert result.status is Status.FAIL
    assert result.message == (
        "web 127.0.0.1:4143 (web-1): GET /ready answered 503 (draining or not started); "
        "config at snapshot 3, the controller is at 5; runs mesh 0.0.9, this CLI is 0.1.0"
    )
    assert result.hint is not None and len(result.hint.splitlines()) == 3


# -- policy ----------------------------------------------------------------------------


def test_policy_references() -> None:
    assert "no config applied" in rules.policy_references({}, 0, set()).message
    config = {
        "route": [{"service": "reviews"}, {"service": "web"}],
        "policy": [{"service": "ratings", "allow": ["reviews"]}],
    }
    good = rules.policy_references(config, 3, {"reviews", "web", "ratings"})
    assert good.status is Status.OK and good.message == "config v3: 2 routes and 1 policy name services with endpoints"
    one = rules.policy_references(config, 3, {"reviews", "web"})
    assert one.status is Status.WARN
    assert one.message == "config v3: policy[0] names service 'ratings', which has no endpoints"
    assert "mesh status" in (one.hint or "")
    two = rules.policy_references(config, 3, {"web"})
    assert two.message == "config v3: 2 entries name services with no endpoints: route[0] -> reviews, policy[0] -> ratings"


def test_human() -> None:
    assert rules.human(timedelta(days=364, hours=23, minutes=5)) == "364d 23h"
    assert rules.human(timedelta(hours=2)) == "2h"
    assert rules.human(timedelta(seconds=9)) == "9s"
    assert rules.human(timedelta(0)) == "0s"


def test_proxy_that_refused_an_older_config_is_a_warning() -> None:
    config = {
        "version": "0.1.0",
        "certificate_expiry": (NOW + timedelta(hours=20)).isoformat(),
        "controller": {
            "connected": True,
            "address": "127.0.0.1:4190",
            "snapshot_version": 1,
            "config_version": 4,
            "refused": {"controller": "127.0.0.1:4190", "config_version": 0, "kept_version": 4},
        },
    }
    result = proxy(state_version=1, config=config)
    assert result.status is Status.WARN
    assert "kept config version 4: the controller at 127.0.0.1:4190 offers the older version 0" in result.message
    assert result.hint and "backup" in result.hint


def test_proxy_watching_another_controller_is_current_by_config_version() -> None:
    control = {"connected": True, "address": "127.0.0.1:5190", "snapshot_version": 2, "config_version": 7}
    config = {"version": "0.1.0", "certificate_expiry": (NOW + timedelta(hours=20)).isoformat(), "controller": control}
    entry = {**ENTRY, "watching": False, "acked_version": None}

    def check(config_version: int) -> rules.CheckResult:
        return rules.proxy(
            "web",
            entry,
            facts(config=config),
            state_version=40,
            cli_version="0.1.0",
            now=NOW,
            config_version=config_version,
            controller_address="127.0.0.1:4190",
        )

    assert check(7).status is Status.OK and "via the controller at 127.0.0.1:5190" in check(7).message
    behind = check(8)
    assert behind.status is Status.WARN and "config version 7 from the controller at 127.0.0.1:5190" in behind.message


def test_revocations_in_force() -> None:
    from mesh.debug.check._rules import revocations

    assert revocations(200, {"revocations": []}).message == "no certificate is revoked"
    listed = [
        {"serial": f"{n:040x}", "identity": f"spiffe://td/svc/s{n}", "reason": "leaked" if n == 1 else ""}
        for n in range(1, 6)
    ]
    result = revocations(200, {"revocations": listed})
    assert result.status.name == "OK"
    assert result.message == (
        "5 revoked certificate(s) in force, refused by every proxy: 000000000000… of spiffe://td/svc/s1 (leaked), "
        "000000000000… of spiffe://td/svc/s2, 000000000000… of spiffe://td/svc/s3 and 2 more"
    )
    old = revocations(404, {"error": "no such endpoint: /v1/revocations"})
    assert old.status.name == "WARN" and "answered 404: no such endpoint" in old.message
