"""shortlvlm's messages and progress bars, through Python's `logging`.

Every message goes to the `shortlvlm` logger or a child of it (`logging.getLogger(__name__)` in each
module), so a program that embeds shortlvlm silences, redirects or levels it like any library:
`logging.getLogger("shortlvlm").setLevel(logging.WARNING)`. Without configuration, warnings reach
stderr through Python's last-resort handler and information is dropped; while a CLI command runs,
`cli_logging` puts one stderr handler on it (`--quiet`: warnings and errors only, `--verbose`: debug
lines too) and restores the logger afterwards.

Progress bars (tqdm, on stderr) are the one progress mechanism: `progress_bar` draws one while the
`shortlvlm` logger is enabled for INFO (its level is INFO unless someone changes it) and bars are
not turned off for the current context (`progress_bars(False)`, a context manager). No function
takes a `progress` flag.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import sys
from collections.abc import Iterable, Iterator
from typing import Any

from tqdm import tqdm

LOGGER_NAME = "shortlvlm"
logger = logging.getLogger(LOGGER_NAME)
if logger.level == logging.NOTSET:  # INFO by default: bars show, info reaches whatever handler the user adds
    logger.setLevel(logging.INFO)

_BARS: contextvars.ContextVar[bool] = contextvars.ContextVar("shortlvlm_progress_bars", default=True)
_CLI_HANDLER_NAME = "shortlvlm-cli"


def bars_enabled() -> bool:
    """Whether `progress_bar` draws: bars are on in this context and the logger shows information."""
    return _BARS.get() and logger.isEnabledFor(logging.INFO)


@contextlib.contextmanager
def progress_bars(enabled: bool) -> Iterator[None]:
    """Turn progress bars on or off inside a `with` block (this thread or task only)."""
    token = _BARS.set(enabled)
    try:
        yield
    finally:
        _BARS.reset(token)


def progress_bar(iterable: Iterable | None = None, **kwargs: Any) -> tqdm:
    """A tqdm bar on stderr, drawn only when `bars_enabled()`; takes tqdm's arguments (desc, total, unit, leave)."""
    kwargs.setdefault("file", sys.stderr)
    return tqdm(iterable, disable=not bars_enabled(), **kwargs)


class _CliFormatter(logging.Formatter):
    """Information as the text itself; warnings and errors as `shortlvlm: warning: ...` (the CLI's one prefix)."""

    def format(self, record: logging.LogRecord) -> str:
        text = record.getMessage()
        if record.levelno >= logging.ERROR:
            return f"shortlvlm: error: {text}"
        if record.levelno >= logging.WARNING:
            return f"shortlvlm: warning: {text}"
        if record.levelno < logging.INFO:
            return f"shortlvlm: debug: {text}"
        return text


class _CliHandler(logging.Handler):
    """One line on the current stderr (looked up at each message), written above any progress bar."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            tqdm.write(self.format(record), file=sys.stderr)
        except Exception:
            self.handleError(record)


@contextlib.contextmanager
def cli_logging(verbosity: int = 0) -> Iterator[logging.Handler]:
    """The CLI's logging while a command runs: one stderr handler on the `shortlvlm` logger, level INFO,
    WARNING for `verbosity` < 0 (`--quiet`: no progress bars either, transformers' included), DEBUG for > 0
    (`--verbose`). The logger's handlers, level and propagation are restored afterwards."""
    saved = (logger.level, logger.propagate, list(logger.handlers))
    handler = _CliHandler()
    handler.setFormatter(_CliFormatter())
    logger.handlers[:] = [handler]
    logger.propagate = False  # one copy of each line even when the program configured the root logger
    logger.setLevel(logging.WARNING if verbosity < 0 else logging.DEBUG if verbosity > 0 else logging.INFO)
    hf_bars = None
    if verbosity < 0:
        from transformers.utils import logging as hf_logging

        hf_bars = hf_logging.is_progress_bar_enabled()
        hf_logging.disable_progress_bar()
    try:
        yield handler
    finally:
        logger.setLevel(saved[0])
        logger.propagate = saved[1]
        logger.handlers[:] = saved[2]
        if hf_bars:
            from transformers.utils import logging as hf_logging

            hf_logging.enable_progress_bar()


__all__ = ["LOGGER_NAME", "bars_enabled", "cli_logging", "logger", "progress_bar", "progress_bars"]
