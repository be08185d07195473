"""The sources the sampler follows, read from the ingestor's TOML config (``--config``).

Input: the TOML file the ingestor runs with. Output: a ``Config``: one
``Source`` per ``[[source]]`` table (its landing ``path`` and its
``warehouse``, ``manifests`` and ``samples`` templates, see
``ingestor.templates``), the default of the sampler's state dir, and the
``[sampler]`` table as written (its values are judged by ``settings``).

The sampler reads only these keys; every other key (``mode``, ``include``,
``layout``, ``dedup_scope``...) is the ingestor's, judged by the ingestor and
ignored here::

    state_path = "/var/lib/ingestor/ledger.sqlite"   # state dir default: <its dir>/sampler
    samples = "/srv/samples/{vendor}"                 # top-level keys: defaults for every source

    [[source]]
    name = "sp"                                       # unique
    path = "/srv/data/{vendor}/{dataset}/{version}/raw"
    warehouse = "/srv/data/{vendor}/{dataset}/{version}/bronze"
    manifests = "/srv/data/{vendor}/{dataset}/{version}/manifests"
    samples = "/srv/data/{vendor}/{dataset}/{version}/samples"

    [sampler]                                         # the sampler's own settings
    state_dir = "/var/lib/ingestor-sampler"

A source's own key wins over the top-level one; with neither, ``warehouse``,
``manifests`` and ``samples`` are ``<path>/../warehouse`` (``manifests``,
``samples``): beside the landing dir, the ingestor's rule (the ingestor has
no default for ``samples``; the sampler puts them beside the others). A file
without ``[[source]]`` tables is one source named ``default`` made of the
top-level ``input`` (or, with no ``input``, ``manifests``), ``warehouse``,
``manifests`` and ``samples``, plain paths with no placeholders. As for the
ingestor, a relative path is taken from the working directory and ``~`` is
expanded. The top-level keys may also sit in an ``[ingestor]`` table.

Refused with one line (``ConfigError``; the CLI exits 2), before anything is
created:

- a file that cannot be read or is not TOML; a ``[[source]]`` without a
  unique ``name`` (letters, digits, ``.``, ``_``, ``-``, as the ingestor
  wants) or a ``path``; a value of the wrong type; a ``path`` with a ``..``
  component or unbalanced braces;
- a ``warehouse``, ``manifests`` or ``samples`` template that uses a
  placeholder its source's ``path`` does not define; a ``samples`` template
  that lacks a placeholder of its ``warehouse`` (two warehouses of a source
  would share one samples dir, and their samples collide);
- a source's ``samples`` dir that could be or lie inside its ``manifests``,
  ``warehouse`` or landing dir, or hold one of them (``could_nest``: a
  placeholder may take any value). Across two sources the same is refused
  for literal templates; dirs that only values make overlap are refused per
  manifests dir when found (``streams``);
- the state dir inside a ``manifests``, ``warehouse`` or landing dir.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ingestor.templates import Template, TemplateError, check_fields

TEMPLATE_KEYS = ("warehouse", "manifests", "samples")
DEFAULT_NAME = "default"  # the ingestor's name for the one source of a file without [[source]]
_FIELD = re.compile(r"\{[^{}]*\}")
_SOURCE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}\Z")


class ConfigError(ValueError):
    """A config the sampler cannot run with; the message is one line."""


@dataclass(frozen=True, slots=True)
class Source:
    """One source as the sampler sees it: where its manifests are, what they point at, where samples go."""

    name: str  # "default" for the one source of a file without [[source]] tables
    path: Template | None  # the landing dir(s); None when a file without sources names no input
    warehouse: Template
    manifests: Template
    samples: Template


@dataclass(frozen=True, slots=True)
class Config:
    path: Path
    sources: tuple[Source, ...]
    state_dir: Path | None  # the default: <dir of state_path>/sampler, if the file says where that is
    sampler: Mapping[str, Any]  # the [sampler] table, keys with "_"


def read(path: Path, cwd: Path | None = None) -> Config:
    """Read and check the file's sources (not the state dir: see ``check_state_dir``)."""
    cwd = cwd or Path.cwd()
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    top = data.get("ingestor", data)
    if not isinstance(top, dict):
        raise ConfigError(f"config file {path}: [ingestor] must be a table")
    sampler = data.get("sampler", top.get("sampler", {}))
    if not isinstance(sampler, dict):
        raise ConfigError(f"config file {path}: [sampler] must be a table")
    tables = top.get("source", data.get("source"))
    try:
        state = _text(top, "state_path", "")
        state_dir = _absolute(state, cwd).parent / "sampler" if state else None
        if not tables:
            sources: tuple[Source, ...] = (_only_source(top, cwd),)
            anchor = _text(top, "input", "") or _text(top, "manifests", "")
            if state_dir is None:  # the ingestor's ledger default: <input>/../state/ledger.sqlite
                state_dir = _absolute(anchor, cwd).parent / "state" / "sampler"
        else:
            sources = _sources(tables, top, cwd)
        check(sources)
    except (ConfigError, TemplateError) as exc:
        raise ConfigError(f"config file {path}: {exc}") from None
    return Config(path, sources, state_dir, {k.replace("-", "_"): v for k, v in sampler.items()})


def _text(table: Mapping[str, Any], key: str, what: str) -> str:
    value = table.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise ConfigError(f"{what}{key} must be a string, not {value!r}")
    if not value.strip():
        raise ConfigError(f"{what}{key} is empty")
    return value


def _absolute(text: str, cwd: Path) -> Path:
    return Path(os.path.normpath(cwd / os.path.expanduser(text)))


def _beside(path: str, name: str) -> str:
    """``<path>/../<name>`` as a template's text (``path`` is absolute, not ``/``)."""
    return path.rstrip("/").rsplit("/", 1)[0] + "/" + name


def _only_source(top: Mapping[str, Any], cwd: Path) -> Source:
    """The one source of a file without [[source]] tables: the ingestor's top-level keys."""
    given = {k: _text(top, k, "") for k in ("input", *TEMPLATE_KEYS)}
    given = {k: str(_absolute(v, cwd)) if v else "" for k, v in given.items()}
    anchor = given["input"] or given["manifests"]
    if not anchor:
        raise ConfigError("no [[source]] table, and no input or manifests at the top level")
    if anchor == "/":
        raise ConfigError("input cannot be /")
    for key in TEMPLATE_KEYS:
        given[key] = given[key] or _beside(anchor, key)
    path = Template.literal_path(Path(given["input"])) if given["input"] else None
    templates = [Template.literal_path(Path(given[k])) for k in TEMPLATE_KEYS]
    return Source(DEFAULT_NAME, path, *templates)


def _template(text: str, what: str, cwd: Path) -> Template:
    """A source's template, made absolute as the ingestor makes it (``..`` refused in a path)."""
    if text != text.strip() or "\0" in text:
        raise TemplateError(f"{what} {text!r} has white space around it or a NUL byte")
    raw = os.path.expanduser(text)
    if what == "path" and ".." in raw.split("/"):
        raise TemplateError(f"{what} {text!r} has a '..' component: it could escape its root")
    return Template.parse(os.path.normpath(os.path.join(cwd, raw)), what)


def _sources(tables: Any, top: Mapping[str, Any], cwd: Path) -> tuple[Source, ...]:
    if not isinstance(tables, list) or not all(isinstance(t, dict) for t in tables):
        raise ConfigError("source must be an array of tables ([[source]])")
    out: list[Source] = []
    seen: set[str] = set()
    for i, table in enumerate(tables, 1):
        name = table.get("name")
        if not isinstance(name, str) or not _SOURCE_NAME.match(name):
            raise ConfigError(
                f"[[source]] #{i}: give a name of letters, digits, '.', '_' or '-' (got {name!r})"
            )
        if name in seen:
            raise ConfigError(f"two sources are named {name!r}")
        seen.add(name)
        what = f"source {name!r}: "
        path = _text(table, "path", what)
        if not path:
            raise ConfigError(f"{what}no path")
        texts = {k: _text(table, k, what) or _text(top, k, "") for k in TEMPLATE_KEYS}
        try:
            landing = _template(path, "path", cwd)
            if not landing.parts:
                raise TemplateError("path cannot be /")
            for key in TEMPLATE_KEYS:
                texts[key] = texts[key] or _beside(landing.text, key)
            templates = [_template(texts[k], k, cwd) for k in TEMPLATE_KEYS]
            for key, t in zip(TEMPLATE_KEYS, templates, strict=True):
                check_fields(t.text, set(landing.names), key)
        except TemplateError as exc:
            raise ConfigError(f"{what}{exc}") from None
        out.append(Source(name, landing, *templates))
    return tuple(out)


# ----------------------------------------------------------------- overlaps


def _pattern(part: str) -> re.Pattern[str] | None:
    """A template component as a regex (a placeholder: one or more characters); None if literal."""
    pieces = _FIELD.split(part)
    if len(pieces) == 1:
        return None
    return re.compile(".+".join(re.escape(p) for p in pieces) + r"\Z", re.DOTALL)


def _may_equal(a: str, b: str) -> bool:
    """Could template components ``a`` and ``b`` name the same directory?"""
    ra, rb = _pattern(a), _pattern(b)
    if ra is None and rb is None:
        return a == b
    if ra is None:
        return rb is not None and rb.match(a) is not None
    if rb is None:
        return ra.match(b) is not None
    return True  # two patterns: some values may make them equal


def could_nest(inner: Template, outer: Template) -> bool:
    """Could a directory ``inner`` names be one ``outer`` names, or lie below one?"""
    if len(inner.parts) < len(outer.parts):
        return False
    return all(_may_equal(a, b) for a, b in zip(inner.parts, outer.parts, strict=False))


def _overlap(a: Template, b: Template) -> bool:
    return could_nest(a, b) or could_nest(b, a)


def _others(s: Source) -> list[tuple[str, Template]]:
    return [("manifests", s.manifests), ("warehouse", s.warehouse), *([("path", s.path)] if s.path else [])]


def check(sources: tuple[Source, ...]) -> None:
    """Refuse the overlaps and missing placeholders of the module docstring."""
    for s in sources:
        missing = sorted(set(s.warehouse.names) - set(s.samples.names))
        if missing:
            raise ConfigError(
                f"{_who(s)}samples {s.samples.text!r} lacks the warehouse's placeholder(s) "
                f"{missing}: the samples of different warehouses would collide"
            )
        for key, other in _others(s):
            if _overlap(s.samples, other):
                raise ConfigError(
                    f"{_who(s)}samples {s.samples.text!r} and {key} {other.text!r} could be "
                    "the same directory or one inside the other"
                )
    for i, s in enumerate(sources):
        if not s.samples.literal:
            continue
        for j, t in enumerate(sources):
            if i == j:
                continue
            pairs = [*_others(t), *([("samples", t.samples)] if j > i else [])]
            for key, other in pairs:
                if other.literal and _overlap(s.samples, other):
                    raise ConfigError(
                        f"{_who(s)}samples {s.samples.text!r} and {_who(t)}{key} {other.text!r} "
                        "are the same directory or one inside the other"
                    )


def check_state_dir(sources: tuple[Source, ...], state_dir: Path) -> None:
    """Refuse a state dir inside a manifests, warehouse or landing dir (it would be read as data)."""
    if "{" in str(state_dir) or "}" in str(state_dir):
        raise ConfigError(f"state_dir {str(state_dir)!r} cannot hold braces")
    state = Template.parse(str(state_dir), "state_dir")
    for s in sources:
        for key, other in _others(s):
            if could_nest(state, other):
                raise ConfigError(f"state_dir {state_dir} could lie inside {_who(s)}{key} {other.text!r}")


def _who(s: Source) -> str:
    return f"source {s.name!r}: "
