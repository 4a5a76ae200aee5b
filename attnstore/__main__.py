"""`python -m attnstore ...` = the `attnstore` command."""

from attnstore.cli import run

run()
