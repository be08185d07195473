"""What every command line of the project shares: one error line, exit codes, ``--version``.

``main`` runs a typer app the way a service is run from a shell or systemd:
a usage error or a bad value is one line (``<prog>: error: ...``) on stderr
and exit 2, never click's multi-line usage box; ``--help`` and ``--version``
print and exit 0; no command prints the help on stderr and exits 2.

Only typer's public API is used. click's exception base class, which typer
does not export under a name of its own, is found through the class
hierarchy of ``typer.BadParameter``, which it does export.

(No ``from __future__ import annotations`` here: the root's ``--version``
option is built per program, and typer reads its annotation at run time.)
"""

import sys
from collections.abc import Callable
from typing import Annotated, Any

import typer

from ingestor import __version__

# click's ClickException (usage errors and bad values, exit_code 2), through a public name
ClickException: type[Exception] = next(
    c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException"
)

APP_STYLE: dict[str, Any] = {
    "add_completion": False,
    "pretty_exceptions_enable": False,
    "rich_markup_mode": None,
}


def root(app: typer.Typer, prog: str, help_text: str) -> None:
    """Give ``app`` a root with ``--version`` that prints the help (exit 2) when no command is given."""

    def version(value: bool) -> None:
        if value:
            print(f"{prog} {__version__}")
            raise typer.Exit(0)

    @app.callback(invoke_without_command=True, help=help_text)
    def _root(
        ctx: typer.Context,
        version: Annotated[
            bool,
            typer.Option("--version", callback=version, is_eager=True, help="Print the version and exit."),
        ] = False,
    ) -> None:
        if ctx.invoked_subcommand is None:
            print(ctx.get_help(), file=sys.stderr)
            raise typer.Exit(2)


def group(help_text: str) -> typer.Typer:
    """A sub-command group of ``app`` that, given no command, prints its help (exit 2)."""
    sub = typer.Typer(**APP_STYLE)

    @sub.callback(invoke_without_command=True, help=help_text)
    def _group(ctx: typer.Context) -> None:
        if ctx.invoked_subcommand is None:
            print(ctx.get_help(), file=sys.stderr)
            raise typer.Exit(2)

    return sub


def main(
    app: typer.Typer,
    prog: str,
    argv: list[str] | None,
    handlers: dict[type[BaseException], Callable[[Any], int]] | None = None,
) -> int:
    """Run ``app``; returns the exit code. ``handlers`` map the project's own exceptions to codes."""
    try:
        result = app(args=sys.argv[1:] if argv is None else argv, prog_name=prog, standalone_mode=False)
    except ClickException as exc:
        message = " ".join(exc.format_message().split()) or "missing command (try --help)"  # type: ignore[attr-defined]
        print(f"{prog}: error: {message}", file=sys.stderr)
        return int(getattr(exc, "exit_code", 2))
    except typer.Abort:
        print(f"{prog}: aborted", file=sys.stderr)
        return 130
    except Exception as exc:
        for kind, handle in (handlers or {}).items():
            if isinstance(exc, kind):
                return handle(exc)
        raise
    return int(result) if isinstance(result, int) else 0
