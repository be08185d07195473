"""sd_notify end to end, and the units in deploy/.

A real ``ingestor run`` with ``NOTIFY_SOCKET`` pointing at a datagram socket
the test binds (what systemd does): READY=1 once it watches, WATCHDOG=1 every
WATCHDOG_USEC/2 whatever --metrics-interval is, STOPPING=1 on SIGTERM.
"""

from __future__ import annotations

import itertools
import os
import re
import shutil
import signal
import socket
import subprocess
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

from ingestor import systemd
from ingestor.settings import load
from simulate import traffic
from tests.conftest import REPO, Env
from tests.waiting import wait_for

WATCHDOG_USEC = 400_000


class NotifySocket:
    """What systemd listens on: one datagram per sd_notify call, kept with its arrival time."""

    def __init__(self) -> None:
        self.name = f"@ingestor-test-{os.getpid()}-{time.monotonic_ns()}"
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        self.sock.bind("\0" + self.name[1:])
        self.sock.setblocking(False)
        self.messages: list[tuple[float, list[str]]] = []

    def poll(self) -> list[tuple[float, list[str]]]:
        while True:
            try:
                data = self.sock.recv(4096)
            except BlockingIOError:
                return self.messages
            self.messages.append((time.monotonic(), data.decode().split("\n")))

    def times(self, field: str) -> list[float]:
        return [t for t, fields in self.poll() if field in fields]

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def notify() -> Iterator[NotifySocket]:
    s = NotifySocket()
    yield s
    s.close()


@pytest.mark.parametrize("metrics_interval", ["60", "0", "3600", "0.15"])
def test_ready_watchdog_stopping(env: Env, daemon, notify: NotifySocket, metrics_interval: str) -> None:
    d = daemon(
        "--metrics-interval",
        metrics_interval,
        environ={"NOTIFY_SOCKET": notify.name, "WATCHDOG_USEC": str(WATCHDOG_USEC)},
    )
    wait_for(lambda: notify.times("READY=1"), 10, "READY=1")
    ready = notify.times("READY=1")
    assert len(ready) == 1
    (fields,) = [f for _, f in notify.messages if "READY=1" in f]
    assert f"STATUS=watching {env.landing}" in fields
    wait_for(lambda: len(notify.times("WATCHDOG=1")) >= 3, 10, "three WATCHDOG=1")
    pings = notify.times("WATCHDOG=1")
    assert pings[0] >= ready[0]
    # every WATCHDOG_USEC/2 = 0.2 s: the median gap is well below the timeout
    gaps = sorted(b - a for a, b in itertools.pairwise(pings))
    assert gaps[len(gaps) // 2] < WATCHDOG_USEC / 1e6, gaps
    assert not notify.times("STOPPING=1")
    assert d.stop(signal.SIGTERM) == 0
    wait_for(lambda: notify.times("STOPPING=1"), 5, "STOPPING=1")
    stopping = notify.times("STOPPING=1")
    assert len(stopping) == 1 and stopping[0] > ready[0]


def test_watchdog_of_another_pid_is_not_ours(env: Env, daemon, notify: NotifySocket) -> None:
    """WATCHDOG_PID names the process systemd watches: a child that inherits the env must not ping."""
    d = daemon(
        environ={"NOTIFY_SOCKET": notify.name, "WATCHDOG_USEC": "200000", "WATCHDOG_PID": "1"},
    )
    wait_for(lambda: notify.times("READY=1"), 10, "READY=1")
    # landing files takes longer than the 0.1 s between pings we would otherwise see
    rep = traffic.rename_tmp(env.landing, count=3, size=100)
    wait_for(lambda: len(env.ingested()) == rep.files, 20, "files landed")
    assert d.stop() == 0
    wait_for(lambda: notify.times("STOPPING=1"), 5, "STOPPING=1")
    assert notify.times("WATCHDOG=1") == []


def test_no_notify_socket_runs_as_usual(env: Env, daemon) -> None:
    d = daemon(environ={"NOTIFY_SOCKET": "", "WATCHDOG_USEC": str(WATCHDOG_USEC)})
    rep = traffic.rename_tmp(env.landing, count=2, size=100)
    wait_for(lambda: len(env.ingested()) == rep.files, 20, "files landed")
    assert d.stop() == 0


# ----------------------------------------------------------------- deploy/


def _unit(name: str) -> dict[str, list[str]]:
    """``Key=value`` lines of a unit file (continuations joined), every value of a key kept."""
    out: dict[str, list[str]] = {}
    text = (REPO / "deploy" / name).read_text().replace("\\\n", " ")
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";", "[")):
            continue
        key, _, value = line.partition("=")
        out.setdefault(key, []).append(value)
    return out


def _seconds(text: str) -> float:
    m = re.fullmatch(r"(\d+(?:\.\d+)?)\s*(ms|s|min|)", text.strip())
    assert m, text
    return float(m.group(1)) * {"ms": 0.001, "s": 1, "": 1, "min": 60}[m.group(2)]


def test_service_matches_the_example_config(monkeypatch: pytest.MonkeyPatch) -> None:
    """ReadWritePaths= is exactly what the daemon writes; the timers fit the daemon's own."""
    unit = _unit("ingestor.service")
    assert unit["Type"] == ["notify"] and unit["NotifyAccess"] == ["main"]
    assert unit["Restart"] == ["on-failure"]
    (exec_start,) = unit["ExecStart"]
    argv = exec_start.split()
    config = Path(argv[argv.index("--config") + 1])
    example = REPO / "deploy" / "ingestor.toml"
    s = load({}, config=example, environ={})
    assert set(" ".join(unit["ReadWritePaths"]).split()) == {
        str(s.input),
        str(s.warehouse),
        str(s.manifests),
        str(s.state_path.parent),
    }
    assert "/var/lib/" + unit["StateDirectory"][0] == str(s.state_path.parent)
    assert str(config.parent) == "/etc/" + unit["ConfigurationDirectory"][0]
    # systemd passes WatchdogSec= as WATCHDOG_USEC; the daemon pings at half of it
    watchdog = _seconds(unit["WatchdogSec"][0])
    monkeypatch.setenv("WATCHDOG_USEC", str(int(watchdog * 1e6)))
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    interval = systemd.watchdog_interval()
    assert interval is not None and interval <= watchdog / 2
    assert _seconds(unit["TimeoutStopSec"][0]) > s.shutdown_timeout
    for key in ("NoNewPrivileges", "PrivateTmp", "ProtectHome", "RestrictSUIDSGID", "LockPersonality"):
        assert unit[key] == ["yes"], key
    assert unit["ProtectSystem"] == ["strict"]
    assert unit["User"] == ["ingestor"]
    sampler = _unit("sampler.service")
    assert sampler["User"] == unit["User"]
    with open(example, "rb") as fh:
        assert tomllib.load(fh)["ingestor"]["input"] == str(s.input)


def _analyzable_units(tmp_path: Path) -> list[Path]:
    """deploy/*.service with ExecStart= pointing at this checkout's venv (verify checks the binary exists)."""
    venv_bin = Path(shutil.which("ingestor", path=str(REPO / ".venv" / "bin")) or "").parent
    if not (venv_bin / "ingestor").exists():
        pytest.skip("no .venv/bin/ingestor to stand in for /opt/ingestor/.venv/bin/ingestor")
    out = []
    for unit in sorted((REPO / "deploy").glob("*.service")):
        text = unit.read_text().replace("/opt/ingestor/.venv/bin/", f"{venv_bin}/")
        (tmp_path / unit.name).write_text(text)
        out.append(tmp_path / unit.name)
    return out


def test_systemd_analyze_verify(tmp_path: Path) -> None:
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed")
    units = _analyzable_units(tmp_path)
    assert {u.name for u in units} >= {"ingestor.service", "sampler.service"}
    res = subprocess.run(
        ["systemd-analyze", "verify", *map(str, units)], capture_output=True, text=True, timeout=60
    )
    assert res.returncode == 0, res.stderr
    assert res.stderr.strip() == "", res.stderr


def test_systemd_analyze_security(tmp_path: Path) -> None:
    """Exposure 'OK' or better (below 2.0 of 10) for both services."""
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed")
    for unit in _analyzable_units(tmp_path):
        res = subprocess.run(
            ["systemd-analyze", "security", "--offline=yes", "--threshold=20", "--no-pager", str(unit)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        if res.returncode != 0 and "Unknown option" in res.stderr + res.stdout:
            pytest.skip("systemd-analyze security --offline is not supported here")
        m = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", res.stdout)
        assert m, res.stdout + res.stderr
        assert float(m.group(1)) < 2.0, res.stdout
        assert res.returncode == 0, res.stdout + res.stderr
