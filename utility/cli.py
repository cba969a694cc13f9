"""One error style for every command (run_pretrain.py, run_downstream.py, hub.py, analysis).

A mistake in what the user gave (an option, a value, a missing or wrong file, a folder in use)
or in what the machine can give (disk space, memory) prints one line ``error: ...`` that names
the input and the fix, and exits with status 2. A traceback is shown only for a bug (any other
exception), or for everything with ``--debug``. Ctrl-C exits with status 130 and SIGTERM, which
unwinds the same way, with 143 (after a training loop has saved a checkpoint, see
``utility.interrupt``).

    if __name__ == "__main__":
        run_cli(main, memory_hint="lower the batch size: -o data.batch_size=N")
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import os
import signal
import sys
import warnings
from typing import Any, Callable, Iterator, NoReturn, Optional, Sequence

import torch
from tqdm import tqdm

from .interrupt import Terminated, TrainingInterrupted, exit_status, terminate_like_ctrl_c
from .process_defaults import apply_cli_process_defaults

EXIT_USER_ERROR = 2  # as argparse uses for a bad command line
EXIT_INTERRUPTED = exit_status(signal.SIGINT)  # 130, what shells report for Ctrl-C
EXIT_TERMINATED = exit_status(signal.SIGTERM)  # 143
DEBUG_FLAG = "--debug"
DISK_FULL = (errno.ENOSPC, errno.EDQUOT)
# Package names of code that users wrote and the commands import by path (a task folder of
# one's own: downstream/discovery.py names them so). An error raised there is the user's to
# fix in their file, so its one line says where.
USER_CODE_PACKAGE_PREFIX = "user_code_"


class ArgumentParser(argparse.ArgumentParser):
    """argparse with a ``--debug`` option and one-line errors: ``error: ... (see PROG -h)``.

    Option names must be written out (``allow_abbrev=False``): otherwise a misspelt or
    unknown option such as ``--task`` is silently taken as the prefix of another (``--tasks-dir``)."""

    def __init__(self, *args: Any, **kwargs: Any):
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)
        self.add_argument(DEBUG_FLAG, action="store_true", help="show the full traceback of any error")

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USER_ERROR, f"error: {message} (see {self.prog} -h)\n")


def check_output_is_not_an_input(
    output: Optional[str | os.PathLike], inputs: Sequence[Optional[str | os.PathLike]], option: str
) -> None:
    """Refuse an ``output`` that is one of the command's ``inputs`` (the same file, also through
    a symbolic or hard link or another spelling of the path): writing it would destroy the input."""
    if output is None or not os.path.exists(output):
        return  # a file that does not exist yet is no input
    for given in inputs:
        if given is not None and os.path.exists(given) and os.path.samefile(output, given):
            raise ValueError(
                f"{option} {output} is one of this command's inputs ({given}); writing it would destroy that input: "
                "give another output path"
            )


def add_override_option(parser: argparse.ArgumentParser, *flags: str, help: str) -> None:
    """``-o KEY=VALUE [KEY=VALUE ...]``, repeatable; the values arrive as one flat list."""
    parser.add_argument(*(flags or ("-o", "--override")), action="extend", nargs="+", default=[], metavar="KEY=VALUE", help=help)


def add_moved_option(parser: argparse.ArgumentParser, flag: str, new_form: str) -> None:
    """An option that this command no longer takes: given, it is refused naming ``new_form``
    (command lines in users' scripts get the new spelling instead of "unrecognized arguments")."""

    class Moved(argparse.Action):
        def __call__(self, parser, namespace, values, option_string=None):  # noqa: ANN001
            parser.error(f"{option_string} is now {new_form}")

    parser.add_argument(flag, action=Moved, nargs="?", help=argparse.SUPPRESS)


def refuse_output_as_override(parser: argparse.ArgumentParser, overrides: Sequence[str], output_flag: str) -> None:
    """``-o FILE``, the old spelling of the output file in commands where ``-o`` now takes
    ``KEY=VALUE`` overrides: refused naming ``output_flag``."""
    for item in overrides:
        if "=" not in item:
            parser.error(
                f"-o takes KEY=VALUE overrides (as in every command); {item!r} is no override: "
                f"write the output file as {output_flag} {item}"
            )


def is_out_of_memory(error: BaseException) -> bool:
    if isinstance(error, (MemoryError, torch.OutOfMemoryError)):
        return True
    text = str(error)
    return isinstance(error, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text)


def user_error_message(error: BaseException, memory_hint: str) -> Optional[str]:
    """The one-line message for a user-side error; None for a bug (shown with its traceback)."""
    if is_out_of_memory(error):
        detail = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        return f"out of memory ({detail}); {memory_hint}"
    if isinstance(error, OSError) and error.errno in DISK_FULL:
        where = f" while writing {error.filename}" if error.filename else ""
        return f"no space left on the device{where}; free some space or write the experiment to another disk (-p DIR)"
    if isinstance(error, OSError) and error.strerror and error.filename:
        return f"{error.strerror}: {error.filename}"
    if isinstance(error, KeyError) and error.args:
        return str(error.args[0])
    if isinstance(error, (ValueError, OSError, KeyError, ImportError)):
        return str(error)
    return None


def user_code_place(error: BaseException) -> Optional[str]:
    """``FILE:LINE`` of the innermost traceback frame in users' own code, or None."""
    place, frame = None, error.__traceback__
    while frame is not None:
        if frame.tb_frame.f_globals.get("__name__", "").startswith(USER_CODE_PACKAGE_PREFIX):
            place = f"{frame.tb_frame.f_code.co_filename}:{frame.tb_lineno}"
        frame = frame.tb_next
    return place


def run_cli(
    main: Callable[[list[str]], Any],
    argv: Optional[Sequence[str]] = None,
    memory_hint: str = "lower the batch size",
) -> None:
    """Run ``main(argv)`` as a command: exit 0 on success, 2 with one line for a user-side
    error, 130 on Ctrl-C, 143 on SIGTERM; tracebacks only for bugs or with ``--debug``. The
    process gets the commands' settings first (``utility.process_defaults``: allocator,
    flush-to-zero, each task's thread count)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    apply_cli_process_defaults()
    try:
        with terminate_like_ctrl_c(), command_line_warnings():
            main(argv)
    except TrainingInterrupted as stop:
        _say(str(stop))
        sys.exit(stop.exit_status)
    except Terminated:
        _say("terminated (SIGTERM)")
        sys.exit(EXIT_TERMINATED)
    except KeyboardInterrupt:
        _say("interrupted (Ctrl-C)")
        sys.exit(EXIT_INTERRUPTED)
    except Exception as error:
        message = user_error_message(error, memory_hint)
        if message is None or DEBUG_FLAG in argv:
            raise
        place = user_code_place(error)
        if place is not None:
            message = f"{message} (raised in {place}; {DEBUG_FLAG} shows the traceback)"
        _say(f"error: {message}")
        sys.exit(EXIT_USER_ERROR)


@contextlib.contextmanager
def command_line_warnings() -> Iterator[None]:
    """Warnings that carry command-line wording (``command_line``, e.g. the random-weights
    warning: ``-k PATH`` rather than Python's ``ckpt=PATH``) print it as ``warning: ...``;
    others print as usual. Restored on exit."""
    with warnings.catch_warnings():
        show = warnings.showwarning

        def show_for_command_line(message, category, filename, lineno, file=None, line=None):  # noqa: ANN001
            text = getattr(message, "command_line", None)
            if text is None:
                show(message, category, filename, lineno, file, line)
            else:
                _say(f"warning: {text}")

        warnings.showwarning = show_for_command_line
        yield


def _say(line: str) -> None:
    """On stderr, on a line of its own even when a progress bar was drawing there."""
    tqdm.write(line, file=sys.stderr)
