"""oisp-ctl --bus against the real D-Bus service on a private bus with the project's bus policy."""
from __future__ import annotations

import io
import json
import os

import pytest

from oisp_ctl.cli import main
from oisp_daemon.control.dbus_service import start_dbus
from tests.support.control_server import ServerThread
from tests.support.ctl_as_user import run_ctl_as_nobody
from tests.support.daemon_double import make_operations
from tests.support.private_bus import start_private_bus

if os.geteuid() != 0:
    pytest.skip("owning dev.oisp.Sensor1 and switching to uid 65534 need root",
                allow_module_level=True)


@pytest.fixture(scope="module")
def bus():
    private = start_private_bus()
    yield private
    private.stop()


@pytest.fixture
def service(bus, daemon, public_dir, monkeypatch):
    """The socket server's loop also runs the D-Bus service, as in the daemon."""
    monkeypatch.setenv("OISP_DBUS_ADDRESS", bus.address)
    monkeypatch.setenv("OISP_SOCKET", str(public_dir / "absent.sock"))  # --bus must not need it
    srv = ServerThread(make_operations(daemon), str(public_dir / "control.sock"))
    dbus = srv.run(start_dbus(srv.ops, bus.address))
    yield dbus
    srv.run(dbus.close())
    srv.close()


def ctl(capsys, *argv):
    out = io.StringIO()
    capsys.readouterr()
    code = main(list(argv), out=out)
    return code, out.getvalue(), capsys.readouterr().err


def test_status_over_the_bus(service, daemon, capsys):
    code, out, err = ctl(capsys, "--bus", "status", "--json")
    assert code == 0, err
    assert json.loads(out)["redaction"] == "safe"


def test_sessions_over_the_bus(service, daemon, capsys):
    code, out, err = ctl(capsys, "--bus", "session", "start", "busy", "--type", "ai.*")
    assert code == 0, err
    assert out.startswith("started session busy:")
    assert daemon.sessions.get("busy").filter.to_args() == {"types": ["ai.*"]}
    code, out, _ = ctl(capsys, "--bus", "session", "list", "--json")
    assert [s["name"] for s in json.loads(out)] == ["busy"]


def test_a_daemon_error_over_the_bus_prints_its_message(service, capsys):
    code, _, err = ctl(capsys, "--bus", "session", "stop", "ghost")
    assert code == 1
    assert err == "oisp-ctl: no session named 'ghost'; see oisp-ctl session list\n"


def test_a_normal_user_is_refused_over_the_bus_with_the_group_named(service, daemon, bus,
                                                                     public_dir):
    done = run_ctl_as_nobody(public_dir, "--bus", "redaction", "set", "full",
                             env={"OISP_DBUS_ADDRESS": bus.address})
    assert done.returncode == 1
    assert "permission denied: setting redaction needs root or membership in group " \
           "'oisp-admin'" in done.stderr
    assert daemon.mode == "safe"


def test_no_daemon_on_the_bus(bus, monkeypatch, capsys):
    monkeypatch.setenv("OISP_DBUS_ADDRESS", bus.address)
    code, _, err = ctl(capsys, "--bus", "status")
    assert code == 1
    assert "dev.oisp.Sensor1 is not on the bus — is the daemon running" in err


def test_an_unreachable_bus(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("OISP_DBUS_ADDRESS", "unix:path=%s" % (tmp_path / "no-bus"))
    code, _, err = ctl(capsys, "--bus", "status")
    assert code == 1
    assert "cannot connect to D-Bus (unix:path=" in err
    assert "leave out --bus" in err
