"""Path templates of sources: ``/srv/data/{vendor}/{dataset}/{version}/raw``.

A placeholder (``{name}``, a Python identifier) stands for part or all of one
path component; in a source's ``path`` every directory that matches is a
landing dir, and the values it matched (``{"vendor": "sp", ...}``) fill the
same placeholders in its warehouse, manifests and samples templates and in
its layout. A value is never empty, ``.``, ``..``, dot-leading (hidden
directories are never landing dirs) or a name that is not UTF-8: a template
filled with the values of a real directory stays below its literal head.

``expand`` finds the directories that match, level by level from the
template's literal head, without following a symlink below it (the head
itself may be one: ``/srv/data`` a link to a mount). ``levels`` lists the
directories to watch for new matches (the existing parents of each
placeholder level).
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

_FIELD = re.compile(r"\{([^{}]*)\}")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


class TemplateError(ValueError):
    """A template that cannot be used; the message is one line."""


def names_in(text: str) -> list[str]:
    """The placeholder names of a template, in order; braces must balance."""
    names: list[str] = []
    rest = _FIELD.sub(lambda m: names.append(m.group(1)) or "", text)  # type: ignore[func-returns-value]
    if "{" in rest or "}" in rest:
        raise TemplateError(f"{text!r} has an unbalanced brace")
    return names


def valid_value(value: str) -> bool:
    """Can a directory name be a placeholder's value?"""
    if not value or value.startswith(".") or "/" in value or "\0" in value:
        return False
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:  # a surrogate-escaped byte: not UTF-8
        return False
    return True


@dataclass(frozen=True, slots=True)
class Template:
    """An absolute path template (``path``, ``warehouse``, ``manifests``, ``samples``)."""

    text: str
    parts: tuple[str, ...]  # components after "/"
    names: tuple[str, ...]
    head: Path  # the literal components before the first placeholder
    _regexes: tuple[re.Pattern[str] | None, ...]

    @classmethod
    def parse(cls, text: str, what: str = "path") -> Template:
        if not text.startswith("/"):
            raise TemplateError(f"{what} {text!r} must be an absolute path")
        names = names_in(text)
        for n in names:
            if not _NAME.match(n):
                raise TemplateError(f"{what} {text!r}: {{{n}}} is not a placeholder name")
        if len(set(names)) != len(names):
            raise TemplateError(f"{what} {text!r} uses a placeholder twice")
        parts = tuple(p for p in text.split("/") if p)
        for p in parts:
            if p in (".", ".."):
                raise TemplateError(f"{what} {text!r} has a {p!r} component: it could escape its root")
        regexes: list[re.Pattern[str] | None] = []
        for p in parts:
            if "{" not in p:
                regexes.append(None)
                continue
            pattern = ""
            for i, piece in enumerate(_FIELD.split(p)):
                pattern += f"(?P<{piece}>.+?)" if i % 2 else re.escape(piece)
            regexes.append(re.compile(pattern + r"\Z", re.DOTALL))
        first = next((i for i, r in enumerate(regexes) if r is not None), len(parts))
        return cls(text, parts, tuple(names), Path("/", *parts[:first]), tuple(regexes))

    @classmethod
    def literal_path(cls, path: Path) -> Template:
        """A plain directory as a template without placeholders (braces in it are literal)."""
        parts = tuple(p for p in str(path).split("/") if p)
        return cls(str(path), parts, (), Path(path), (None,) * len(parts))

    @property
    def literal(self) -> bool:
        return not self.names

    def render(self, values: Mapping[str, str]) -> Path:
        """The path for a landing dir's values (every placeholder must have one)."""
        if self.literal:
            return self.head
        return Path(self.text.format_map(dict(values)))

    def match(self, path: str | Path) -> dict[str, str] | None:
        """The values if ``path`` (absolute, normalised) matches, else None."""
        parts = [p for p in str(path).split("/") if p]
        if len(parts) != len(self.parts):
            return None
        values: dict[str, str] = {}
        for part, want, rx in zip(parts, self.parts, self._regexes, strict=True):
            if rx is None:
                if part != want:
                    return None
                continue
            m = rx.match(part)
            if m is None or not all(valid_value(v) for v in m.groupdict().values()):
                return None
            values.update(m.groupdict())
        return values

    def expand(
        self, refused: Callable[[Path, str], None] | None = None
    ) -> Iterator[tuple[Path, dict[str, str]]]:
        """Every existing directory that matches, with its values, sorted.

        Below the head no symlink is followed. ``refused`` hears of a
        directory that would match but has a name a value cannot be.
        """
        depth = len(self.head.parts) - 1
        if not _is_dir(self.head, follow=True):
            return
        level: list[tuple[Path, dict[str, str]]] = [(self.head, {})]
        for part, rx in zip(self.parts[depth:], self._regexes[depth:], strict=True):
            nxt: list[tuple[Path, dict[str, str]]] = []
            for base, values in level:
                if rx is None:
                    if _is_dir(base / part, follow=False):
                        nxt.append((base / part, values))
                    continue
                for name in _subdirs(base):
                    m = rx.match(name)
                    if m is None:
                        continue
                    found = m.groupdict()
                    if not all(valid_value(v) for v in found.values()):
                        if refused is not None and not name.startswith("."):
                            refused(
                                base / name, "its name is not a valid placeholder value (UTF-8, not dot-led)"
                            )
                        continue
                    nxt.append((base / name, {**values, **found}))
            level = nxt
        yield from sorted(level, key=lambda pv: str(pv[0]))

    def levels(self) -> list[Path]:
        """Existing directories in which a new entry could make a new match: watched for it."""
        depth = len(self.head.parts) - 1
        if self.literal:
            return [self.head.parent]
        out: list[Path] = []
        level = [self.head] if _is_dir(self.head, follow=True) else []
        for part, rx in zip(self.parts[depth:-1], self._regexes[depth:-1], strict=True):
            out.extend(level)
            nxt: list[Path] = []
            for base in level:
                if rx is None:
                    if _is_dir(base / part, follow=False):
                        nxt.append(base / part)
                    continue
                nxt.extend(
                    base / n
                    for n in _subdirs(base)
                    if (m := rx.match(n)) and all(map(valid_value, m.groupdict().values()))
                )
            level = nxt
        out.extend(level)
        return out

    def approach(self) -> tuple[Path, str]:
        """The deepest existing directory of the literal head, and the next name below it.

        A head that does not exist yet (``/srv/data`` made after the start) is
        watched for from the nearest directory above it that does.
        """
        path = self.head
        name = ""
        while not _is_dir(path, follow=True) and path != path.parent:
            path, name = path.parent, path.name
        return path, name


def _is_dir(path: Path, *, follow: bool) -> bool:
    try:
        st = os.stat(path) if follow else os.lstat(path)
    except OSError:
        return False
    return stat.S_ISDIR(st.st_mode)


def _subdirs(base: Path) -> list[str]:
    """Directory names directly in ``base`` (never through a symlink); [] if unreadable."""
    try:
        with os.scandir(base) as it:
            return sorted(e.name for e in it if e.is_dir(follow_symlinks=False))
    except OSError:
        return []


def check_fields(template: str, allowed: set[str], what: str) -> None:
    """Refuse a template that uses a placeholder its source's path does not define."""
    unknown = set(names_in(template)) - allowed
    if unknown:
        raise TemplateError(
            f"{what} {template!r} uses unknown placeholder(s) {sorted(unknown)}; "
            f"known: {sorted(allowed) or 'none'}"
        )
