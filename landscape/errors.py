"""One error type for bad user input, and the wrapper that turns it into one stderr line.

Every command-line entry point ends in `sys.exit(run_cli(main))`: a `UserError` raised anywhere
below becomes `error: <message>` on stderr and exit code 2, never a traceback. The Python API
(`landscape.api`) raises the same exception, under its public name `LandscapeError`, with the
same message.
"""
from __future__ import annotations

import signal
import sys
from typing import TYPE_CHECKING, Callable, Optional, Sequence

if TYPE_CHECKING:
    import argparse

EXIT_USAGE = 2
EXIT_TERMINATED = 128 + signal.SIGTERM


class LandscapeError(Exception):
    """Bad input from the user: a flag, an argument, a path, a file's contents, or the user's own
    model, loss or metric failing. The message names the bad value, in one line."""


UserError = LandscapeError  # the name the scripts use


class Terminated(BaseException):
    """SIGTERM arrived (a cluster pre-empting the job): unwind so `finally` blocks save the work."""


def exit_cleanly_on_sigterm() -> None:
    def handler(signum, frame):
        # Slurm signals the ranks and srun forwards the signal again: a second SIGTERM must not
        # interrupt the first one's save of the computed points.
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        raise Terminated()
    signal.signal(signal.SIGTERM, handler)


def run_cli(main: Callable[[Optional[Sequence[str]]], Optional[int]],
            argv: Optional[Sequence[str]] = None) -> int:
    """Run `main(argv)` and map UserError (and Ctrl-C) to a one-line message and exit code."""
    try:
        rc = main(argv)
    except UserError as e:
        if type(e).__name__ != "QuietExit":  # a peer MPI rank already printed it
            print(f"error: {e}", file=sys.stderr, flush=True)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr, flush=True)
        return 130
    except Terminated:
        print("terminated (SIGTERM)", file=sys.stderr, flush=True)
        return EXIT_TERMINATED
    return 0 if rc is None else rc


class ArgParser:
    """Factory for argparse parsers whose usage errors are one line, like every other error."""

    @staticmethod
    def make(description: str, prog: Optional[str] = None) -> argparse.ArgumentParser:
        import argparse

        class _Parser(argparse.ArgumentParser):
            def error(self, message):
                print(f"error: {message} (see {self.prog} --help)", file=sys.stderr, flush=True)
                sys.exit(EXIT_USAGE)

        from landscape.version import __version__
        parser = _Parser(description=description, prog=prog, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
        parser.add_argument("--version", action="version", version=f"%(prog)s (loss-landscape) {__version__}")
        return parser
