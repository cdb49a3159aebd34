"""What `mesh up` runs for a mesh.toml (or the demo): argv only, no process started."""

from __future__ import annotations

from pathlib import Path

from mesh.config import load_config_text
from mesh.home import MeshHome
from mesh.inject._fleet import demo_units, units_from_config
from mesh.inject._reach import plan_reach
from mesh.self_command import mesh_command

CONFIG = """
[discovery]
interfaces = ["10.0.0.5"]

[[service]]
name = "web"
command = ["python", "-m", "http.server"]
labels = { version = "v1" }
upstreams = ["db"]
health = "/health"
port = 8080

[[service]]
name = "worker"
command = ["./worker"]
replicas = 2
port = 9000
protocol = "tcp"

[[gateway]]
listen = "127.0.0.1:9080"
to = "web"
"""


def sidecar_flags(argv: tuple[str, ...]) -> list[str]:
    """The `mesh inject` options, without `python -m mesh --home H inject` and the app's command."""
    return list(argv[argv.index("inject") + 1 : argv.index("--")])


def test_services_follow_the_discovery_config(tmp_path: Path) -> None:
    home = MeshHome(tmp_path / "home")
    config = load_config_text(CONFIG, "mesh.toml")
    units = units_from_config(home, config, plan_reach(config.discovery))
    web, worker1, worker2, gateway = units
    prefix = (*mesh_command(), "--home", str(home.root))
    assert web.argv[: len(prefix)] == prefix
    assert sidecar_flags(web.argv) == [
        "--name", "web", "--label", "version=v1", "--upstream", "db", "--health", "/health", "--port", "8080",
        "--inbound", "10.0.0.5:0", "--interface", "10.0.0.5",
    ]  # fmt: skip
    assert web.argv[web.argv.index("--") + 1 :] == ("python", "-m", "http.server")
    # A fixed port fits one replica only.
    assert (worker1.name, worker2.name) == ("worker-1", "worker-2")
    assert "--port" not in sidecar_flags(worker1.argv) and "--inbound" in sidecar_flags(worker1.argv)
    # A declared protocol reaches the sidecar (auto, the default, is left out).
    assert sidecar_flags(worker1.argv)[sidecar_flags(worker1.argv).index("--protocol") + 1] == "tcp"
    assert "--protocol" not in sidecar_flags(web.argv)
    # The gateway discovers where the services do; its own listen address is its config's.
    assert gateway.argv[gateway.argv.index("gateway") :] == (
        "gateway", "--listen", "127.0.0.1:9080", "--to", "web", "--interface", "10.0.0.5",
    )  # fmt: skip


def test_without_a_reach_the_defaults_stay(tmp_path: Path) -> None:
    home = MeshHome(tmp_path / "home")
    config = load_config_text(CONFIG, "mesh.toml")
    web = units_from_config(home, config)[0]
    assert not {"--inbound", "--interface", "--admin", "--lan"} & set(sidecar_flags(web.argv))


def test_static_discovery_reaches_sidecars_and_gateways(tmp_path: Path) -> None:
    home = MeshHome(tmp_path / "home")
    config = load_config_text(
        '[discovery]\nmode = "static"\nendpoints_file = "/etc/mesh/e.toml"\n'
        '[[service]]\nname = "web"\ncommand = ["./web"]\n[[gateway]]\nlisten = "127.0.0.1:0"\nto = "web"\n',
        "mesh.toml",
    )
    web, gateway = units_from_config(home, config, plan_reach(config.discovery))
    assert sidecar_flags(web.argv)[-3:] == ["--no-zeroconf", "--endpoints", "/etc/mesh/e.toml"]
    assert gateway.argv[-3:] == ("--no-zeroconf", "--endpoints", "/etc/mesh/e.toml")


def test_the_demo_follows_lan_and_advertise(tmp_path: Path) -> None:
    home = MeshHome(tmp_path / "home")
    units = demo_units(home, traffic=True, reach=plan_reach(None, advertise="10.0.0.7", lan=True))
    injected = [u for u in units if "inject" in u.argv]
    assert len(injected) == 6  # productpage, details, reviews v1-v3, ratings
    for unit in injected:
        flags = sidecar_flags(unit.argv)
        assert flags[flags.index("--inbound") :] == [
            "--inbound", "0.0.0.0:0", "--advertise", "10.0.0.7", "--lan",
        ], unit.name  # fmt: skip
    gateway = next(u for u in units if u.name == "gateway")
    assert gateway.argv[-1] == "--lan"
    assert [u.name for u in units][-1] == "traffic"


def test_telemetry_reaches_every_sidecar_and_gateway(tmp_path: Path) -> None:
    from dataclasses import replace

    from mesh.config import TelemetryConfig

    home = MeshHome(tmp_path / "home")
    config = load_config_text(
        '[telemetry]\notlp_endpoint = "http://127.0.0.1:4318"\ntrace_sample = 0.25\naccess_log = "/var/log/mesh.log"\n'
        '[[service]]\nname = "web"\ncommand = ["./web"]\n[[gateway]]\nlisten = "127.0.0.1:0"\nto = "web"\n',
        "mesh.toml",
    )
    web, gateway = units_from_config(home, config)
    telemetry = ["--otlp-endpoint", "http://127.0.0.1:4318", "--trace-sample", "0.25", "--access-log", "/var/log/mesh.log"]
    assert sidecar_flags(web.argv)[-6:] == telemetry
    assert list(gateway.argv[-6:]) == telemetry
    # `mesh up`'s flags in place of the config's; nothing at all when nothing is set.
    only_logs = replace(config.telemetry, otlp_endpoint=None)
    assert sidecar_flags(units_from_config(home, config, telemetry=only_logs)[0].argv)[-2:] == ["--access-log", "/var/log/mesh.log"]
    for unit in demo_units(home, traffic=False, telemetry=TelemetryConfig()):
        assert not {"--otlp-endpoint", "--trace-sample", "--access-log"} & set(unit.argv)
    demo = demo_units(home, traffic=False, telemetry=TelemetryConfig(otlp_endpoint="http://127.0.0.1:4318"))
    assert all("--otlp-endpoint" in unit.argv for unit in demo)


def test_a_relative_access_log_is_next_to_the_config(tmp_path: Path) -> None:
    from mesh.config import load_config

    path = tmp_path / "conf" / "mesh.toml"
    path.parent.mkdir()
    path.write_text('[telemetry]\naccess_log = "logs/access.log"\n')
    assert load_config(path).telemetry.access_log == str(tmp_path / "conf" / "logs" / "access.log")
    path.write_text('[telemetry]\naccess_log = "-"\n')
    assert load_config(path).telemetry.access_log == "-"


def test_a_crashed_units_last_lines_are_the_apps_not_the_sidecars() -> None:
    from mesh.inject._fleet import app_lines

    lines = [
        "[mesh inject web] INFO proxy web ready: inbound 127.0.0.1:1",
        '{"time":"2025-01-01T00:00:00.000Z","proxy":"web","direction":"inbound"}',  # --access-log -
        "Traceback (most recent call last):",
        "KeyError: 'x'",
    ]
    assert app_lines(lines) == ["Traceback (most recent call last):", "KeyError: 'x'"]
    assert app_lines(lines[:2]) == lines[:2]  # nothing of the app's: the sidecar's lines then
