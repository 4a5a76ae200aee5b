"""The `attnstore` command: one entry point, one module of subcommands per workflow.

User mistakes (AttnstoreError) end as one line on stderr and exit code 1, never
a traceback. Each `attnstore.cli.<module>` registers its commands on `app`.

Start-up: typer reads every command's signature on each run, so command modules keep real
annotations (no `from __future__ import annotations`: strings would be compiled again on every run),
and import what only one command needs inside that command.
"""

import sys

import typer
from typer.core import TyperGroup

from attnstore.errors import AttnstoreError, InvalidArgument

# `attnstore --help` lists commands in the order of a workflow (make a store, look at it, analyse it, move it).
COMMAND_ORDER = (
    "demo", "extract", "info", "validate", "serve", "heatmap", "aggregate", "grounding", "analyze", "methods",
    "models", "pack", "import-legacy", "export-legacy", "pope", "demo-model",
)  # fmt: skip


class WorkflowGroup(TyperGroup):
    """Commands in workflow order, each described by its docstring's whole first sentence (click cuts it)."""

    def list_commands(self, ctx) -> list[str]:
        rank = {name: i for i, name in enumerate(COMMAND_ORDER)}
        return sorted(super().list_commands(ctx), key=lambda name: (rank.get(name, len(rank)), name))

    def format_commands(self, ctx, formatter) -> None:
        commands = [(name, self.get_command(ctx, name)) for name in self.list_commands(ctx)]
        rows = [(name, first_sentence(cmd.help or "")) for name, cmd in commands if cmd is not None and not cmd.hidden]
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


def first_sentence(text: str) -> str:
    paragraph = " ".join(text.strip().split("\n\n")[0].split())
    end = paragraph.find(". ")
    return paragraph if end < 0 else paragraph[: end + 1]


app = typer.Typer(
    name="attnstore",
    cls=WorkflowGroup,
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


def flag(param: str, positional: frozenset[str] = frozenset()) -> str:
    """How the CLI spells a library parameter: its flag, or the metavar of a positional argument."""
    if param in positional:
        return param.upper()
    return FLAG_OF_PARAM.get(param, "--" + param.replace("_", "-"))


def error_line(err: AttnstoreError, positional: frozenset[str] = frozenset()) -> str:
    """One line for a user mistake: invalid arguments name the flag (or the argument) the user typed."""
    if isinstance(err, InvalidArgument):
        return f"{flag(err.param, positional)} {err.detail}"
    if err.param and err.param not in FLAGLESS_PARAMS and err.param not in positional:
        return f"{err} ({flag(err.param)})"
    return str(err)


def positional_params(argv: list[str] | None) -> frozenset[str]:
    """Names of the invoked command's positional arguments (a message names them as STORE, not --store)."""
    args = sys.argv[1:] if argv is None else argv
    command = typer.main.get_command(app).commands.get(args[0]) if args else None
    params = getattr(command, "params", [])
    return frozenset(p.name for p in params if p.param_type_name == "argument")


def main(argv: list[str] | None = None) -> int:
    try:
        # Without standalone mode click returns typer.Exit's code instead of raising it.
        code = app(args=argv, standalone_mode=False)
    except AttnstoreError as err:
        typer.secho(f"error: {error_line(err, positional_params(argv))}", fg="red", err=True)
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
