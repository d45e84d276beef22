"""`python -m vaekit` (and `torchrun -m vaekit`) run the command line."""

from vaekit.cli import command

command()
