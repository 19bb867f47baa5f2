"""`python -m odradek` is the `odradek` command."""

from odradek.cli.main import app

app(prog_name="odradek")
