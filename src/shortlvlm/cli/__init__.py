"""Command-line interface: a thin shell over the jobs (shortlvlm.jobs); one module per subcommand."""

from shortlvlm.cli.main import build_parser, main

__all__ = ["build_parser", "main"]
