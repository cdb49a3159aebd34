"""Golden files for `mesh check`'s output: fixed reports rendered to text (Unicode, ASCII) and JSON.

Regenerate after an intended change with ``MESH_UPDATE_GOLDEN=1 pytest tests/unit/debug``
and review the diff of tests/testdata/check/.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from mesh.debug.check import (
    ASCII,
    UNICODE,
    Category,
    Checker,
    CheckResult,
    Report,
    Status,
    render_text,
    report_to_json,
    run_checks,
    symbols_for,
)
from mesh.debug.check._render import category_lines, line_text, summary_lines

GOLDEN = Path(__file__).resolve().parents[2] / "testdata" / "check"
UPDATE = os.environ.get("MESH_UPDATE_GOLDEN") == "1"


def golden(name: str, actual: str) -> None:
    path = GOLDEN / name
    if UPDATE:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(actual, encoding="utf-8")
        return
    if not path.exists():
        pytest.fail(f"{path} is missing: run with MESH_UPDATE_GOLDEN=1 to create it")
    assert actual == path.read_text(encoding="utf-8"), f"{name} differs; MESH_UPDATE_GOLDEN=1 regenerates it"


def fixed(result: CheckResult):  # noqa: ANN201 - a checker's callable
    return lambda: result


def healthy_report() -> Report:
    environment = [
        Checker("environment", "Python 3.11 or newer", fixed(CheckResult.ok("Python 3.11.7 (mesh needs 3.11 or newer)"))),
        Checker(
            "environment",
            "dependencies import",
            fixed(CheckResult.ok("dependencies import (trio 0.35.0, h2 4.4.1, httptools 0.9.0)")),
        ),
        Checker(
            "environment",
            "MESH_HOME exists and is writable",
            fixed(CheckResult.ok("MESH_HOME /home/ada/.mesh is writable and private (mode 0700)")),
        ),
    ]
    control = [
        Checker(
            "control plane",
            "the controller accepts TCP connections",
            fixed(CheckResult.ok("the controller accepts connections at 127.0.0.1:4190")),
        ),
        Checker(
            "control plane",
            "clock skew with the controller is under 5 s",
            fixed(CheckResult.ok("clock skew with the controller is 0.01 s (under 5 s)")),
        ),
    ]
    return run_checks([Category("environment", environment), Category("control plane", control)])


def mixed_report() -> Report:
    """Warnings, a fatal failure, skipped checks and a skipped category: every shape of line."""
    environment = [
        Checker("environment", "Python 3.11 or newer", fixed(CheckResult.ok("Python 3.11.7 (mesh needs 3.11 or newer)"))),
        Checker(
            "environment",
            "MESH_HOME exists and is writable",
            fixed(
                CheckResult.warn(
                    "MESH_HOME /x/.mesh is readable by group and others (mode 0755); it holds private keys",
                    "chmod 700 /x/.mesh",
                )
            ),
        ),
    ]
    ca = [
        Checker(
            "ca",
            "issuer certificate is valid (warn under 60 days left)",
            fixed(
                CheckResult.warn(
                    "issuer certificate expires in 29d 23h (on 2026-12-26T10:00:00Z)",
                    "run `mesh ca rotate` for a new issuer",
                )
            ),
        ),
    ]
    control = [
        Checker(
            "control plane",
            "controller.json exists",
            fixed(CheckResult.ok("controller.json: the controller is at 127.0.0.1:4190")),
            fatal=True,
        ),
        Checker(
            "control plane",
            "the controller accepts TCP connections",
            fixed(
                CheckResult.fail(
                    "cannot connect to the controller at 127.0.0.1:4190: connection refused; its process (pid 4242) is gone",
                    "start it with `mesh up --detach`; if it was killed, the end of /x/.mesh/run/controller.log says why",
                )
            ),
            fatal=True,
            blocked_reason="the controller is not reachable",
        ),
        Checker("control plane", "the controller's version matches the CLI's", fixed(CheckResult.ok("unused"))),
        Checker("control plane", "clock skew with the controller is under 5 s", fixed(CheckResult.ok("unused"))),
    ]
    discovery = [
        Checker("discovery", "zeroconf works", fixed(CheckResult.ok("zeroconf works: probe seen on 127.0.0.1 in 0.01 s"))),
        Checker(
            "discovery",
            "zeroconf sees the controller's _mesh-ctl._tcp record",
            fixed(CheckResult.ok("unused")),
            needs=("control plane",),
        ),
    ]
    return run_checks(
        [
            Category("environment", environment),
            Category("ca", ca, needs=("environment",)),
            Category("control plane", control, needs=("environment",)),
            Category("discovery", discovery, needs=("environment",)),
            Category("data plane", lambda: [], needs=("control plane",)),
            Category("policy", [], needs=("control plane",)),
        ]
    )


def proxies_report() -> Report:
    """The data plane: one line per proxy instance, a multi-line hint when several things are wrong."""
    proxies = [
        Checker(
            "data plane",
            "proxy ratings",
            fixed(CheckResult.ok("ratings 127.0.0.1:4143 (ratings-1): ready, certificate 23h 59m left, config current (v5), mesh 0.1.0")),
        ),
        Checker(
            "data plane",
            "proxy reviews",
            fixed(
                CheckResult.warn(
                    "reviews 127.0.0.1:4153 (reviews-2): config at snapshot 3, the controller is at 5",
                    "it should catch up within seconds; if it does not, its log says why",
                )
            ),
        ),
        Checker(
            "data plane",
            "proxy web",
            fixed(
                CheckResult.fail(
                    "web 127.0.0.1:4163 (web-3): GET /ready answered 503 (draining or not started); "
                    "runs mesh 0.0.9, this CLI is 0.1.0",
                    "- see the proxy's log; http://127.0.0.1:4191/config shows its state\n- restart it with this version of mesh",
                )
            ),
        ),
    ]
    return run_checks([Category("data plane", lambda: proxies)])


def _etcd_health(down: int) -> dict:
    members = [
        {
            "name": f"m{i}",
            "endpoint": f"10.0.0.{i + 1}:2379",
            "reachable": i >= down,
            "leader": i == 2 and down < 2,
            "rtt_ms": 0.8 + i if i >= down else None,
            "error": None if i >= down and down < 2 else ("no leader" if i >= down else "connection refused"),
        }
        for i in range(3)
    ]
    quorum = down < 2
    return {
        "backend": "etcd",
        "location": "etcd://10.0.0.1:2379,10.0.0.2:2379,10.0.0.3:2379/mesh",
        "writable": quorum,
        "reason": None if quorum else "0 of 3 members have a leader: quorum needs 2",
        "read_only_reason": None
        if quorum
        else "etcd://10.0.0.1:2379,10.0.0.2:2379,10.0.0.3:2379/mesh cannot take writes: 0 of 3 members have a leader: quorum needs 2",
        "quorum": quorum,
        "leader": "m2" if quorum else None,
        "members": members,
        "cluster_size": 3,
        "config_version": 7,
        "controllers": ["10.0.0.1:4190", "10.0.0.2:4190"],
        "this_controller": "10.0.0.2:4190",
    }


def store_report() -> Report:
    """The store category with the real rules: one member lost (a warning), then two (read-only)."""
    from mesh.debug.check import _rules as rules

    categories = []
    for down in (1, 2):
        health = _etcd_health(down)
        categories.append(
            Category(
                "store",
                [
                    Checker("store", "the store takes writes", lambda h=health: rules.store_writable(h)),
                    Checker("store", "the controllers that share the store", lambda h=health: rules.store_controllers(h)),
                    Checker("store", "every etcd member answers", lambda h=health: rules.store_members(h)),
                    Checker("store", "etcd has a leader and a quorum", lambda h=health: rules.store_quorum(h)),
                    Checker("store", "round-trip time to etcd is under 100 ms", lambda h=health: rules.store_rtt(h)),
                ],
            )
        )
    embedded = {
        "backend": "embedded",
        "location": "/home/ada/.mesh/state/mesh.db",
        "writable": True,
        "revision": 42,
        "size_bytes": 98304,
        "config_version": 3,
        "controllers": ["127.0.0.1:4190"],
        "this_controller": "127.0.0.1:4190",
    }
    categories.append(
        Category(
            "store",
            [
                Checker("store", "the store takes writes", lambda: rules.store_writable(embedded)),
                Checker("store", "the controllers that share the store", lambda: rules.store_controllers(embedded)),
            ],
        )
    )
    return run_checks(categories)


REPORTS = [
    ("healthy", healthy_report),
    ("mixed", mixed_report),
    ("proxies", proxies_report),
    ("store", store_report),
]


@pytest.mark.parametrize(
    ("name", "report"),
    REPORTS,
)
def test_text_unicode(name: str, report) -> None:  # noqa: ANN001
    golden(f"{name}.txt", render_text(report(), UNICODE))


@pytest.mark.parametrize(
    ("name", "report"),
    REPORTS,
)
def test_text_ascii(name: str, report) -> None:  # noqa: ANN001
    text = render_text(report(), ASCII)
    text.encode("ascii")  # nothing outside ASCII
    golden(f"{name}.ascii.txt", text)


@pytest.mark.parametrize(
    ("name", "report"),
    REPORTS,
)
def test_json(name: str, report) -> None:  # noqa: ANN001
    golden(f"{name}.json", json.dumps(report_to_json(report()), indent=2) + "\n")


def test_json_shape_and_success() -> None:
    data = report_to_json(mixed_report())
    assert data["success"] is False
    assert [c["name"] for c in data["categories"]] == [
        "environment",
        "ca",
        "control plane",
        "discovery",
        "data plane",
        "policy",
    ]
    for category in data["categories"]:
        for check in category["checks"]:
            assert set(check) == {"description", "status", "message", "hint"}
            assert check["status"] in {"ok", "warn", "fail", "skipped"}
    assert report_to_json(healthy_report())["success"] is True


def test_streamed_categories_equal_the_whole_text() -> None:
    # The CLI prints each category as soon as it is done, then the summary.
    report = mixed_report()
    lines = []
    for index, category in enumerate(report.categories):
        lines += category_lines(category, UNICODE, first=index == 0)
    lines += summary_lines(report, UNICODE)
    assert "".join(line_text(line) + "\n" for line in lines) == render_text(report, UNICODE)


def test_summary_says_the_worst_and_counts() -> None:
    assert render_text(healthy_report()).rstrip().endswith("Status check results are \u2714 (5 passed)")
    assert render_text(mixed_report()).rstrip().splitlines()[-1].endswith("Status check results are \u00d7 (1 failed, 2 warnings, 3 passed, 5 skipped)")
    warn_only = run_checks([Category("x", [Checker("x", "d", fixed(CheckResult.warn("w", "h")))])])
    assert warn_only.success
    assert warn_only.worst is Status.WARN
    assert render_text(warn_only).rstrip().endswith("Status check results are \u203c (1 warning)")


@pytest.mark.parametrize(
    ("encoding", "symbols"),
    [("utf-8", UNICODE), ("UTF8", UNICODE), ("ascii", ASCII), ("ANSI_X3.4-1968", ASCII), ("latin-1", ASCII), (None, ASCII)],
)
def test_symbols_follow_the_output_encoding(encoding: str | None, symbols: object) -> None:
    assert symbols_for(encoding) is symbols


def test_ascii_replaces_what_ascii_cannot_say() -> None:
    report = run_checks([Category("x", [Checker("x", "d", fixed(CheckResult.ok("caf\u00e9 \u2192 ok")))])])
    assert "[ok] caf? ? ok" in render_text(report, ASCII)
