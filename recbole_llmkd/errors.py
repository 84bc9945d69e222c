"""How every front end reports a user-facing error: one ``<prog>: error: <message>`` line and an exit status.

``RecboleLLMKDError`` is the base of the plugin's own errors (bad input, mismatched files, impossible configs, a KD
term that stopped a run). Each front end (``run_recbole_llmkd.py`` in all its modes, ``python -m
recbole_llmkd.jobs.convert|export|importer``) runs its work through ``run_reporting_errors``, which turns these
errors, and missing or existing files, into one line on stderr. The full traceback goes to the run log
(``run.log`` of the run that failed, when one was open) and, with ``--debug``, to stderr as well. Anything else is
a bug and keeps its traceback.
"""
import contextlib
import logging
import sys
import traceback
from typing import Callable, Iterator, List, Optional, Sequence

DEBUG_FLAG = "--debug"


class RecboleLLMKDError(Exception):
    """An error the user can act on; the CLI prints its message on one line and exits with ``exit_status``."""

    exit_status = 2  # bad input
    label = "error: "  # what stands between the program's name and the message


class Interrupted(RecboleLLMKDError):
    """Work stopped by Ctrl-C whose message says how to go on (a run, a sweep); not an error."""

    exit_status = 130  # the shell's status for Ctrl-C
    label = ""  # the CLI prints the message (how to resume) without "error:"


@contextlib.contextmanager
def ctrl_c_as(error_class: type, message: str) -> Iterator[None]:
    """A Ctrl-C (``KeyboardInterrupt``) inside the block becomes ``error_class(message)`` (an ``Interrupted``, whose
    message says how to go on)."""
    try:
        yield
    except KeyboardInterrupt:
        raise error_class(message) from None


class ConfigValueError(RecboleLLMKDError, ValueError):
    """A config key holds a value the plugin cannot use; the message names the key, the value and what is allowed."""


class CheckpointMismatchError(RecboleLLMKDError, ValueError):
    """A checkpoint that is not a readable RecBole checkpoint, or (LLMRec, BIGRec) does not belong to this model's
    backbone, item table or dataset."""


# Errors from outside the plugin that are still the user's input, not a bug: a path that is missing or in the way.
USER_OS_ERRORS = (FileNotFoundError, FileExistsError, IsADirectoryError, NotADirectoryError, PermissionError)
# How many offending items (tokens, rows, ranges, files) an error message lists before it stops.
FIRST_FEW = 5


def one_line(message: str) -> str:
    """A message folded onto one line (multi-line messages from libraries keep their words)."""
    return " ".join(str(message).split())


def strip_debug_flag(argv: Sequence[str]) -> tuple:
    """``(argv without --debug, whether it was given)``."""
    argv = list(argv)
    return [arg for arg in argv if arg != DEBUG_FLAG], DEBUG_FLAG in argv


def _log_traceback_to_files(error: BaseException) -> None:
    """Write the traceback to every log file that is open (the run's ``run.log``), never to the console."""
    file_handlers = [h for h in logging.getLogger().handlers if isinstance(h, logging.FileHandler)]
    if not file_handlers:
        return
    record = logging.LogRecord(
        "recbole_llmkd", logging.ERROR, __file__, 0, "stopped by %s: %s", (type(error).__name__, error),
        (type(error), error, error.__traceback__),
    )
    for handler in file_handlers:
        handler.handle(record)


def run_reporting_errors(main: Callable[[List[str]], int], argv: Optional[Sequence[str]], prog: str) -> int:
    """Run ``main(argv)``; a ``RecboleLLMKDError`` or a file error becomes one line and its exit status.

    ``--debug`` anywhere in ``argv`` is removed before ``main`` sees it and prints the traceback too.
    """
    argv, debug = strip_debug_flag(sys.argv[1:] if argv is None else argv)
    try:
        return main(argv)
    except (RecboleLLMKDError,) + USER_OS_ERRORS as error:
        _log_traceback_to_files(error)
        if debug:
            traceback.print_exc(file=sys.stderr)
        label = getattr(error, "label", "error: ")
        print(f"{prog}: {label}{one_line(error)}", file=sys.stderr, flush=True)
        return getattr(error, "exit_status", 2)
    except KeyboardInterrupt as error:  # a Ctrl-C that no job turned into its own Interrupted message
        _log_traceback_to_files(error)
        if debug:
            traceback.print_exc(file=sys.stderr)
        print(f"{prog}: interrupted (Ctrl-C)", file=sys.stderr, flush=True)
        return Interrupted.exit_status
