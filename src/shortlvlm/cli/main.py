"""The `shortlvlm` command: one parser per subcommand (a module each), errors as one line and exit code 2."""

from __future__ import annotations

import argparse
import errno
import signal
import sys
import threading

from shortlvlm.cli import bench, compare, demo, models, prune, score
from shortlvlm.cli import eval as evaluate
from shortlvlm.errors import ShortLVLMError
from shortlvlm.io.output import is_write_failure, os_error_of, write_error
from shortlvlm.log import cli_logging
from shortlvlm.version import __version__

EXIT_USER_ERROR = 2
ENVIRONMENT_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EACCES, errno.EPERM, errno.EROFS)
SUBCOMMANDS = (models, score, prune, compare, evaluate, bench, demo)


ERROR_PREFIX = "shortlvlm: error: "  # every user error of every command starts so, whoever finds it


class OneLineParser(argparse.ArgumentParser):
    """argparse with the project's error form: one line naming the problem and where help is, no usage dump."""

    commands: dict[str, argparse.ArgumentParser] | None = None  # the top-level parser's subcommands

    def error(self, message: str):
        self.exit(EXIT_USER_ERROR, f"{ERROR_PREFIX}{message} (see {self.prog} --help)\n")

    def parse_args(self, args=None, namespace=None):
        """As argparse's, but a flag the subcommand does not know points at that subcommand's help."""
        parsed, extras = self.parse_known_args(args, namespace)
        if extras:
            (self.commands or {}).get(getattr(parsed, "command", None), self).error(
                f"unrecognized arguments: {' '.join(extras)}")
        return parsed


def add_verbosity(parser: argparse.ArgumentParser, default) -> None:
    """--quiet / --verbose: how much of the `shortlvlm` logger the command prints (shortlvlm.log.cli_logging)."""
    talk = parser.add_mutually_exclusive_group()
    talk.add_argument("-q", "--quiet", action="store_true", default=default,
                      help="print results, warnings and errors only: no progress lines or bars")
    talk.add_argument("-v", "--verbose", action="store_true", default=default, help="also print debug lines")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="shortlvlm",
        description="Make vision-language models smaller and faster by removing redundant decoder "
        "layers, without training (after Short-LVLM). MODEL is a hub id or a local directory.",
    )
    parser.add_argument("--version", action="version", version=f"shortlvlm {__version__}")
    add_verbosity(parser, default=False)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=OneLineParser)
    for command in SUBCOMMANDS:
        command.add_parser(sub)
    for command_parser in sub.choices.values():  # also after the subcommand: `shortlvlm prune ... --quiet`
        add_verbosity(command_parser, default=argparse.SUPPRESS)
    parser.commands = dict(sub.choices)
    return parser


def _terminate(signum, frame):
    """SIGTERM (kill, a scheduler's timeout) unwinds like Ctrl-C, so temporary outputs are removed."""
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        with cli_logging(-1 if args.quiet else 1 if args.verbose else 0):
            return args.func(args)
    except ShortLVLMError as err:
        print(f"{ERROR_PREFIX}{err}", file=sys.stderr)
        return EXIT_USER_ERROR
    except Exception as err:
        # A full disk, a quota, a read-only mount or a permission met where no job foresaw it: one line.
        code, _ = os_error_of(err)
        if not is_write_failure(err) or code not in ENVIRONMENT_ERRNOS:
            raise
        print(f"{ERROR_PREFIX}{write_error(getattr(err, 'filename', None) or 'the output', err)}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("shortlvlm: interrupted; the output location was left as it was (finished stages, if any, "
              "are kept for the next run of the same command)", file=sys.stderr)
        return 130
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
