"""Sampler settings: flag > SAMPLER_* environment > [sampler] table > default; one line and exit 2 on a bad value; --help."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from sampler.settings import DEFAULTS, ENV_PREFIX, TABLE, SettingsError, load
from tests.sampler_helpers import Layout, events, named

NO_FLAGS: dict[str, Any] = {name: None for name in TABLE}


def _config(tmp_path: Path, sampler: str = "") -> Path:
    cfg = tmp_path / "c.toml"
    cfg.write_text(
        f'state_path = "{tmp_path}/state/ledger.sqlite"\n'
        f'[[source]]\nname = "s"\npath = "{tmp_path}/in/{{v}}/raw"\n'
        f"[sampler]\n{sampler}"
    )
    return cfg


def _load(tmp_path: Path, env: dict[str, str] | None = None, **flags: Any) -> Any:
    return load({**NO_FLAGS, **flags}, environ=env or {}, cwd=tmp_path)


# A good value for each row, as text (flag or environment) and its parsed form.
GOOD: dict[str, tuple[str, Any]] = {
    "rows": ("7", 7),
    "max_bytes": ("1MiB", 1 << 20),
    "max_seconds": ("2.5", 2.5),
    "follow": ("true", True),
    "poll_interval": ("0.5", 0.5),
    "metrics_interval": ("3", 3.0),
    "metrics_port": ("9187", 9187),
    "retire_grace": ("10", 10.0),
    "log_level": ("WARNING", "warning"),
}


def _value(settings: Any, name: str) -> Any:
    if name in ("rows", "max_bytes", "max_seconds"):
        return getattr(settings.limits, name)
    return getattr(settings, name)


def test_every_setting_is_in_the_table_once() -> None:
    # every row has a help text; every [sampler]-able row but config and the plain ones has a GOOD sample
    assert all(spec.help for spec in TABLE.values())
    in_file = {n for n, s in TABLE.items() if s.in_file}
    assert in_file == set(GOOD) | {"state_dir"}
    assert {n for n, s in TABLE.items() if not s.in_file} == {
        "config",
        "manifests",
        "samples",
        "warehouse",
        "checkpoint",
    }


@pytest.mark.parametrize("name", sorted(GOOD))
def test_precedence_flag_over_env_over_file_over_default(tmp_path: Path, name: str) -> None:
    text, parsed = GOOD[name]
    env_key = ENV_PREFIX + name.upper()
    cfg = _config(tmp_path)
    assert _value(_load(tmp_path, config=str(cfg)), name) == DEFAULTS[name]
    cfg = _config(tmp_path, f'{name} = "{text}"\n')  # a TOML string is judged as the flag's text
    assert _value(_load(tmp_path, config=str(cfg)), name) == parsed
    other_text, other = {"follow": ("0", False), "log_level": ("error", "error")}.get(name, ("11", None))
    env_parsed = _value(_load(tmp_path, {env_key: other_text}, config=str(cfg)), name)
    assert env_parsed == (other if other is not None else TABLE[name].parse("11"))
    assert _value(_load(tmp_path, {env_key: other_text}, config=str(cfg), **{name: text}), name) == parsed


def test_typed_values_in_the_sampler_table(tmp_path: Path) -> None:
    cfg = _config(tmp_path, "rows = 3\nmax-bytes = 4096\nfollow = true\nmetrics_port = 9000\n")
    s = _load(tmp_path, config=str(cfg))
    assert (s.limits.rows, s.limits.max_bytes, s.follow, s.metrics_port) == (3, 4096, True, 9000)


def test_state_dir_precedence(tmp_path: Path) -> None:
    cfg = _config(tmp_path)
    assert _load(tmp_path, config=str(cfg)).state_dir == tmp_path / "state" / "sampler"
    cfg = _config(tmp_path, 'state_dir = "from-file"\n')
    assert _load(tmp_path, config=str(cfg)).state_dir == tmp_path / "from-file"  # relative: the working dir
    env = {"SAMPLER_STATE_DIR": str(tmp_path / "from-env")}
    assert _load(tmp_path, env, config=str(cfg)).state_dir == tmp_path / "from-env"
    assert _load(tmp_path, env, config=str(cfg), state_dir="x").state_dir == tmp_path / "x"


def test_config_from_the_environment(tmp_path: Path) -> None:
    cfg = _config(tmp_path, "rows = 2\n")
    s = _load(tmp_path, {"SAMPLER_CONFIG": str(cfg)})
    assert s.config is not None and s.config.path == cfg and s.limits.rows == 2


@pytest.mark.parametrize(
    ("env", "flags", "sampler", "message"),
    [
        (
            {"SAMPLER_ROWS": "x"},
            {},
            "",
            "invalid environment SAMPLER_ROWS for rows: 'x' is not a whole number",
        ),
        ({}, {"rows": "0"}, "", "invalid value of --rows for rows: '0' is out of range"),
        ({}, {}, "rows = 1.5\n", "for rows: 1.5 is not a whole number"),
        ({}, {}, "rows = true\n", "for rows: True is not a whole number"),
        ({}, {}, 'max_bytes = "lots"\n', "for max_bytes: 'lots' is not a size"),
        ({}, {}, "follow = 3\n", "for follow: 3 is not a boolean"),
        ({}, {}, 'log_level = "loud"\n', "(choose from debug, info, warning, error, critical)"),
        ({}, {}, "metrics_port = 70000\n", "for metrics_port: 70000 is out of range"),
        (
            {"SAMPLER_POLL_INTERVAL": "nan"},
            {},
            "",
            "SAMPLER_POLL_INTERVAL for poll_interval: 'nan' is not a finite",
        ),
        ({}, {}, "colour = 1\n", "unknown setting 'colour' in [sampler] of"),
        ({}, {}, 'manifests = "/m"\n', "unknown setting 'manifests' in [sampler] of"),
        ({}, {}, 'state_dir = ""\n', "for state_dir: the path is empty"),
        ({"SAMPLER_MANIFESTS": "/m"}, {}, "", "SAMPLER_MANIFESTS and --config together"),
        ({}, {"samples": "/s"}, "", "--samples and --config together"),
    ],
)
def test_bad_values_name_the_setting_and_where_it_came_from(
    tmp_path: Path, env: dict[str, str], flags: dict[str, str], sampler: str, message: str
) -> None:
    cfg = _config(tmp_path, sampler)
    with pytest.raises(SettingsError) as info:
        _load(tmp_path, env, config=str(cfg), **flags)
    assert message in str(info.value)
    assert "\n" not in str(info.value)
    if sampler and "unknown" not in message:
        assert f"value in [sampler] of {cfg}" in str(info.value)


def test_state_dir_without_config_is_refused(tmp_path: Path) -> None:
    (tmp_path / "m").mkdir()
    with pytest.raises(SettingsError, match="SAMPLER_STATE_DIR goes with --config"):
        _load(tmp_path, {"SAMPLER_STATE_DIR": "/x"}, manifests="m", samples="s")


def test_plain_settings_from_the_environment(tmp_path: Path) -> None:
    (tmp_path / "m").mkdir()
    s = _load(tmp_path, {"SAMPLER_MANIFESTS": "m", "SAMPLER_SAMPLES": "s", "SAMPLER_ROWS": "4"})
    assert s.plain is not None
    assert (s.plain.manifests, s.plain.samples, s.plain.warehouse) == (
        tmp_path / "m",
        tmp_path / "s",
        tmp_path / "warehouse",
    )
    assert s.plain.checkpoint == tmp_path / "s" / ".sampler-checkpoint.json"
    assert s.limits.rows == 4


# ----------------------------------------------------------------- real processes


def _cli(
    *args: str, env: dict[str, str] | None = None, columns: int = 100
) -> subprocess.CompletedProcess[str]:
    full = {**os.environ, "COLUMNS": str(columns), **(env or {})}
    full = {k: v for k, v in full.items() if not k.startswith(ENV_PREFIX) or k in (env or {})}
    cmd = [sys.executable, "-m", "sampler.cli", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60, env=full)


@pytest.mark.parametrize(
    ("env", "sampler", "needle"),
    [
        ({"SAMPLER_MAX_SECONDS": "-1"}, "", "invalid environment SAMPLER_MAX_SECONDS for max_seconds"),
        ({}, 'rows = "many"\n', "for rows: 'many' is not a whole number"),
        ({}, "nope = 1\n", "unknown setting 'nope' in [sampler]"),
    ],
)
def test_bad_value_from_env_or_file_is_one_line_exit_2(
    tmp_path: Path, env: dict[str, str], sampler: str, needle: str
) -> None:
    cfg = _config(tmp_path, sampler)
    before = sorted(tmp_path.rglob("*"))
    result = _cli("run", "--config", str(cfg), "--once", env=env)
    assert result.returncode == 2 and result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("sampler: error: ") and needle in lines[0], lines
    assert sorted(tmp_path.rglob("*")) == before


def test_settings_reach_the_run_env_over_file(tmp_path: Path) -> None:
    lay = Layout(tmp_path)
    lay.land("d/a.csv", b"h\n1\n2\n3\n")
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'input = "{tmp_path}/landing"\n[sampler]\nrows = 3\nlog_level = "warning"\n')
    result = _cli(
        "run", "--once", env={"SAMPLER_CONFIG": str(cfg), "SAMPLER_ROWS": "1", "SAMPLER_LOG_LEVEL": "info"}
    )
    assert result.returncode == 0, result.stderr
    started = named(events(result.stderr.encode()), "sampler_started")[0]
    assert started["rows"] == 1 and started["config"] == str(cfg)
    assert (lay.samples / "d/a_sample.csv").read_bytes() == b"h\n1\n"


def test_help_is_the_ingestors_style(tmp_path: Path) -> None:
    sampler_help = _cli("run", "--help", columns=80)
    ingestor = subprocess.run(
        [sys.executable, "-m", "ingestor.cli", "run", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "COLUMNS": "80"},
    )
    assert sampler_help.returncode == 0 and ingestor.returncode == 0
    out = sampler_help.stdout
    for text in (out, ingestor.stdout):
        assert text.startswith("Usage: ") and "\nOptions:\n" in text and "[env: " in text
    assert not re.search("[\u2500-\u257f\u2026]", out)  # no box drawing, nothing cut with an ellipsis
    assert max(len(line) for line in out.splitlines()) <= 80
    for name in TABLE:
        flag = "--" + name.replace("_", "-")
        assert flag in out, flag
        assert f"{ENV_PREFIX}{name.upper()}" in " ".join(out.split()), name
    for shown in ("[default: 100]", "[default: 64MiB]", "[default: off]", "[default: once]"):
        assert shown in " ".join(out.split())
    assert "[debug|info|warning|error|critical]" in out
    root = _cli("--help", columns=80)
    assert root.returncode == 0 and root.stdout.startswith("Usage: sampler") and "run" in root.stdout
