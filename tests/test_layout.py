"""layout.py: warehouse path templates, NAME_MAX fitting, collision suffixes."""

from __future__ import annotations

import calendar
import os
import time
from pathlib import Path

import pytest

from ingestor.layout import (
    DEFAULT_LAYOUT,
    NAME_MAX,
    LayoutError,
    fit_component,
    render,
    split_name,
    validate_layout,
    with_suffix,
)

SHA = "0123456789abcdef" * 4
# 2026-03-04 05:06:07.890 UTC
NS = calendar.timegm((2026, 3, 4, 5, 6, 7, 0, 0, 0)) * 1_000_000_000 + 890_000_000
NON_UTF8 = os.fsdecode(b"caf\xe9-\xff\xfe.csv")  # Latin-1 bytes: not valid UTF-8


def nbytes(s: str) -> int:
    return len(os.fsencode(s))


# ---------------------------------------------------------------- split_name


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("data.csv", ("data", ".csv")),
        ("data.csv.gz", ("data", ".csv.gz")),
        ("archive.tar.zst", ("archive", ".tar.zst")),
        ("DATA.JSON.GZ", ("DATA", ".JSON.GZ")),
        ("x.gz", ("x", ".gz")),
        ("noext", ("noext", "")),
        (".hidden", (".hidden", "")),
        ("a.b.c", ("a.b", ".c")),
        ("report.averyveryverylongext.gz", ("report.averyveryverylongext", ".gz")),
    ],
)
def test_split_name(name: str, expected: tuple[str, str]) -> None:
    assert split_name(name) == expected


# ---------------------------------------------------------------- render


def test_default_layout_is_date_then_relpath() -> None:
    assert render(DEFAULT_LAYOUT, "a/b/data.csv", NS, SHA) == "ingest_date=2026-03-04/a/b/data.csv"


def test_every_field() -> None:
    tpl = "{yyyy}/{mm}/{dd}/{hh}/{hhmmss}/{date}/{reldir}/{stem}/{ext}/{name}/{sha8}/{sha256}/{relpath}"
    out = render(tpl, "sub/dir/data.csv.gz", NS, SHA)
    assert out.split("/") == [
        "2026",
        "03",
        "04",
        "05",
        "050607",
        "2026-03-04",
        "sub",
        "dir",
        "data",
        ".csv.gz",
        "data.csv.gz",
        "01234567",
        SHA,
        "sub",
        "dir",
        "data.csv.gz",
    ]


def test_bronze_style() -> None:
    out = render("bronze/{yyyy}/{mm}/{dd}/{hhmmss}--{name}", "x/orders.csv", NS, SHA)
    assert out == "bronze/2026/03/04/050607--orders.csv"


def test_empty_reldir_at_top_level_leaves_no_empty_component() -> None:
    assert render("{reldir}/{name}", "top.csv", NS, SHA) == "top.csv"
    assert render("./{reldir}//{name}", "d/top.csv", NS, SHA) == "d/top.csv"


def test_uses_utc_not_local_time(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TZ", "Etc/GMT-14")  # UTC+14: 19:06 local, same date; hour differs
    time.tzset()
    try:
        assert render("{date}/{hh}/{name}", "a", NS, SHA) == "2026-03-04/05/a"
        assert render("{date}/{name}", "a", NS + 20 * 3600 * 10**9, SHA) == "2026-03-05/a"
    finally:
        monkeypatch.undo()
        time.tzset()


@pytest.mark.parametrize("rel", ["..", "a/..", "x/../.."])
def test_render_refuses_dotdot(rel: str) -> None:
    with pytest.raises(LayoutError, match="unsafe path"):
        render("{relpath}", rel, NS, SHA)


def test_render_refuses_an_empty_path() -> None:
    with pytest.raises(LayoutError):
        render("{reldir}", "top.csv", NS, SHA)


def test_non_utf8_name_survives_byte_for_byte() -> None:
    out = render(DEFAULT_LAYOUT, "in/" + NON_UTF8, NS, SHA)
    assert os.fsencode(out) == b"ingest_date=2026-03-04/in/caf\xe9-\xff\xfe.csv"


def test_name_of_255_bytes_with_a_prefix_is_fitted_in_its_stem() -> None:
    name = "n" * (NAME_MAX - 4) + ".csv"
    assert nbytes(name) == NAME_MAX
    out = render("bronze/{hhmmss}--{name}", name, NS, SHA)
    last = out.split("/")[-1]
    assert nbytes(last) == NAME_MAX
    assert last.startswith("050607--nnn")
    assert last.endswith(".csv")


def test_name_of_255_bytes_in_the_default_layout_is_unchanged() -> None:
    name = "é" * 124 + ".csv.gz"  # 248 + 7 = 255
    assert nbytes(name) == NAME_MAX
    assert render(DEFAULT_LAYOUT, f"d/{name}", NS, SHA) == f"ingest_date=2026-03-04/d/{name}"


def test_every_component_fits_in_a_real_directory(tmp_path: Path) -> None:
    """The kernel agrees: every rendered component can be created."""
    names = ["x" * 255, "é" * 127 + "z", "😀" * 63 + "abc", os.fsdecode(b"\xff" * 255), "a" * 250 + ".csv"]
    for name in names:
        out = render("{hhmmss}-{sha8}-{name}", name, NS, SHA)
        (tmp_path / out).write_bytes(b"x")


# ---------------------------------------------------------------- fit_component


def test_fit_keeps_short_names() -> None:
    assert fit_component("data.csv") == "data.csv"
    assert fit_component("x" * NAME_MAX) == "x" * NAME_MAX


def test_fit_cuts_the_stem_keeps_the_extension() -> None:
    out = fit_component("s" * 300 + ".csv.gz")
    assert out == "s" * (NAME_MAX - 7) + ".csv.gz"


@pytest.mark.parametrize("char", ["é", "中", "😀"])
def test_fit_cuts_at_a_utf8_character_boundary(char: str) -> None:
    name = char * 200 + ".json"
    out = fit_component(name)
    raw = os.fsencode(out)
    assert len(raw) <= NAME_MAX
    assert len(raw) >= NAME_MAX - len(char.encode()) + 1  # cut no more than the split character
    raw.decode("utf-8")  # strict: no half character left
    assert out.endswith(".json")
    assert set(out[: -len(".json")]) == {char}


def test_fit_without_extension() -> None:
    out = fit_component("😀" * 70)
    assert os.fsencode(out).decode("utf-8") == "😀" * 63  # 252 bytes: 64th does not fit


def test_fit_with_an_extension_too_long_to_keep() -> None:
    name = "a." + "b" * 300
    out = fit_component(name)
    assert nbytes(out) == NAME_MAX
    assert out == name[:NAME_MAX]


def test_fit_non_utf8_bytes_roundtrip() -> None:
    name = os.fsdecode(b"\xff" * 300 + b".csv")
    out = fit_component(name)
    assert os.fsencode(out) == b"\xff" * (NAME_MAX - 4) + b".csv"


def test_fit_to_a_smaller_limit() -> None:
    assert fit_component("abcdefgh.txt", 10) == "abcdef.txt"
    assert fit_component("abcdefgh.txt", 6) == "abcdef"  # an extension over half the room is not kept


# ---------------------------------------------------------------- with_suffix


def test_with_suffix_adds_the_content_tag_before_the_extension() -> None:
    assert with_suffix("a/b/data.csv.gz", SHA, 1) == "a/b/data~01234567.csv.gz"
    assert with_suffix("data", SHA, 1) == "data~01234567"
    assert with_suffix("a/data.csv", SHA, 2) == "a/data~01234567-2.csv"
    assert with_suffix("a/data.csv", SHA, 3) == "a/data~01234567-3.csv"


def test_with_suffix_distinct_per_attempt() -> None:
    outs = {with_suffix("d/x.csv", SHA, n) for n in range(1, 20)}
    assert len(outs) == 19
    assert "d/x.csv" not in outs


def test_with_suffix_on_a_255_byte_name_stays_within_name_max() -> None:
    name = "é" * 120 + "n" * 11 + ".csv"  # 240 + 11 + 4
    assert nbytes(name) == NAME_MAX
    for attempt in (1, 2, 12345):
        out = with_suffix(f"dir/{name}", SHA, attempt)
        head, last = out.split("/")
        assert head == "dir"
        assert nbytes(last) <= NAME_MAX
        os.fsencode(last).decode("utf-8")
        tag = "~01234567" + (f"-{attempt}" if attempt > 1 else "")
        assert last.endswith(tag + ".csv")
        assert last.startswith("éé")


def test_with_suffix_non_utf8() -> None:
    out = with_suffix("in/" + NON_UTF8, SHA, 1)
    assert os.fsencode(out) == b"in/caf\xe9-\xff\xfe~01234567.csv"


def test_with_suffix_huge_extension() -> None:
    out = with_suffix("a." + "e" * 300, SHA, 1)
    assert nbytes(out) <= NAME_MAX
    assert "~01234567" in out


# ---------------------------------------------------------------- validate_layout


@pytest.mark.parametrize(
    "template",
    [
        DEFAULT_LAYOUT,
        "bronze/{yyyy}/{mm}/{dd}/{hhmmss}--{name}",
        "{stem}{ext}",
        "by_hash/{sha8}/{relpath}",
        "literal {{braces}}/{name}",
    ],
)
def test_valid_layouts(template: str) -> None:
    assert validate_layout(template) == template


@pytest.mark.parametrize(
    ("template", "match"),
    [
        ("{nope}/{name}", "unknown field"),
        ("{}/{name}", "unknown field"),
        ("{0}/{name}", "unknown field"),
        ("{name.upper}", "unknown field"),
        ("{name[0]}", "unknown field"),
        ("{name!r}", "format spec"),
        ("{name:>300}", "format spec"),
        ("{date}/{sha8}", "must contain"),
        ("plain", "must contain"),
        ("/abs/{name}", "relative"),
        ("../{name}", "unsafe path"),
        ("{date}/../../{relpath}", "unsafe path"),
        ("{name", "not a valid template"),
        ("name}", "not a valid template"),
    ],
)
def test_invalid_layouts(template: str, match: str) -> None:
    with pytest.raises(LayoutError, match=match):
        validate_layout(template)


def test_layout_error_is_one_line() -> None:
    with pytest.raises(LayoutError) as info:
        validate_layout("{nope\n}")
    assert "\n" not in str(info.value)
