"""The ``shardguard`` root command and the one place errors become exit codes.

Every subcommand is a short function that parses options and calls the
library. Library errors (``ShardGuardError``) print as one line and exit 1;
usage errors exit 2; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import sys
import traceback
from typing import Annotated

import typer
from rich.text import Text

from .. import __version__
from .._progress import console, set_quiet
from ..errors import ShardGuardError

CONTEXT = {"help_option_names": ["-h", "--help"]}

app = typer.Typer(
    name="shardguard",
    help="Distributed and secure CNN inference at the edge: plan, deploy, attack, defend, measure.",
    context_settings=CONTEXT,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)

_state = {"debug": False}


def _version(value: bool) -> None:
    if value:
        print(f"shardguard {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    quiet: Annotated[bool, typer.Option("--quiet", "-q",
                                        help="No progress bars or status lines.")] = False,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks on errors.")] = False,
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Print the version and exit.")] = False,
) -> None:
    """Distributed and secure CNN inference at the edge."""
    set_quiet(quiet)
    _state["debug"] = debug


def _register() -> None:
    from . import analysis, demo, models, planning, runtime  # noqa: F401  (add commands)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script; returns the exit code.

    Typer handles usage errors (exit 2) and ``--help`` itself; every
    ``ShardGuardError`` from the library becomes one line on stderr and exit 1.
    """
    _register()
    try:
        app(args=argv, prog_name="shardguard")
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except ShardGuardError as exc:
        if _state["debug"]:
            traceback.print_exc()
        console.print(Text.assemble(("error: ", "bold red"), str(exc)), soft_wrap=True)
        return 1
    except KeyboardInterrupt:
        console.print("interrupted")
        return 130
    return 0


def run() -> None:  # console script shim
    sys.exit(main())
