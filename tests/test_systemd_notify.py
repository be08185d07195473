"""sd_notify datagrams and the watchdog interval."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from ingestor.systemd import notify, watchdog_interval


def test_no_socket_is_a_no_op(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert notify("READY=1") is False


@pytest.mark.parametrize("abstract", [True, False])
def test_sends_one_datagram(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, abstract: bool) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        if abstract:
            name = f"@sampler-notify-{os.getpid()}"
            sock.bind("\0" + name[1:])
        else:
            name = str(tmp_path / "n.sock")
            sock.bind(name)
        monkeypatch.setenv("NOTIFY_SOCKET", name)
        assert notify("STATUS=sampling") is True
        assert sock.recv(64) == b"STATUS=sampling"


def test_unreachable_socket_is_not_an_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "nobody"))
    assert notify("READY=1") is False


def test_watchdog_interval(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    assert watchdog_interval() is None
    monkeypatch.setenv("WATCHDOG_USEC", "30000000")
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    assert watchdog_interval() == 15.0
    monkeypatch.setenv("WATCHDOG_PID", "1")
    assert watchdog_interval() is None  # meant for another process
