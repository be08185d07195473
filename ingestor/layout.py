"""Warehouse layout: where a landed file goes, as a path relative to the warehouse.

A template names the fields below; the default is ``ingest_date={date}/{relpath}``
and ``bronze/{yyyy}/{mm}/{dd}/{hhmmss}--{name}`` expresses the "bronze" style.

=============  ==============================================================
``{date}``     UTC landing date ``YYYY-MM-DD``
``{yyyy}`` ``{mm}`` ``{dd}`` ``{hh}`` ``{hhmmss}``  parts of the UTC landing time
``{relpath}``  the path relative to the landing dir (``a/b/data.csv``)
``{reldir}``   its directory part (empty at the top level)
``{name}``     the file name (``data.csv``); ``{stem}`` ``data``; ``{ext}`` ``.csv``
``{sha256}``   the content hash; ``{sha8}`` its first 8 hex digits
``{relpath-N}``  ``{relpath}`` without its first N directories (``{relpath-1}`` of
               ``env0/a/data.csv`` is ``a/data.csv``; never less than the name)
``{reldir-N}``   ``{reldir}`` without its first N directories
``{source}``   the source's name; ``{vendor}``... its path's placeholders
=============  ==============================================================

Every path component is kept within the 255-byte ``NAME_MAX``: a long name is
shortened in its stem, never in its extension, at a UTF-8 character boundary.
"""

from __future__ import annotations

import functools
import os
import re
import string
import time
from collections.abc import Mapping

DEFAULT_LAYOUT = "ingest_date={date}/{relpath}"
NAME_MAX = 255
FIELDS = frozenset(
    {"date", "yyyy", "mm", "dd", "hh", "hhmmss", "relpath", "reldir", "name", "stem", "ext", "sha256", "sha8"}
)
_DROP = re.compile(r"(relpath|reldir)-([0-9]{1,2})\Z")
_PLACEHOLDER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_COMPRESSION = frozenset({".gz", ".bz2", ".xz", ".zst", ".lz4", ".z", ".zip"})


class LayoutError(ValueError):
    """A layout template that cannot produce a safe relative path."""


def split_name(name: str) -> tuple[str, str]:
    """``data.csv.gz`` → (``data``, ``.csv.gz``); ``.hidden`` and ``noext`` have no ext."""
    stem, ext = os.path.splitext(name)
    if ext.lower() in _COMPRESSION:
        stem2, ext2 = os.path.splitext(stem)
        if ext2 and len(ext2) <= 10:
            return stem2, ext2 + ext
    return stem, ext


def fields_of(template: str) -> set[str]:
    """The field names a (valid) layout uses."""
    return {f for _, f, _, _ in string.Formatter().parse(template) if f is not None}


def validate_layout(template: str, *, placeholders: bool = False) -> str:
    """A layout that renders a safe relative path. With ``placeholders`` any name is
    accepted as a source's placeholder (its source checks them)."""
    names = set()
    try:
        for _, field, spec, conv in string.Formatter().parse(template):
            if field is None:
                continue
            if spec or conv:
                raise LayoutError(f"layout field {{{field}}} takes no format spec")
            names.add(field)
    except ValueError as exc:
        raise LayoutError(f"layout {template!r} is not a valid template: {exc}") from None
    unknown = {n for n in names - FIELDS if not _DROP.match(n)}
    if placeholders:
        bad = {n for n in unknown if not _PLACEHOLDER.match(n)}
        if bad:
            raise LayoutError(f"layout field(s) {sorted(bad)} are not names")
        unknown = set()
    if unknown:
        raise LayoutError(f"layout has unknown field(s) {sorted(unknown)}; known: {sorted(FIELDS)}")
    if not (names & {"relpath", "name", "stem"} or any(n.startswith("relpath-") for n in names)):
        raise LayoutError("layout must contain {relpath}, {relpath-N}, {name} or {stem}")
    if template.startswith("/"):
        raise LayoutError("layout must be a relative path")
    render(template, "sub/dir/sample.csv", 0, "0" * 64, {n: "x" for n in names - FIELDS})
    return template


@functools.lru_cache(maxsize=4)
def _time_fields(second: int) -> dict[str, str]:
    t = time.gmtime(second)
    return {
        "date": f"{t.tm_year:04d}-{t.tm_mon:02d}-{t.tm_mday:02d}",
        "yyyy": f"{t.tm_year:04d}",
        "mm": f"{t.tm_mon:02d}",
        "dd": f"{t.tm_mday:02d}",
        "hh": f"{t.tm_hour:02d}",
        "hhmmss": f"{t.tm_hour:02d}{t.tm_min:02d}{t.tm_sec:02d}",
    }


def _drop(rel: str, n: int, keep_name: bool) -> str:
    parts = rel.split("/")
    dirs, name = parts[:-1][n:], parts[-1]
    return "/".join([*dirs, name]) if keep_name else "/".join(dirs)


def render(template: str, rel: str, ns: int, sha256: str, extra: Mapping[str, str] | None = None) -> str:
    """The warehouse-relative path of ``rel`` landed at ``ns`` with content ``sha256``;
    ``extra``: the source's name and placeholder values, and ``{relpath-N}`` fields."""
    if template == DEFAULT_LAYOUT:  # the common case, without str.format
        out = f"ingest_date={_time_fields(ns // 1_000_000_000)['date']}/{rel}"
        if "/." not in "/" + out and "//" not in out and not out.endswith("/"):
            return out if all(len(p) <= 63 for p in out.split("/")) or _fits(out) else _fit_all(out)
    name = os.path.basename(rel)
    stem, ext = split_name(name)
    fields = dict(extra) if extra else {}
    if "-" in template:
        for f in fields_of(template):
            m = _DROP.match(f)
            if m:
                fields[f] = _drop(rel, int(m.group(2)), m.group(1) == "relpath")
    out = template.format(
        **fields,
        **_time_fields(ns // 1_000_000_000),
        relpath=rel,
        reldir=os.path.dirname(rel),
        name=name,
        stem=stem,
        ext=ext,
        sha256=sha256,
        sha8=sha256[:8],
    )
    return _fit_all(out, template, rel)


def _fits(path: str) -> bool:
    return all(len(os.fsencode(p)) <= NAME_MAX for p in path.split("/"))


def _fit_all(out: str, template: str = DEFAULT_LAYOUT, rel: str = "") -> str:
    parts = [p for p in out.split("/") if p not in ("", ".")]
    if not parts or ".." in parts:
        raise LayoutError(f"layout {template!r} gives an unsafe path {out!r} for {rel!r}")
    return "/".join(fit_component(p) for p in parts)


def fit_component(name: str, limit: int = NAME_MAX) -> str:
    """Shorten a path component to ``limit`` bytes, cutting the stem only."""
    raw = os.fsencode(name)
    if len(raw) <= limit:
        return name
    stem, ext = split_name(name)
    ext_raw = os.fsencode(ext)
    if len(ext_raw) > limit // 2:
        stem, ext_raw = name, b""
    room = limit - len(ext_raw)
    cut = os.fsencode(stem)[:room]
    # back off to a UTF-8 character boundary (continuation bytes are 10xxxxxx)
    while cut and len(cut) < len(os.fsencode(stem)) and (os.fsencode(stem)[len(cut)] & 0xC0) == 0x80:
        cut = cut[:-1]
    return os.fsdecode(cut + ext_raw)


def without_suffix(rel: str, sha256: str) -> str:
    """Undo ``with_suffix`` (any attempt) so that a re-plan does not stack suffixes."""
    head, name = os.path.split(rel)
    stem, ext = split_name(name)
    tag = f"~{sha256[:8]}"
    cut = stem.rfind(tag)
    if cut < 0 or not (stem[cut + len(tag) :] == "" or stem[cut + len(tag) :].lstrip("-").isdigit()):
        return rel
    new = stem[:cut] + ext
    return f"{head}/{new}" if head else new


def with_suffix(rel: str, sha256: str, attempt: int) -> str:
    """The same path with a content suffix in its name: ``a/data~1a2b3c4d.csv``.

    ``attempt`` 1 gives the plain suffix; later attempts add ``-2``, ``-3``...
    (only needed when the same content lands twice under ``--dedup path+content``).
    """
    head, name = os.path.split(rel)
    stem, ext = split_name(name)
    tag = f"~{sha256[:8]}" + (f"-{attempt}" if attempt > 1 else "")
    stem_room = NAME_MAX - len(os.fsencode(ext)) - len(tag)
    short = fit_component(stem, max(stem_room, 1)) if stem_room > 0 else ""
    new = fit_component(short + tag + ext)
    return f"{head}/{new}" if head else new
