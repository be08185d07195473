"""Include and exclude globs on a path below the landing dir (``env*/**``, ``**/temp_*``).

``*`` and ``?`` stay within one component, ``**`` spans components (``**/``
also matches no component at all), ``[abc]`` / ``[!abc]`` are sets as in
``fnmatch`` (never matching ``/``). A list of globs compiles to one regex.
"""

from __future__ import annotations

import re
from collections.abc import Sequence


def _translate(glob: str) -> str:
    out: list[str] = []
    i, n = 0, len(glob)
    while i < n:
        c = glob[i]
        if glob.startswith("**/", i):
            out.append("(?:[^/]*/)*")
            i += 3
        elif glob.startswith("**", i):
            out.append(".*")
            i += 2
        elif c == "*":
            out.append("[^/]*")
            i += 1
        elif c == "?":
            out.append("[^/]")
            i += 1
        elif c == "[":
            j = i + 1
            if j < n and glob[j] == "!":
                j += 1
            if j < n and glob[j] == "]":
                j += 1
            while j < n and glob[j] != "]":
                j += 1
            if j >= n:
                raise ValueError(f"glob {glob!r} has an unclosed '['")
            body = glob[i + 1 : j]
            negate = body.startswith("!")
            body = body[1:] if negate else body
            body = body.replace("\\", "\\\\").replace("^", "\\^")
            out.append(f"[^/{body}]" if negate else f"(?!/)[{body}]")
            i = j + 1
        else:
            out.append(re.escape(c))
            i += 1
    return "".join(out)


def compile_globs(globs: Sequence[str]) -> re.Pattern[str] | None:
    """One regex matching a relative path that any glob matches; None for no globs."""
    if not globs:
        return None
    for g in globs:
        if not g or g.startswith("/"):
            raise ValueError(f"glob {g!r} must be a non-empty path below the landing dir")
    try:
        return re.compile("(?:" + "|".join(_translate(g) for g in globs) + r")\Z", re.DOTALL)
    except re.error as exc:
        raise ValueError(f"invalid glob: {exc}") from None
