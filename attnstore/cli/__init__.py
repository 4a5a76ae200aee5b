"""The `attnstore` command: one entry point, one module of subcommands per workflow.

User mistakes (AttnstoreError) end as one line on stderr and exit code 1, never
a traceback. Each `attnstore.cli.<module>` registers its commands on `app`.
"""

from __future__ import annotations

import sys

import typer

from attnstore.errors import AttnstoreError, InvalidArgument

app = typer.Typer(
    name="attnstore",
    help="Store and explore the attention of vision-language models.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    rich_markup_mode=None,  # plain click help: no '<bool>' metavars on flags, no box drawing in pipes
)

# Importing registers the commands (kept after `app` exists).
from attnstore.cli import analyze as _analyze  # noqa: E402,F401
from attnstore.cli import demo_model as _demo_model  # noqa: E402,F401
from attnstore.cli import extract as _extract  # noqa: E402,F401
from attnstore.cli import grounding as _grounding  # noqa: E402,F401
from attnstore.cli import inspect as _inspect  # noqa: E402,F401
from attnstore.cli import legacy as _legacy  # noqa: E402,F401
from attnstore.cli import models as _models  # noqa: E402,F401
from attnstore.cli import pack as _pack  # noqa: E402,F401
from attnstore.cli import pope as _pope  # noqa: E402,F401
from attnstore.cli import serve as _serve  # noqa: E402,F401
from attnstore.cli import studies as _studies  # noqa: E402,F401

MODEL_SIDE = {"torch", "transformers", "tokenizers", "safetensors", "distributed"}

# Library parameter -> this CLI's flag, where the flag is not simply --param-with-dashes.
FLAGLESS_PARAMS = {"token", "image", "position", "row"}  # named in the message itself
FLAG_OF_PARAM = {"normalise_mode": "--normalise", "images": "IMAGES", "keys": "--image-keys"}


def flag(param: str) -> str:
    """How the CLI spells a library parameter."""
    return FLAG_OF_PARAM.get(param, "--" + param.replace("_", "-"))


def error_line(err: AttnstoreError) -> str:
    """One line for a user mistake: invalid arguments name the flag the user typed."""
    if isinstance(err, InvalidArgument):
        return f"{flag(err.param)} {err.detail}"
    if err.param and err.param not in FLAGLESS_PARAMS:
        return f"{err} ({flag(err.param)})"
    return str(err)


def main(argv: list[str] | None = None) -> int:
    try:
        # Without standalone mode click returns typer.Exit's code instead of raising it.
        code = app(args=argv, standalone_mode=False)
    except AttnstoreError as err:
        typer.secho(f"error: {error_line(err)}", fg="red", err=True)
        return 1
    except ModuleNotFoundError as err:
        if (err.name or "").split(".")[0] not in MODEL_SIDE:
            raise
        typer.secho(
            f"error: this command runs a model, which needs the model side ({err.name} is not installed): "
            "pip install 'attnstore[extract]'",
            fg="red",
            err=True,
        )
        return 1
    except typer.Abort:
        typer.echo("aborted", err=True)
        return 130
    except typer.Exit as ex:
        return ex.exit_code
    except Exception as err:
        # Usage errors (unknown option, bad value) are click's ClickException; typer >= 0.2x vendors
        # its own copy of click, so recognise them by their interface rather than by one class.
        if callable(getattr(err, "show", None)) and isinstance(getattr(err, "exit_code", None), int):
            err.show()
            return err.exit_code
        raise
    return code if isinstance(code, int) else 0


def run() -> None:
    sys.exit(main())
