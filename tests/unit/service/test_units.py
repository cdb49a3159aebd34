"""The systemd units of `mesh install-service`, as text (mesh/service/_units.py)."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from mesh import sd_notify
from mesh.service import ServicePlan, env_value, exec_line, exec_word, render_env, render_unit

MESH = ("/usr/bin/python3", "/usr/local/bin/mesh")


def plan(kind: str = "inject", name: str = "web", *, user: bool = False, args: tuple[str, ...] = ()) -> ServicePlan:
    return ServicePlan(
        kind=kind,
        name=name,
        mesh=MESH,
        args=args or (kind, "--name", name, "--", "./web", "--port", "8080"),
        home=Path("/var/lib/mesh"),
        user=user,
        env_file=Path(f"/etc/mesh/mesh-{name}.env"),
        path="/usr/local/bin:/usr/bin:/bin",
        working_directory=Path("/srv/web") if kind != "controller" else None,
        ready_timeout=20,
        version="0.1.0",
    )


def lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line and not line.startswith("#")]


@pytest.mark.parametrize(
    ("arg", "word"),
    [
        ("plain-word_1.2/x=y:z,@+", "plain-word_1.2/x=y:z,@+"),
        ("two words", '"two words"'),
        ("100%", "100%%"),  # a specifier otherwise
        ("$HOME", '"$$HOME"'),  # a variable otherwise
        ('say "hi"', '"say \\"hi\\""'),
        ("back\\slash", '"back\\\\slash"'),
        ("line\nbreak\ttab", '"line\\nbreak\\ttab"'),
        (";", '";"'),  # a lone ; separated commands in old systemd
        ("", '""'),
    ],
)
def test_exec_words_reach_the_process_as_they_were(arg: str, word: str) -> None:
    assert exec_word(arg) == word


def test_env_values_are_quoted() -> None:
    assert env_value('/a b/"c"$d`e\\') == '"/a b/\\"c\\"\\$d\\`e\\\\"'


def test_injected_service_unit_is_one_unit_for_app_and_sidecar() -> None:
    text = render_unit(plan())
    body = lines(text)
    assert body[0] == "[Unit]"
    assert "Wants=network-online.target" in body
    # Ordering only: a host without a local controller starts the service as well.
    assert "After=network-online.target mesh-controller.service mesh-up.service" in body
    assert not any(line.startswith(("Requires=", "BindsTo=")) for line in body)
    # Ready means the app answers behind its sidecar; SIGTERM to `mesh inject` alone, which
    # stops the app first, then drains the sidecar.
    for expected in ("Type=notify", "NotifyAccess=main", "KillMode=mixed", "SuccessExitStatus=143",
                     "TimeoutStartSec=50s", "TimeoutStopSec=45s", "Restart=on-failure",
                     "EnvironmentFile=/etc/mesh/mesh-web.env", "WorkingDirectory=/srv/web",
                     "WantedBy=multi-user.target"):
        assert expected in body, expected
    assert "ExecStart=/usr/bin/python3 /usr/local/bin/mesh inject --name web -- ./web --port 8080" in body
    assert text.startswith("# Written by `mesh install-service inject` (mesh 0.1.0).")


def test_user_units_belong_to_the_users_manager() -> None:
    body = lines(render_unit(plan(user=True)))
    assert "WantedBy=default.target" in body
    assert not any("network-online.target" in line for line in body)  # no such target in a user manager
    assert "After=mesh-controller.service mesh-up.service" in body


def test_controller_unit_has_no_working_directory_and_no_exit_status_exception() -> None:
    body = lines(render_unit(plan("controller", "controller", args=("controller", "--listen", "0.0.0.0:4190"))))
    assert "ExecStart=/usr/bin/python3 /usr/local/bin/mesh controller --listen 0.0.0.0:4190" in body
    assert not any(line.startswith(("WorkingDirectory=", "SuccessExitStatus=")) for line in body)
    assert "After=network-online.target" in body
    assert "Type=notify" in body


def test_environment_file_names_the_home_and_the_path() -> None:
    text = render_env(plan())
    assert 'MESH_HOME="/var/lib/mesh"' in text.splitlines()
    assert 'PATH="/usr/local/bin:/usr/bin:/bin"' in text.splitlines()


def test_exec_line_quotes_each_word() -> None:
    assert exec_line(["/usr/bin/x", "a b", "c"]) == '/usr/bin/x "a b" c'


def test_notify_reaches_a_datagram_socket(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "notify"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
        server.bind(str(path))
        monkeypatch.setenv("NOTIFY_SOCKET", str(path))
        assert sd_notify.ready("serving")
        assert server.recv(4096) == b"READY=1\nSTATUS=serving"


def test_notify_outside_systemd_does_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert not sd_notify.ready("serving")
    monkeypatch.setenv("NOTIFY_SOCKET", "/nonexistent/socket")
    assert not sd_notify.stopping("bye")  # logged, never raised


def test_journal_detection_compares_device_and_inode(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    info = os.fstat(2)
    monkeypatch.setenv("JOURNAL_STREAM", f"{info.st_dev}:{info.st_ino}")
    assert sd_notify.logs_to_journal()
    monkeypatch.setenv("JOURNAL_STREAM", "1:2")
    assert not sd_notify.logs_to_journal()
    monkeypatch.delenv("JOURNAL_STREAM")
    assert not sd_notify.logs_to_journal()
