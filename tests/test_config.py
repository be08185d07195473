"""``ingestor config show``: flags > INGESTOR_* environment > TOML file > defaults, as `run` sees them."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import orjson
import pytest

from ingestor.settings import Settings, describe, load
from tests.conftest import REPO, ingestor_cmd


def ingestor(
    *args: str, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("INGESTOR_")}
    return subprocess.run(
        ingestor_cmd(*args), capture_output=True, text=True, timeout=60, env={**base, **(env or {})}, cwd=cwd
    )


def show_json(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> dict[str, Any]:
    res = ingestor("config", "show", *args, "--json", env=env, cwd=cwd)
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert len(lines) == 1, res.stdout
    out = json.loads(lines[0])
    assert set(out) == {"settings", "origins"}
    return out


def write_toml(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_precedence_flags_over_env_over_toml(tmp_path: Path) -> None:
    cfg = write_toml(
        tmp_path / "ingestor.toml",
        f"""
[ingestor]
input = "{tmp_path}/from-toml"
concurrency = 2          # only here
batch_size = 10          # env wins
mode = "sidecar"         # env and flag: the flag wins
layout = "bronze/{{yyyy}}/{{mm}}/{{dd}}/{{hhmmss}}--{{name}}"
""",
    )
    env = {"INGESTOR_BATCH_SIZE": "20", "INGESTOR_MODE": "stability", "INGESTOR_SCAN_INTERVAL": "7.5"}
    out = show_json("--config", str(cfg), "--mode", "sidecar", "--stability-seconds", "0.5", env=env)
    s, o = out["settings"], out["origins"]
    assert (s["concurrency"], o["concurrency"]) == (2, f"file {cfg}")
    assert (s["batch_size"], o["batch_size"]) == (20, "env INGESTOR_BATCH_SIZE")
    assert (s["mode"], o["mode"]) == ("sidecar", "flag --mode")
    assert (s["scan_interval"], o["scan_interval"]) == (7.5, "env INGESTOR_SCAN_INTERVAL")
    assert (s["stability_seconds"], o["stability_seconds"]) == (0.5, "flag --stability-seconds")
    assert (s["dedup"], o["dedup"]) == ("content", "default")
    assert s["layout"] == "bronze/{yyyy}/{mm}/{dd}/{hhmmss}--{name}"
    assert (s["input"], o["input"]) == (f"{tmp_path}/from-toml", f"file {cfg}")
    assert (s["warehouse"], o["warehouse"]) == (
        str(tmp_path / "warehouse"),
        "default (beside the landing dir)",
    )
    # the same inputs through the library: config show prints what `run` would use
    want = load(
        {"mode": "sidecar", "stability_seconds": 0.5},
        config=cfg,
        environ=env,
    )
    assert s == describe(want)
    assert set(s) == {f.name for f in dataclasses.fields(Settings)}
    assert set(o) == set(s)


def test_env_over_toml_and_input_from_env(tmp_path: Path) -> None:
    cfg = write_toml(tmp_path / "c.toml", f'input = "{tmp_path}/toml-landing"\nmetrics_port = 9999\n')
    env = {
        "INGESTOR_CONFIG": str(cfg),
        "INGESTOR_INPUT": str(tmp_path / "env-landing"),
        "INGESTOR_METRICS_PORT": "off",
    }
    out = show_json(env=env)
    s, o = out["settings"], out["origins"]
    assert (s["input"], o["input"]) == (str(tmp_path / "env-landing"), "env INGESTOR_INPUT")
    assert (s["metrics_port"], o["metrics_port"]) == (None, "env INGESTOR_METRICS_PORT")
    out = show_json("--input", str(tmp_path / "flag-landing"), env=env)
    assert out["settings"]["input"] == str(tmp_path / "flag-landing")


def test_toml_output_is_a_config_that_gives_the_same_settings(tmp_path: Path) -> None:
    """Quoting survives: a path with spaces, quotes and backslashes, a layout with braces."""
    odd = tmp_path / 'land "ing" \\ here'
    res = ingestor(
        "config", "show", "--input", str(odd), "--layout", "x/{date}/{name}", "--ignore-suffixes", ".tmp,.partial",
        "--metrics-port", "9100", "--dry-run",
        env={"INGESTOR_SHUTDOWN_TIMEOUT": "12"},
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    text = res.stdout
    assert text.startswith("# ingestor: effective configuration")
    assert re.search(r'^layout = "x/\{date\}/\{name\}"  # flag --layout$', text, re.M)
    assert re.search(r"^shutdown_timeout = 12\.0  # env INGESTOR_SHUTDOWN_TIMEOUT$", text, re.M)
    assert re.search(r"^stability_seconds = 2\.0  # default$", text, re.M)
    assert re.search(r'^ignore_suffixes = \[".tmp", ".partial"\]  # flag --ignore-suffixes$', text, re.M)
    data = tomllib.loads(text)
    assert set(data) == {"ingestor"}
    assert data["ingestor"]["input"] == str(odd)
    saved = write_toml(tmp_path / "saved.toml", text)
    again = load({}, config=saved, environ={})
    want = load(
        {
            "input": odd,
            "layout": "x/{date}/{name}",
            "ignore_suffixes": ".tmp,.partial",
            "metrics_port": 9100,
            "dry_run": True,
        },
        environ={"INGESTOR_SHUTDOWN_TIMEOUT": "12"},
    )
    assert again == want


def test_unset_metrics_port_is_a_comment(tmp_path: Path) -> None:
    res = ingestor("config", "show", "--input", str(tmp_path / "l"))
    assert res.returncode == 0, res.stderr
    assert re.search(r"^# metrics_port is not set  # default$", res.stdout, re.M)
    assert "metrics_port" not in tomllib.loads(res.stdout)["ingestor"]


@pytest.mark.parametrize(
    ("toml", "env", "flags", "names"),
    [
        ("concurrency = 0", {}, [], "concurrency"),
        ('mode = "eventually"', {}, [], "mode"),
        ("no_such_setting = 1", {}, [], "no_such_setting"),
        ("concurrency = [", {}, [], "not valid TOML"),
        ("", {"INGESTOR_STABILITY_SECONDS": "soon"}, [], "INGESTOR_STABILITY_SECONDS"),
        ("", {}, ["--on-duplicate", "shred"], "on_duplicate"),
        ("", {}, ["--layout", "../{name}"], "layout"),
        ("concurrency = 2.5", {}, [], "concurrency"),
    ],
)
def test_invalid_is_one_line_naming_the_setting(
    tmp_path: Path, toml: str, env: dict[str, str], flags: list[str], names: str
) -> None:
    cfg = write_toml(tmp_path / "c.toml", f'input = "{tmp_path}/landing"\n{toml}\n')
    res = ingestor("config", "show", "--config", str(cfg), *flags, env=env, cwd=tmp_path)
    assert res.returncode == 2, (res.stdout, res.stderr)
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr
    assert lines[0].startswith("ingestor: error: ") and names in lines[0], lines[0]
    assert res.stdout == ""


@pytest.mark.parametrize(
    ("toml", "env", "names"),
    [("batch_size = -5", {}, "batch_size"), ("", {"INGESTOR_WATCHER": "psychic"}, "INGESTOR_WATCHER")],
)
def test_run_with_invalid_config_fails_at_start(
    tmp_path: Path, toml: str, env: dict[str, str], names: str
) -> None:
    cfg = write_toml(tmp_path / "c.toml", f'input = "{tmp_path}/landing"\n{toml}\n')
    res = ingestor("run", "--config", str(cfg), env=env, cwd=tmp_path)
    assert res.returncode == 2, (res.stdout, res.stderr)
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ingestor: error: ") and names in lines[0], res.stderr
    assert not (tmp_path / "landing").exists()  # failed before touching anything


def test_missing_input_names_it(tmp_path: Path) -> None:
    res = ingestor("config", "show", cwd=tmp_path)
    assert res.returncode == 2
    assert res.stderr.strip().splitlines() == [
        "ingestor: error: missing setting input: give --input DIR (or INGESTOR_INPUT)"
    ]


# ----------------------------------------------------------------- deploy/ingestor.toml


def _example_lines() -> dict[str, tuple[bool, str]]:
    """setting → (commented out?, its value text) of every ``[#] key = value`` line."""
    out: dict[str, tuple[bool, str]] = {}
    names = {f.name for f in dataclasses.fields(Settings)}
    for line in (REPO / "deploy" / "ingestor.toml").read_text().splitlines():
        m = re.fullmatch(r"(#\s*)?([a-z_]+) = (.+)", line.strip())
        if m and m.group(2) in names:
            assert m.group(2) not in out, f"{m.group(2)} twice"
            out[m.group(2)] = (m.group(1) is not None, m.group(3))
    return out


def test_example_config_lists_every_setting_with_its_default() -> None:
    lines = _example_lines()
    assert set(lines) == {f.name for f in dataclasses.fields(Settings)}
    s = load({}, config=REPO / "deploy" / "ingestor.toml", environ={})
    defaults = describe(
        Settings(input=s.input, warehouse=s.warehouse, manifests=s.manifests, state_path=s.state_path)
    )
    actual = describe(s)
    for name, (commented, text) in lines.items():
        value = tomllib.loads(f"v = {text}")["v"]
        if commented:
            assert value == defaults[name], (
                f"{name}: the example says {value!r}, the default is {defaults[name]!r}"
            )
            assert actual[name] == defaults[name]
        else:
            assert actual[name] == value, name


def test_example_config_shows_cleanly() -> None:
    res = ingestor("config", "show", "--config", str(REPO / "deploy" / "ingestor.toml"))
    assert res.returncode == 0, res.stderr
    assert 'input = "/srv/ingestor/landing"  # file ' in res.stdout


def test_example_sources_config_shows_cleanly() -> None:
    res = ingestor("config", "show", "--config", str(REPO / "deploy" / "ingestor-sources.toml"), "--json")
    assert res.returncode == 0, res.stderr
    doc = orjson.loads(res.stdout)
    assert [s["name"] for s in doc["sources"]] == ["sp", "acme-orders"]
    assert doc["sources"][1]["mode"] == "sidecar"
