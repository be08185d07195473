"""Sources: the ``[[source]]`` tables of a config, and the landing dirs (sites) each matches.

A config holds any number of sources; without ``[[source]]`` tables the plain
settings (``--input`` ...) describe one source named ``default``. A source's
``path`` may hold placeholders (``templates.py``): every existing directory
that matches is a *site*, one landing dir with its own warehouse, manifests
and samples dirs (the source's templates filled with the site's values) and
the source's per-file policy. Everything else is daemon-wide.

Precedence for a source's setting: its ``[[source]]`` table > flags >
``INGESTOR_*`` environment > the file's top level > defaults. Refused with one
line (``SettingsError``, exit 2), before anything is watched: two sources with
one name, a landing dir two sources could both match, a warehouse, manifests
or samples dir (or the ledger) that could lie inside any landing dir, a
manifests dir that could overlap a warehouse, an unknown placeholder in a
template or layout, ``..`` in a template, a daemon-wide setting in a
``[[source]]`` table, ``--input`` beside ``[[source]]`` tables.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ingestor.layout import FIELDS, fields_of
from ingestor.settings import (
    TABLE,
    Settings,
    SettingsError,
    absolute,
    check_paths,
    fill_origins,
    finish,
    gather,
    parse_value,
)
from ingestor.templates import Template, TemplateError, check_fields

DEFAULT_NAME = "default"
_SOURCE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}\Z")
TEMPLATED = ("warehouse", "manifests", "samples")


@dataclass(frozen=True, slots=True)
class Site:
    """One landing dir: its source, its placeholder values and its concrete settings."""

    source: str
    values: tuple[tuple[str, str], ...]
    settings: Settings
    site_id: int = -1  # the ledger's ids of the landing dir and its warehouse, once registered
    wh: int = -1
    serial: int = 0  # which time this process serves it (a lander process opens it again)

    @property
    def landing(self) -> Path:
        return self.settings.input

    @property
    def key(self) -> str:
        return str(self.settings.input)

    @property
    def dataset(self) -> dict[str, str]:
        return dict(self.values)


@dataclass(frozen=True, slots=True)
class Source:
    name: str
    settings: Settings  # input, warehouse, manifests, samples: the template texts
    path: Template
    templates: Mapping[str, Template | None]  # warehouse, manifests, samples

    def site(self, landing: Path, values: Mapping[str, str]) -> Site:
        s = self.settings
        paths = {k: t.render(values) if t is not None else None for k, t in self.templates.items()}
        concrete = dataclasses.replace(s, input=landing, **paths)  # type: ignore[arg-type]
        return Site(self.name, tuple(sorted(values.items())), concrete)

    def sites(self, refused: Callable[[Path, str], None] | None = None) -> list[Site]:
        """The landing dirs that match now (a literal path: itself, if it is a directory)."""
        return [self.site(p, v) for p, v in self.path.expand(refused)]

    def match(self, landing: Path) -> Site | None:
        values = self.path.match(landing)
        return None if values is None else self.site(landing, values)


@dataclass(frozen=True, slots=True)
class Config:
    settings: Settings  # daemon-wide values (the first source's copy)
    sources: tuple[Source, ...]
    plain: bool  # no [[source]] tables: one landing dir from the plain settings
    origins: Mapping[str, str]

    def source(self, name: str) -> Source:
        for s in self.sources:
            if s.name == name:
                return s
        raise SettingsError(f"no source named {name!r}; known: {', '.join(s.name for s in self.sources)}")


def load(
    flags: Mapping[str, Any],
    *,
    config: Path | None = None,
    environ: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> Config:
    """The whole configuration: the plain settings as one source, or every ``[[source]]``."""
    environ = os.environ if environ is None else environ
    cwd = cwd or Path.cwd()
    g = gather(flags, config=config, environ=environ)
    if not g.sources:
        return dataclasses.replace(
            plain_config(finish(g.merged, cwd, g.origins)), origins=fill_origins(g.origins)
        )
    if "input" in g.merged:
        raise SettingsError(
            f"config file {g.config} has [[source]] tables: --input (or INGESTOR_INPUT, or a top-level "
            "input) cannot be given with them; give each source its path"
        )
    if g.merged.get("state_path") is None:
        raise SettingsError(f"config file {g.config} has [[source]] tables: give a top-level state_path")
    sources = tuple(_source(i, t, g.merged, g.given, g.config, cwd) for i, t in enumerate(g.sources))
    _check_sources(sources)
    return Config(sources[0].settings, sources, False, fill_origins(g.origins))


def _literal_templates(s: Settings) -> dict[str, Template | None]:
    return {k: None if getattr(s, k) is None else Template.literal_path(getattr(s, k)) for k in TEMPLATED}


def _source(
    index: int,
    table: dict[str, Any],
    top: dict[str, Any],
    given: dict[str, str],
    config: Path | None,
    cwd: Path,
) -> Source:
    where = f"[[source]] #{index + 1} of {config}"
    name = table.pop("name", None)
    if not isinstance(name, str) or not _SOURCE_NAME.match(name):
        raise SettingsError(f"{where}: give a name of letters, digits, '.', '_' or '-' (got {name!r})")
    where = f"source {name!r} in {config}"
    if "input" in table:
        raise SettingsError(f"{where}: the landing dir is its path, not input")
    path_text = table.pop("path", None)
    if not isinstance(path_text, str):
        raise SettingsError(f"{where}: give its path (the landing dir, placeholders allowed)")
    values = dict(top)
    for key, value in table.items():
        if key not in TABLE:
            raise SettingsError(f"{where}: unknown setting {key!r}")
        if not TABLE[key].per_source:
            raise SettingsError(f"{where}: {key} is daemon-wide; set it at the top level")
        values[key] = parse_value(key, value, f"value in {where}")
    try:
        path = _template(path_text, "path", cwd)
        clash = set(path.names) & (FIELDS | {"source"})
        if clash:
            raise TemplateError(
                f"path {path_text!r}: placeholder(s) {sorted(clash)} are layout fields; choose other names"
            )
        values["input"] = Path(path.text)
        templates: dict[str, Template | None] = {}
        for key in TEMPLATED:
            text = values.get(key)
            if text is None and key != "samples":
                text = os.path.join(path.text, "..", key)  # the plain default, beside the landing dir
            templates[key] = None if text is None else _template(str(text), key, cwd)
            if templates[key] is not None:
                check_fields(templates[key].text, set(path.names), f"{key} of source {name!r}")  # type: ignore[union-attr]
                values[key] = Path(templates[key].text)  # type: ignore[union-attr]
    except TemplateError as exc:
        raise SettingsError(f"invalid {where}: {exc}") from None
    layout_names = {f for f in fields_of(values.get("layout", "") or "") if "-" not in f} - FIELDS
    unknown = layout_names - set(path.names) - {"source"}
    if unknown:
        raise SettingsError(
            f"invalid layout of source {name!r}: unknown placeholder(s) {sorted(unknown)}; "
            f"its path has {sorted(path.names) or 'none'}"
        )
    values["state_path"] = absolute(values["state_path"], cwd)
    s = Settings(**values)
    if path.literal:  # a plain landing dir: every check of the plain settings
        check_paths(s)
    return Source(name, s, path, templates)


def _template(text: str, what: str, cwd: Path) -> Template:
    if not text.strip() or text != text.strip() or "\0" in text:
        raise TemplateError(f"{what} {text!r} is empty or has white space around it")
    raw = os.path.expanduser(text)
    if ".." in raw.split("/") and what == "path":
        raise TemplateError(f"{what} {text!r} has a '..' component: it could escape its root")
    t = Template.parse(os.path.normpath(os.path.join(cwd, raw)), what)
    if str(t.head) == "/" and what == "path":
        raise TemplateError(
            f"{what} {text!r}: a landing dir cannot be / or directly below it by a placeholder"
        )
    return t


# ------------------------------------------------------------------ overlaps between sources


def _component_overlap(a: str, b: str) -> bool:
    """Could one directory name match both components (placeholders match any name)?"""
    ha, hb = "{" in a, "{" in b
    if not ha and not hb:
        return a == b
    if not ha or not hb:
        lit, pat = (a, b) if not ha else (b, a)
        return Template.parse("/" + pat).match("/" + lit) is not None
    pa, pb = a.split("{", 1)[0], b.split("{", 1)[0]
    sa, sb = a.rsplit("}", 1)[1], b.rsplit("}", 1)[1]
    return (pa.startswith(pb) or pb.startswith(pa)) and (sa.endswith(sb) or sb.endswith(sa))


def _real_parts(t: Template) -> list[str]:
    """The template's components with its literal head resolved (a symlinked prefix)."""
    head = os.path.realpath(t.head)
    rest = t.parts[len(t.head.parts) - 1 :]
    return [p for p in head.split("/") if p] + list(rest)


def could_be_inside(child: Template, parent: Template) -> bool:
    """Could a path the child template gives be the parent's, or below it?"""
    for c, p in ((child.parts, parent.parts), (_real_parts(child), _real_parts(parent))):
        if len(c) >= len(p) and all(_component_overlap(x, y) for x, y in zip(c, p, strict=False)):
            return True
    return False


def _check_sources(sources: Iterable[Source]) -> None:
    srcs = list(sources)
    names = [s.name for s in srcs]
    for n in names:
        if names.count(n) > 1:
            raise SettingsError(f"two sources are named {n!r}: names must be unique")
    for i, a in enumerate(srcs):
        for b in srcs[i + 1 :]:
            if could_be_inside(a.path, b.path) or could_be_inside(b.path, a.path):
                raise SettingsError(
                    f"sources {a.name!r} and {b.name!r} could both match a file: "
                    f"{a.path.text} and {b.path.text} overlap"
                )
    state = Template.literal_path(srcs[0].settings.state_path)
    for a in srcs:
        outputs = {k: t for k, t in a.templates.items() if t is not None}
        for b in srcs:
            for key, t in outputs.items():
                if could_be_inside(t, b.path) or could_be_inside(b.path, t):
                    raise SettingsError(
                        f"invalid {key} of source {a.name!r}: {t.text} could overlap the landing dir "
                        f"{b.path.text} of source {b.name!r}; it would be ingested"
                    )
            for key in ("warehouse", "manifests"):
                out = b.templates[key]
                if out is not None and could_be_inside(state, out):
                    raise SettingsError(
                        f"invalid state_path: it could be inside {key} {out.text} of {b.name!r}"
                    )
            if could_be_inside(state, b.path):
                raise SettingsError(f"invalid state_path: it could be inside the landing dir {b.path.text}")
            mf, wh = a.templates["manifests"], b.templates["warehouse"]
            assert mf is not None and wh is not None
            if could_be_inside(mf, wh) or could_be_inside(wh, mf):
                raise SettingsError(
                    f"invalid manifests of source {a.name!r}: {mf.text} could overlap the warehouse "
                    f"{wh.text} of source {b.name!r}; manifest files would be audited as landed files"
                )


def plain_config(s: Settings) -> Config:
    """One landing dir's settings as a config of one source."""
    src = Source(DEFAULT_NAME, s, Template.literal_path(s.input), _literal_templates(s))
    return Config(s, (src,), True, {})


def plain_site(s: Settings) -> Site:
    """The landing dir of a ledger of one: site 0, warehouse 0."""
    return Site(DEFAULT_NAME, (), s, 0, 0)


def site_ok(site: Site) -> str | None:
    """A discovered site's concrete paths checked as plain settings are; the cause if refused."""
    try:
        check_paths(site.settings)
    except SettingsError as exc:
        return str(exc)
    return None


def only(cfg: Config, name: str) -> Config:
    """The config with one source (``--source NAME``)."""
    return dataclasses.replace(cfg, sources=(cfg.source(name),))


def targets(cfg: Config, paths: Iterable[Path]) -> dict[str, list[str]]:
    """``replay PATHS``: each landing dir to scan → the paths below it ("" for all of it).

    A path below a landing dir is that dir's; with sources, a path above
    landing dirs (a vendor's directory) means every landing dir below it.
    Anything else is refused (ValueError).
    """
    out: dict[str, list[str]] = {}
    for p in paths:
        absolute = os.path.abspath(p)
        full = os.path.join(os.path.realpath(os.path.dirname(absolute)), os.path.basename(absolute))
        hit = False
        for src in cfg.sources:
            for site in _candidates(src):
                root = os.path.realpath(site.landing)
                if full == root or full.startswith(root + "/"):
                    out.setdefault(site.key, []).append(os.path.relpath(full, root) if full != root else "")
                    hit = True
                elif not cfg.plain and root.startswith(full.rstrip("/") + "/"):
                    out.setdefault(site.key, []).append("")
                    hit = True
        if not hit:
            landing = cfg.sources[0].path.text if cfg.plain else "any landing dir of the sources"
            raise ValueError(f"{p} is not inside the landing dir {landing}")
    return out


def _candidates(src: Source) -> list[Site]:
    return [src.site(src.path.head, {})] if src.path.literal else src.sites()
