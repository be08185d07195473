"""cli.py: every command's exit codes, as a user meets them (real processes)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.conftest import Env, run_ingestor
from tests.test_hostile import make_deep_file


def one_error_line(stderr: str, *words: str) -> str:
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, stderr
    assert lines[0].startswith("ingestor: error: "), stderr
    for w in words:
        assert w in lines[0], f"{w!r} not in {lines[0]!r}"
    return lines[0]


@pytest.mark.parametrize("command", ["run", "replay"])
@pytest.mark.parametrize("value", ["", " "])
def test_empty_input_is_refused_and_nothing_moves(tmp_path: Path, command: str, value: str) -> None:
    """`cd dir && ingestor run --input ''` landed every file of the working directory."""
    work = tmp_path / "work"
    work.mkdir()
    (work / "precious.csv").write_bytes(b"not to be moved")
    res = run_ingestor(command, "--input", value, timeout=60, cwd=work)
    assert res.returncode == 2, res.stderr
    one_error_line(res.stderr, "input", "empty")
    assert sorted(os.listdir(work)) == ["precious.csv"]
    assert sorted(os.listdir(tmp_path)) == ["work"]  # no ../warehouse, ../manifests, ../state


@pytest.mark.parametrize("name", ["warehouse", "manifests", "state-path"])
def test_empty_output_path_is_refused(env: Env, name: str) -> None:
    res = run_ingestor("run", "--input", str(env.landing), f"--{name}", "", timeout=60, cwd=env.root)
    assert res.returncode == 2, res.stderr
    one_error_line(res.stderr, name.replace("-", "_"), "empty")


def test_empty_input_from_the_environment_is_refused(tmp_path: Path) -> None:
    import subprocess
    import sys

    res = subprocess.run(
        [sys.executable, "-m", "ingestor.cli", "run"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        env={**os.environ, "INGESTOR_INPUT": ""},
    )
    assert res.returncode == 2, res.stderr
    one_error_line(res.stderr, "INGESTOR_INPUT", "empty")
    assert os.listdir(tmp_path) == []


def test_input_naming_a_file_is_refused_with_exit_2(env: Env) -> None:
    """It was exit 1 with a JSON fatal: under Restart=on-failure, a restart loop."""
    afile = env.root / "afile.csv"
    afile.write_bytes(b"x")
    res = run_ingestor("run", "--input", str(afile), timeout=60, cwd=env.root)
    assert res.returncode == 2, res.stderr
    one_error_line(res.stderr, "input", "not a directory")


def test_manifests_inside_the_warehouse_is_refused(env: Env) -> None:
    res = run_ingestor(
        "run", "--input", str(env.landing), "--warehouse", str(env.warehouse),
        "--manifests", str(env.warehouse / "manifests"), timeout=60, cwd=env.root,
    )  # fmt: skip
    assert res.returncode == 2, res.stderr
    one_error_line(res.stderr, "manifests", "warehouse")
    assert not env.warehouse.exists()


@pytest.mark.parametrize("command", ["verify", "status"])
def test_empty_paths_of_the_read_only_commands(env: Env, command: str) -> None:
    args = ["--state-path", ""]
    if command == "verify":
        args += ["--warehouse", str(env.warehouse), "--manifests", str(env.manifests)]
    res = run_ingestor(command, *args, timeout=60, cwd=env.root)
    assert res.returncode == 2, res.stderr
    one_error_line(res.stderr, "state_path", "empty")


# ---------------------------------------------------------------- one settings table


def test_every_setting_is_a_flag_of_run_and_config_show_with_its_env_var() -> None:
    from ingestor.settings import TABLE

    for command in (["run"], ["config", "show"]):
        res = run_ingestor(*command, "--help", timeout=60)
        assert res.returncode == 0, res.stderr
        text = " ".join(res.stdout.split())
        for name in TABLE:
            assert f"--{name.replace('_', '-')}" in text, (command, name)
            assert f"INGESTOR_{name.upper()}" in text, (command, name)


def test_replay_takes_the_settings_the_table_gives_it() -> None:
    from ingestor.settings import TABLE

    text = " ".join(run_ingestor("replay", "--help", timeout=60).stdout.split())
    for name, spec in TABLE.items():
        assert (f"--{name.replace('_', '-')} " in text) == ("replay" in spec.commands), name


@pytest.mark.parametrize(
    ("name", "choices"),
    [
        ("mode", "stability|sidecar"),
        ("watcher", "auto|inotify|watchdog|poll"),
        ("on-duplicate", "quarantine|delete|keep"),
        ("dedup", "content|path+content"),
        ("log-level", "debug|info|warning|error"),
    ],
)
def test_choices_are_shown_in_help_and_in_errors(env: Env, name: str, choices: str) -> None:
    text = " ".join(run_ingestor("run", "--help", timeout=60).stdout.split())
    assert f"--{name} [{choices}]" in text
    res = run_ingestor("run", "--input", str(env.landing), f"--{name}", "nonsense", timeout=60)
    assert res.returncode == 2
    one_error_line(res.stderr, name.replace("-", "_"), "choose from " + choices.replace("|", ", "))


def test_version_of_both_programs() -> None:
    import subprocess
    import sys

    from ingestor import __version__

    res = run_ingestor("--version", timeout=60)
    assert (res.returncode, res.stdout.strip()) == (0, f"ingestor {__version__}")
    res = subprocess.run(
        [sys.executable, "-m", "sampler.cli", "--version"], capture_output=True, text=True, timeout=60
    )
    assert (res.returncode, res.stdout.strip()) == (0, f"sampler {__version__}")


@pytest.mark.parametrize("args", [[], ["config"], ["simulate"]])
def test_no_command_prints_the_help_and_exits_2(args: list[str]) -> None:
    res = run_ingestor(*args, timeout=60)
    assert res.returncode == 2
    assert "Usage:" in res.stderr and "Commands:" in res.stderr


def test_an_unknown_flag_is_one_line_exit_2(env: Env) -> None:
    res = run_ingestor("run", "--input", str(env.landing), "--no-such-flag", timeout=60)
    assert res.returncode == 2
    one_error_line(res.stderr, "--no-such-flag")


# ---------------------------------------------------------------- every command's exit codes


def test_exit_codes_of_every_command(env: Env, daemon) -> None:
    """0 done (or clean), 1 not done (or not clean, or fatal), 2 a bad command line or a refused start."""
    (env.landing / "a.csv").write_bytes(b"a")
    codes: dict[str, int] = {}

    def code(name: str, *args: str) -> None:
        codes[name] = run_ingestor(*args, timeout=120, cwd=env.root).returncode

    code("replay", "replay", *env.args(), "--stability-seconds", "0")
    code("verify", "verify", *env.args())
    code("status", "status", "--input", str(env.landing), "--state-path", str(env.state))
    code("config show", "config", "show", *env.args())
    code(
        "simulate",
        "simulate",
        "rename-tmp",
        "--into",
        str(env.root / "scratch"),
        "--count",
        "1",
        "--size",
        "10",
    )
    code("rebuild-ledger (a ledger with records)", "rebuild-ledger", *env.args())
    d = daemon()
    code("run (a second daemon on the ledger)", "run", *env.args())
    d.stop()
    (env.warehouse / "orphan.csv").write_bytes(b"no line names it")
    code("verify (not clean)", "verify", *env.args())
    make_deep_file(env.landing, "deep.csv", b"a path longer than PATH_MAX")
    code("replay (a file it could not land)", "replay", *env.args(), "--stability-seconds", "0")
    for bad in (["run", "--batch-size", "0"], ["replay", "--no-such"], ["verify", "--json", "x"], ["status"],
                ["config", "show"], ["rebuild-ledger"], ["simulate", "burst", "--count", "0"]):  # fmt: skip
        code("bad: " + " ".join(bad), *bad)
    assert codes == {
        "replay": 0,
        "verify": 0,
        "status": 0,
        "config show": 0,
        "simulate": 0,
        "rebuild-ledger (a ledger with records)": 2,
        "run (a second daemon on the ledger)": 1,
        "verify (not clean)": 1,
        "replay (a file it could not land)": 1,
        "bad: run --batch-size 0": 2,
        "bad: replay --no-such": 2,
        "bad: verify --json x": 2,
        "bad: status": 2,
        "bad: config show": 2,
        "bad: rebuild-ledger": 2,
        "bad: simulate burst --count 0": 2,
    }
