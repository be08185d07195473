"""``sampler`` command line (thin): flags made from the settings table, ``settings.load``, run.

Every flag comes from a row of ``settings.TABLE`` (help, default, metavar,
environment variable), as the ingestor's do, so ``sampler run --help`` reads
like ``ingestor run --help``. Values reach the settings reader as given:
one parser judges a value whatever it came from (flag, ``SAMPLER_*``
environment, ``[sampler]`` table). A bad value or combination prints one
line, ``sampler: error: ...``, on stderr and exits 2.
"""

from __future__ import annotations

import inspect
import sys
from collections.abc import Callable
from typing import Annotated, Any

import typer

from ingestor import command
from ingestor.logs import configure
from sampler.run import run as run_sampler
from sampler.settings import DEFAULTS, ENV_PREFIX, TABLE, SettingsError, load

app = typer.Typer(**command.APP_STYLE)
command.root(app, "sampler", "Follow the ingestor's manifests and write small same-format samples.")


def _shown_default(name: str) -> str | None:
    spec = TABLE[name]
    if spec.default_text is not None:
        return spec.default_text
    value = DEFAULTS[name]
    if value is None:
        return None
    if isinstance(value, bool):
        return spec.off[2:] if spec.off and not value else str(value).lower()
    return str(value)


def flag(name: str) -> inspect.Parameter:
    """The typer option of one setting, from its row of the table."""
    spec = TABLE[name]
    long = "--" + name.replace("_", "-")
    is_bool = DEFAULTS[name] is False or DEFAULTS[name] is True
    decls = [f"{long}/{spec.off}"] if is_bool and spec.off else [long, *([spec.short] if spec.short else [])]
    default = _shown_default(name)
    choices = f"[{'|'.join(spec.choices)}]" if spec.choices else None
    option = typer.Option(
        *decls,
        help=f"{spec.help} [env: {ENV_PREFIX}{name.upper()}]" + (f" [default: {default}]" if default else ""),
        show_default=False,
        metavar=spec.metavar or choices,
    )
    kind: Any = bool if is_bool else str  # values stay text: the settings table judges them
    return inspect.Parameter(
        name, inspect.Parameter.KEYWORD_ONLY, default=None, annotation=Annotated[kind | None, option]
    )


def with_flags(names: list[str]) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """Give a command the flags of ``names``; it receives them as one ``flags`` dict (None: not given)."""

    def decorate(fn: Callable[..., None]) -> Callable[..., None]:
        params = [flag(n) for n in names]

        def wrapper(**kwargs: Any) -> None:
            fn(flags=kwargs)

        wrapper.__name__, wrapper.__doc__, wrapper.__module__ = fn.__name__, fn.__doc__, fn.__module__
        wrapper.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
        wrapper.__annotations__ = {p.name: p.annotation for p in params}
        return wrapper

    return decorate


@app.command()
@with_flags(list(TABLE))
def run(flags: dict[str, Any]) -> None:
    """Sample every ingested file the manifests list, from the checkpoints on.

    Follow one manifests dir (--manifests, --samples), or every manifests dir
    of every source of the ingestor's config (--config). Precedence: flags >
    SAMPLER_* environment > the [sampler] table of the --config file >
    defaults.
    """
    settings = load(flags)
    configure(settings.log_level)
    raise typer.Exit(run_sampler(settings))


def _one_line(exc: Exception) -> int:
    print(f"sampler: error: {exc}", file=sys.stderr)
    return 2


def main(argv: list[str] | None = None) -> int:
    return command.main(app, "sampler", argv, {SettingsError: _one_line})


if __name__ == "__main__":
    sys.exit(main())
