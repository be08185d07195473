"""The command line: one-line errors with exit 2, defaults, help."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from sampler.cli import main


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "sampler.cli", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--rows", "many"], "invalid value of --rows for rows: 'many' is not a whole number"),
        (["--rows", "0"], "invalid value of --rows for rows: '0' is out of range"),
        (["--max-bytes", "12XB"], "invalid value of --max-bytes for max_bytes: '12XB' is not a size"),
        (["--max-bytes", "0"], "invalid value of --max-bytes for max_bytes"),
        (["--log-level", "loud"], "(choose from debug, info, warning, error, critical)"),
        (["--poll-interval", "-1"], "invalid value of --poll-interval for poll_interval"),
        (["--no-such-flag"], "--no-such-flag"),
    ],
)
def test_bad_flag_is_one_line_and_exit_2(tmp_path: Path, args: list[str], needle: str) -> None:
    result = _cli("run", "--manifests", str(tmp_path), "--samples", str(tmp_path / "s"), *args)
    assert result.returncode == 2
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("sampler: error: ") and needle in lines[0]
    assert result.stdout == ""


def test_missing_required_option_and_command() -> None:
    result = _cli("run", "--samples", "/tmp/x")
    assert result.returncode == 2 and result.stderr.strip() == (
        "sampler: error: missing option '--manifests': give --manifests DIR (or SAMPLER_MANIFESTS), "
        "or --config FILE (or SAMPLER_CONFIG)"
    )
    assert _cli().returncode == 2


def test_help_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "--help"]) == 0
    out = capsys.readouterr().out
    for flag in ("--manifests", "--samples", "--rows", "--checkpoint", "--follow", "--max-bytes"):
        assert flag in out


def test_defaults_put_warehouse_beside_manifests(tmp_path: Path) -> None:
    (tmp_path / "manifests").mkdir()
    result = _cli("run", "--manifests", str(tmp_path / "manifests"), "--samples", str(tmp_path / "s"))
    assert result.returncode == 0, result.stderr
    assert f'"warehouse":"{tmp_path}/warehouse"' in result.stderr
    assert (tmp_path / "s" / ".sampler-checkpoint.json.lock").exists()


@pytest.mark.parametrize("kind", ["missing", "file"])
def test_manifests_not_a_directory_is_exit_2_and_creates_nothing(tmp_path: Path, kind: str) -> None:
    manifests = tmp_path / "manifests"
    if kind == "file":
        manifests.write_bytes(b"")
    result = _cli("run", "--manifests", str(manifests), "--samples", str(tmp_path / "s"), "--once")
    assert result.returncode == 2 and result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("sampler: error: ") and "'--manifests'" in lines[0]
    assert str(manifests) in lines[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ([] if kind == "missing" else ["manifests"])
