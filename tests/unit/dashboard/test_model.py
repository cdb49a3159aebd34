"""Topics and the values the page is drawn from."""

from __future__ import annotations

from mesh.dashboard._model import (
    History,
    Topics,
    faults_topic,
    routed_services,
    routes_topic,
    stats_topic,
    status_topic,
)


def stats_answer(at: float, rps: float, p99: float = 10.0) -> dict:
    row = {"rps": rps, "success_rate": 1.0, "latency_ms": {"p50": 1.0, "p95": 5.0, "p99": p99}, "requests": int(rps * 10)}
    return {
        "time": at,
        "services": [{"service": "web", "version": None, **row}],
        "versions": [{"service": "web", "version": "v1", **row}, {"service": "web", "version": "v2", **row}],
        "edges": [
            {"src": "client", "dst": "web", "mtls": True, "rps": rps, "requests": 3, "success_rate": 1.0, "latency_ms": {"p99": p99}, "total_requests": 9, "src_identities": [], "dst_identities": [], "seen_by": ["source"]}
        ],
        "proxies": [{"instance": "web-1", "reachable": True, "window_seconds": 60.0}, {"instance": "web-2", "reachable": False, "error": "refused", "window_seconds": None}],
        "unreachable": [{"instance": "web-2", "service": "web", "admin": "127.0.0.1:2", "error": "refused"}],
    }


def test_history_keeps_the_last_minutes_per_service_and_version() -> None:
    history = History(keep=30)
    for at in range(1000, 1060, 10):
        history.add(stats_answer(float(at), rps=at - 1000))
    series = history.to_dict()["series"]["web"]
    assert set(series) == {"", "v1", "v2"}
    assert [p[0] for p in series[""]] == [1020.0, 1030.0, 1040.0, 1050.0]  # older than 30 s dropped
    assert series["v1"][-1] == [1050.0, 50, 1.0, 10.0, 500]
    # A service that is gone leaves the history once its points are old.
    history.add({"time": 2000.0, "services": [], "versions": []})
    assert history.to_dict()["series"] == {}


def test_topics_send_each_change_once_per_stream() -> None:
    changes = []
    topics = Topics(lambda: changes.append(1))
    topics.publish("status", {"a": 1})
    topics.publish("stats", {"b": 2})
    first, second = {}, {}
    assert [m.split(b"\n")[1] for m in topics.messages_since(first)] == [b"event: status", b"event: stats"]
    assert topics.messages_since(first) == []
    topics.publish("status", {"a": 3})
    (again,) = topics.messages_since(first)
    assert b'data: {"a":3}' in again
    assert len(topics.messages_since(second)) == 2  # a new stream gets every topic, each at its latest
    assert topics.state() == {"stats": {"b": 2}, "status": {"a": 3}}
    assert len(changes) == 3


def test_status_joins_health_from_the_scrape() -> None:
    status = {
        "controller": {"state_version": 7},
        "services": {
            "web": [
                {"address": "127.0.0.1:1", "instance": "web-1", "labels": {"version": "v1"}, "watching": True, "acked_version": 7, "cert_expiry": 2e9},
                {"address": "127.0.0.1:2", "instance": "web-2", "labels": {"version": "v2"}, "watching": True, "acked_version": 7, "cert_expiry": 2e9},
            ]
        },
        "watches": [{"service": "gateway"}, {"service": "web"}],
        "faults": [],
    }
    topic = status_topic(status, stats_answer(1000.0, 1.0), now=1.9e9)
    web = {e["instance"]: e for e in topic["endpoints"]["web"]}
    assert web["web-1"]["health"] == "ok" and web["web-1"]["config"] == "current"
    assert web["web-2"]["health"] == "fail" and "refused" in web["web-2"]["reason"]
    assert topic["gateways"] == ["gateway"]


def test_stats_topic_has_rows_and_edges_with_p99() -> None:
    topic = stats_topic(stats_answer(1000.0, 2.0, p99=42.0))
    assert [(r["service"], r["version"]) for r in topic["rows"]] == [("web", None), ("web", "v1"), ("web", "v2")]
    (edge,) = topic["edges"]
    assert edge["latency_ms"]["p99"] == 42.0 and edge["mtls"] is True
    assert topic["unreachable"][0]["instance"] == "web-2"


def test_faults_in_force_from_mesh_fault_and_routes() -> None:
    status = {"faults": [
        {"service": "details", "expires_at": 1100.0, "delay_seconds": None, "delay_percent": 20.0, "abort_status": 503, "abort_percent": 20.0},
        {"service": "gone", "expires_at": 900.0, "delay_seconds": 1.0},
    ]}
    config = {"version": 3, "config": {"route": [
        {"service": "reviews", "split": []},
        {"service": "ratings", "name": "slow", "fault": {"delay": "200ms", "delay_percent": 10.0}},
    ]}}
    faults = faults_topic(status, config, now=1000.0)["faults"]
    assert [(f["service"], f["source"], f["route"]) for f in faults] == [("details", "mesh fault", None), ("ratings", "config", "slow")]
    assert faults[0]["seconds_left"] == 100.0 and faults[0]["abort_status"] == 503
    assert faults[1]["delay_seconds"] == 0.2 and faults[1]["expires_at"] is None


def test_routes_and_policies() -> None:
    config = {"version": 4, "config": {"mesh": {"authz_default": "deny"}, "route": [{"service": "reviews"}, {"service": "ratings"}, {"service": "reviews"}], "policy": [{"service": "ratings", "allow": ["reviews"]}]}}
    assert routed_services(config) == ["ratings", "reviews"]
    topic = routes_topic(config, {"reviews": {"routes": [{"name": "route-0"}], "unreachable": ["x: refused"]}, "ratings": {"routes": []}})
    assert topic["config_version"] == 4 and topic["authz_default"] == "deny"
    assert topic["services"]["reviews"] == [{"name": "route-0"}]
    assert topic["policies"] == [{"service": "ratings", "allow": ["reviews"]}]
    assert topic["unreachable"] == ["x: refused"]
