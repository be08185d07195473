"""settings.py: flags > INGESTOR_* environment > TOML > defaults, validated once."""

from __future__ import annotations

import json
import os
from dataclasses import fields
from pathlib import Path
from typing import Any

import pytest

from ingestor.layout import DEFAULT_LAYOUT
from ingestor.settings import (
    DEFAULT_CONCURRENCY,
    TABLE,
    Dedup,
    LogLevel,
    Mode,
    OnDuplicate,
    Settings,
    SettingsError,
    WatcherKind,
    describe,
    load,
)


@pytest.fixture
def cwd(tmp_path: Path) -> Path:
    (tmp_path / "landing").mkdir()
    return tmp_path


def settings(cwd: Path, flags: dict[str, Any] | None = None, **kw: Any) -> Settings:
    kw.setdefault("environ", {})
    return load({"input": "landing", **(flags or {})}, cwd=cwd, **kw)


def toml(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def one_line_error(exc: pytest.ExceptionInfo[SettingsError], *words: str) -> str:
    msg = str(exc.value)
    assert "\n" not in msg, msg
    for w in words:
        assert w in msg, f"{w!r} not in {msg!r}"
    return msg


# ---------------------------------------------------------------- defaults


def test_defaults_and_paths_beside_the_landing_dir(cwd: Path) -> None:
    s = settings(cwd)
    assert s.input == cwd / "landing"
    assert s.warehouse == cwd / "warehouse"
    assert s.manifests == cwd / "manifests"
    assert s.state_path == cwd / "state" / "ledger.sqlite"
    assert s.ledger_dir == cwd / "state"
    assert s.mode is Mode.STABILITY and s.stability_seconds == 2.0
    assert s.layout == DEFAULT_LAYOUT
    assert s.on_duplicate is OnDuplicate.QUARANTINE and s.dedup is Dedup.CONTENT
    assert s.ignore_suffixes == (".tmp", ".part", ".swp")
    assert s.metrics_port is None and s.dry_run is False


def test_defaults_follow_a_nested_input(cwd: Path) -> None:
    s = load({"input": "/srv/drop/landing"}, environ={}, cwd=cwd)
    assert s.warehouse == Path("/srv/drop/warehouse")
    assert s.state_path == Path("/srv/drop/state/ledger.sqlite")


def test_settings_are_frozen(cwd: Path) -> None:
    s = settings(cwd)
    with pytest.raises(AttributeError):
        s.concurrency = 9  # type: ignore[misc]


def test_relative_paths_are_made_absolute_and_normal(cwd: Path) -> None:
    s = settings(cwd, {"input": "./x/../landing/", "warehouse": "out//wh", "state_path": "st/l.db"})
    assert s.input == cwd / "landing"
    assert s.warehouse == cwd / "out" / "wh"
    assert s.state_path == cwd / "st" / "l.db"
    assert all(p.is_absolute() for p in (s.input, s.warehouse, s.manifests, s.state_path))


def test_home_is_expanded(cwd: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(cwd / "home"))
    s = settings(cwd, {"warehouse": "~/wh"})
    assert s.warehouse == cwd / "home" / "wh"


def test_cwd_defaults_to_the_process_cwd(cwd: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(cwd)
    assert load({"input": "landing"}, environ={}).input == cwd / "landing"


def test_describe_gives_plain_values(cwd: Path) -> None:
    d = describe(settings(cwd))
    assert set(d) == {f.name for f in fields(Settings)}
    assert d["input"] == str(cwd / "landing")
    assert d["ignore_suffixes"] == [".tmp", ".part", ".swp"]
    json.dumps(d)


# ---------------------------------------------------------------- precedence


def test_precedence_flags_over_env_over_toml_over_defaults(cwd: Path) -> None:
    cfg = toml(cwd / "c.toml", "[ingestor]\nconcurrency = 2\nbatch_size = 20\nscan_interval = 9.5\n")
    env = {"INGESTOR_CONCURRENCY": "3", "INGESTOR_BATCH_SIZE": "30"}
    s = settings(cwd, {"concurrency": "4"}, config=cfg, environ=env)
    assert (s.concurrency, s.batch_size, s.scan_interval, s.shutdown_timeout) == (4, 30, 9.5, 30.0)
    s = settings(cwd, {"concurrency": None}, config=cfg, environ=env)  # an unset flag is no flag
    assert (s.concurrency, s.batch_size) == (3, 30)
    s = settings(cwd, config=cfg, environ={})
    assert (s.concurrency, s.batch_size) == (2, 20)


def test_input_from_env_and_toml(cwd: Path) -> None:
    s = load({}, environ={"INGESTOR_INPUT": "landing"}, cwd=cwd)
    assert s.input == cwd / "landing"
    cfg = toml(cwd / "c.toml", f'input = "{cwd / "landing"}"\nwarehouse = "{cwd / "wh"}"\n')
    s = load({}, config=cfg, environ={}, cwd=cwd)
    assert (s.input, s.warehouse) == (cwd / "landing", cwd / "wh")


def test_config_file_from_env(cwd: Path) -> None:
    cfg = toml(cwd / "c.toml", "concurrency = 7\n")
    other = toml(cwd / "d.toml", "concurrency = 8\n")
    assert settings(cwd, environ={"INGESTOR_CONFIG": str(cfg)}).concurrency == 7
    assert settings(cwd, config=other, environ={"INGESTOR_CONFIG": str(cfg)}).concurrency == 8


def test_toml_top_level_and_dashed_keys(cwd: Path) -> None:
    cfg = toml(
        cwd / "c.toml",
        'on-duplicate = "delete"\nignore-suffixes = [".a", ".b"]\ndry-run = true\nmetrics_port = 9100\n',
    )
    s = settings(cwd, config=cfg)
    assert s.on_duplicate is OnDuplicate.DELETE
    assert s.ignore_suffixes == (".a", ".b")
    assert s.dry_run is True and s.metrics_port == 9100


def test_env_values_are_parsed(cwd: Path) -> None:
    env = {
        "INGESTOR_MODE": "sidecar",
        "INGESTOR_SIDECAR_SUFFIX": ".done",
        "INGESTOR_DRY_RUN": "yes",
        "INGESTOR_WATCHER": "poll",
        "INGESTOR_IGNORE_SUFFIXES": " .a , .b ,",
        "INGESTOR_LOG_LEVEL": "DEBUG",
        "INGESTOR_METRICS_PORT": "off",
        "INGESTOR_DEDUP": "path+content",
        "INGESTOR_LAYOUT": "bronze/{yyyy}/{hhmmss}--{name}",
        "INGESTOR_STABILITY_SECONDS": "0.25",
        "INGESTOR_UNRELATED": "ignored",
    }
    s = settings(cwd, environ=env)
    assert s.mode is Mode.SIDECAR and s.sidecar_suffix == ".done"
    assert s.dry_run is True and s.watcher is WatcherKind.POLL
    assert s.ignore_suffixes == (".a", ".b")
    assert s.log_level is LogLevel.DEBUG and s.metrics_port is None
    assert s.dedup is Dedup.PATH_CONTENT
    assert s.layout == "bronze/{yyyy}/{hhmmss}--{name}"
    assert s.stability_seconds == 0.25


@pytest.mark.parametrize(("text", "value"), [("1", True), ("on", True), ("No", False), ("", False)])
def test_booleans(cwd: Path, text: str, value: bool) -> None:
    assert settings(cwd, environ={"INGESTOR_DRY_RUN": text}).dry_run is value


# ---------------------------------------------------------------- every invalid value

INVALID: list[tuple[str, str]] = [
    ("mode", "fast"),
    ("stability_seconds", "-1"),
    ("stability_seconds", "soon"),
    ("stability_seconds", "nan"),
    ("stability_seconds", "inf"),
    ("stability_seconds", "86401"),
    ("sidecar_suffix", "ok"),
    ("sidecar_suffix", "."),
    ("sidecar_suffix", ".o/k"),
    ("scan_interval", "0"),
    ("concurrency", "0"),
    ("concurrency", "257"),
    ("concurrency", "1.5"),
    ("processes", "0"),
    ("processes", "65"),
    ("processes", "two"),
    ("batch_size", "0"),
    ("batch_size", "many"),
    ("dry_run", "maybe"),
    ("watcher", "kqueue"),
    ("layout", "{nope}/{name}"),
    ("layout", "/abs/{name}"),
    ("layout", "{date}"),
    ("layout", "../{name}"),
    ("layout", "{name"),
    ("on_duplicate", "ignore"),
    ("dedup", "path"),
    ("ignore_suffixes", "tmp"),
    ("ignore_suffixes", ".a,b/c"),
    ("log_level", "verbose"),
    ("include", "[abc"),
    ("exclude", "/abs/**"),
    ("dedup_scope", "everything"),
    ("metrics_port", "70000"),
    ("metrics_port", "-1"),
    ("metrics_port", "http"),
    ("metrics_interval", "-1"),
    ("shutdown_timeout", "-0.5"),
    ("retry_max_seconds", "0"),
    ("retry_max_seconds", "1e999"),
]
PATHS = ("input", "warehouse", "manifests", "state_path", "samples")


def test_every_setting_has_an_invalid_case() -> None:
    assert {name for name, _ in INVALID} | set(PATHS) == set(TABLE) == {f.name for f in fields(Settings)}


@pytest.mark.parametrize(("name", "value"), INVALID)
def test_invalid_flag(cwd: Path, name: str, value: str) -> None:
    with pytest.raises(SettingsError) as info:
        settings(cwd, {name: value})
    msg = one_line_error(info, name, f"--{name.replace('_', '-')}")
    if TABLE[name].choices:
        assert "choose from" in msg


@pytest.mark.parametrize(("name", "value"), INVALID)
def test_invalid_env(cwd: Path, name: str, value: str) -> None:
    env_key = f"INGESTOR_{name.upper()}"
    with pytest.raises(SettingsError) as info:
        settings(cwd, environ={env_key: value})
    one_line_error(info, name, env_key)


@pytest.mark.parametrize(("name", "value"), INVALID)
def test_invalid_toml(cwd: Path, name: str, value: str) -> None:
    cfg = toml(cwd / "c.toml", f"[ingestor]\n{name} = {json.dumps(value)}\n")
    with pytest.raises(SettingsError) as info:
        settings(cwd, config=cfg)
    one_line_error(info, name, str(cfg))


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("input", "5"),
        ("warehouse", "[1]"),
        ("manifests", "{a = 1}"),
        ("state_path", "true"),
        ("stability_seconds", "true"),
        ("concurrency", '"3x"'),
        ("dry_run", "2"),
        ("metrics_port", "false"),
        ("mode", "1"),
        ("sidecar_suffix", "[]"),
        ("layout", "7"),
    ],
)
def test_invalid_toml_types(cwd: Path, name: str, value: str) -> None:
    cfg = toml(cwd / "c.toml", f"{name} = {value}\n")
    with pytest.raises(SettingsError) as info:
        settings(cwd, config=cfg)
    one_line_error(info, name)


@pytest.mark.parametrize(
    ("name", "value"), [("concurrency", "2.7"), ("batch_size", "10.5"), ("metrics_port", "9100.9")]
)
def test_toml_float_for_an_integer_setting_is_refused(cwd: Path, name: str, value: str) -> None:
    cfg = toml(cwd / "c.toml", f"{name} = {value}\n")
    with pytest.raises(SettingsError) as info:
        settings(cwd, config=cfg)
    one_line_error(info, name)


def test_toml_list_of_non_strings_for_ignore_suffixes(cwd: Path) -> None:
    cfg = toml(cwd / "c.toml", "ignore_suffixes = [1, 2]\n")
    with pytest.raises(SettingsError) as info:
        settings(cwd, config=cfg)
    one_line_error(info, "ignore_suffixes")


@pytest.mark.parametrize("name", PATHS)
def test_nul_byte_in_a_path(cwd: Path, name: str) -> None:
    text = f'{name} = "{cwd}/x\\u0000y"\n'
    if name != "input":
        text += f'input = "{cwd}/landing"\n'
    cfg = toml(cwd / "c.toml", text)
    with pytest.raises(SettingsError) as info:
        load({}, config=cfg, environ={}, cwd=cwd)
    one_line_error(info, name)


# ---------------------------------------------------------------- other refusals


def test_missing_input(cwd: Path) -> None:
    with pytest.raises(SettingsError) as info:
        load({}, environ={}, cwd=cwd)
    one_line_error(info, "input")


def test_unknown_toml_key_is_refused(cwd: Path) -> None:
    cfg = toml(cwd / "c.toml", "[ingestor]\nconcurency = 3\n")
    with pytest.raises(SettingsError) as info:
        settings(cwd, config=cfg)
    one_line_error(info, "concurency", "unknown")


def test_unknown_top_level_table_is_refused(cwd: Path) -> None:
    cfg = toml(cwd / "c.toml", "concurrency = 3\n[colour]\nrows = 5\n")
    with pytest.raises(SettingsError) as info:
        settings(cwd, config=cfg)
    one_line_error(info, "colour")


def test_the_samplers_table_is_the_samplers(cwd: Path) -> None:
    cfg = toml(cwd / "c.toml", "concurrency = 3\n[sampler]\nrows = 5\n")
    assert settings(cwd, config=cfg).concurrency == 3


def test_unknown_flag_is_refused(cwd: Path) -> None:
    with pytest.raises(SettingsError) as info:
        settings(cwd, {"colour": "blue"})
    one_line_error(info, "colour")


def test_ingestor_not_a_table(cwd: Path) -> None:
    cfg = toml(cwd / "c.toml", "ingestor = 5\n")
    with pytest.raises(SettingsError) as info:
        settings(cwd, config=cfg)
    one_line_error(info, "[ingestor]")


def test_config_file_missing_or_not_toml(cwd: Path) -> None:
    with pytest.raises(SettingsError) as info:
        settings(cwd, config=cwd / "absent.toml")
    one_line_error(info, "absent.toml")
    bad = toml(cwd / "bad.toml", 'layout = "a\nb"\n')
    with pytest.raises(SettingsError) as info:
        settings(cwd, config=bad)
    one_line_error(info, "bad.toml", "TOML")


# ---------------------------------------------------------------- nesting


@pytest.mark.parametrize("name", ["warehouse", "manifests", "state_path"])
def test_output_inside_the_landing_dir_is_refused(cwd: Path, name: str) -> None:
    with pytest.raises(SettingsError) as info:
        settings(cwd, {name: "landing/sub/x"})
    one_line_error(info, name, "inside the landing dir")


@pytest.mark.parametrize("name", ["warehouse", "manifests"])
def test_same_dir_as_the_landing_dir_is_refused(cwd: Path, name: str) -> None:
    with pytest.raises(SettingsError) as info:
        settings(cwd, {name: "landing"})
    one_line_error(info, name)


@pytest.mark.parametrize("name", ["warehouse", "manifests", "state_path"])
def test_landing_dir_inside_an_output_is_refused(cwd: Path, name: str) -> None:
    (cwd / "out" / "landing").mkdir(parents=True)
    with pytest.raises(SettingsError) as info:
        settings(cwd, {"input": "out/landing", name: "out"})
    one_line_error(info, "input", name)


def test_nesting_through_a_symlink_is_refused(cwd: Path) -> None:
    (cwd / "landing" / "wh").mkdir()
    (cwd / "wh-link").symlink_to(cwd / "landing" / "wh")
    with pytest.raises(SettingsError) as info:
        settings(cwd, {"warehouse": "wh-link"})
    one_line_error(info, "warehouse")


def test_sibling_with_a_common_prefix_is_not_nested(cwd: Path) -> None:
    s = settings(cwd, {"warehouse": "landing-wh", "manifests": "landingmanifests"})
    assert s.warehouse == cwd / "landing-wh"


def test_root_as_the_landing_dir_is_refused(cwd: Path) -> None:
    with pytest.raises(SettingsError) as info:
        load({"input": "/", "warehouse": str(cwd / "w")}, environ={}, cwd=cwd)
    one_line_error(info, "input")


def test_state_path_that_is_a_directory_is_refused(cwd: Path) -> None:
    (cwd / "state" / "ledger.sqlite").mkdir(parents=True)
    with pytest.raises(SettingsError) as info:
        settings(cwd)
    one_line_error(info, "state_path")


def test_state_path_that_is_a_file_is_fine(cwd: Path) -> None:
    (cwd / "state").mkdir()
    (cwd / "state" / "ledger.sqlite").write_bytes(b"")
    assert settings(cwd).state_path.is_file()


def test_env_is_the_process_env_by_default(cwd: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for key in [k for k in os.environ if k.startswith("INGESTOR_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("INGESTOR_CONCURRENCY", "11")
    assert load({"input": "landing"}, cwd=cwd).concurrency == 11
    monkeypatch.delenv("INGESTOR_CONCURRENCY")
    assert os.environ.get("INGESTOR_CONCURRENCY") is None
    assert load({"input": "landing"}, cwd=cwd).concurrency == DEFAULT_CONCURRENCY


# ---------------------------------------------------------------- empty, ambiguous, overlapping paths


@pytest.mark.parametrize("name", PATHS)
@pytest.mark.parametrize("value", ["", " ", "\t", " landing", "landing "])
def test_empty_or_blank_path_is_refused_from_every_source(cwd: Path, name: str, value: str) -> None:
    """An empty --input was the working directory: every file in it would have been landed."""
    flags = {} if name == "input" else {"input": "landing"}
    with pytest.raises(SettingsError) as info:
        load({**flags, name: value}, environ={}, cwd=cwd)
    one_line_error(info, name, f"--{name.replace('_', '-')}")
    with pytest.raises(SettingsError) as info:
        load(flags, environ={f"INGESTOR_{name.upper()}": value}, cwd=cwd)
    one_line_error(info, name, f"INGESTOR_{name.upper()}")
    cfg = toml(cwd / "c.toml", f"{name} = {json.dumps(value)}\n")
    with pytest.raises(SettingsError) as info:
        load(flags, config=cfg, environ={}, cwd=cwd)
    one_line_error(info, name, str(cfg))


@pytest.mark.parametrize("name", ["input", "warehouse", "manifests"])
def test_a_directory_setting_naming_a_file_is_refused(cwd: Path, name: str) -> None:
    (cwd / "afile").write_bytes(b"x")
    flags = {"input": "landing", name: "afile"}
    with pytest.raises(SettingsError) as info:
        load(flags, environ={}, cwd=cwd)
    one_line_error(info, name, "not a directory")


@pytest.mark.parametrize(
    ("manifests", "warehouse"), [("wh", "wh"), ("wh/manifests", "wh"), ("m", "m/warehouse")]
)
def test_manifests_and_warehouse_must_not_overlap(cwd: Path, manifests: str, warehouse: str) -> None:
    with pytest.raises(SettingsError) as info:
        settings(cwd, {"manifests": manifests, "warehouse": warehouse})
    one_line_error(info, "manifests", "warehouse")


@pytest.mark.parametrize("name", ["warehouse", "manifests"])
def test_ledger_inside_an_output_dir_is_refused(cwd: Path, name: str) -> None:
    with pytest.raises(SettingsError) as info:
        settings(cwd, {name: "out", "state_path": "out/state/ledger.sqlite"})
    one_line_error(info, "state_path", name)
