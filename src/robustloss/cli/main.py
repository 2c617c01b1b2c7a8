"""The ``robustloss`` entry point: the parser of every command, and the one place that turns errors into
one-line messages and exit codes."""

from __future__ import annotations

import argparse
import contextlib
import errno
import os
import sys

from robustloss import __version__
from robustloss.cli.analysis import add_analyze_parser
from robustloss.cli.catalog import add_catalog_parsers, add_demo_parser
from robustloss.cli.console import attach_console
from robustloss.cli.eval import add_eval_parser
from robustloss.cli.experiments import add_experiment_parsers
from robustloss.cli.train import _cmd_train, add_train_parser
from robustloss.errors import RobustlossError

DESCRIPTION = ("Train image classifiers with robust losses (PC, MMC, I-SCE and their baselines) and evaluate "
               "their adversarial robustness honestly.")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "handler"):
        parser.print_help()
        return 2
    attach_console()
    if hasattr(args, "device"):
        _join_torchrun_job(args)
    finished = False
    try:
        if hasattr(args, "device"):
            from robustloss.device import resolve_device

            resolve_device(args.device)  # a device this machine lacks is refused before any work starts
        code = args.handler(args) or 0
        finished = True
        return code
    except RobustlossError as err:
        return _error(str(err))
    except BrokenPipeError:  # `robustloss ls | head`: the reader left; nothing is wrong with the data
        # Point stdout at /dev/null, so that flushing it at exit does not fail a second time (Python docs).
        with contextlib.suppress(OSError, ValueError):  # a captured stdout (tests) has no file descriptor
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except OSError as err:  # the system refused a read or write: full disk, permissions, read-only, ...
        return _error(describe_os_error(err, resume_hint=args.handler is _cmd_train))
    except RuntimeError as err:  # PyTorch reports a full disk as a RuntimeError of its zip writer
        from robustloss.experiments.runner import describe_failure, disk_full

        if not disk_full(err):
            raise
        return _error(describe_failure(err) + (" (with --resume)" if args.handler is _cmd_train else ""))
    except KeyboardInterrupt:
        print("\ninterrupted; finished epochs and evaluation chunks are kept: re-run the same command to continue "
              "(`robustloss train` needs --resume)", file=sys.stderr)
        return 130
    finally:
        from robustloss import distributed

        # Leave the process group cleanly: a rank that exits with gloo's threads still running
        # is aborted by the C++ runtime, and torchrun then reports the whole job as failed.
        distributed.teardown(together=finished)


def _error(message: str) -> int:
    print(f"robustloss: error: {message}", file=sys.stderr)
    return 1


_DISK_FULL_ADVICE = ("The file being written was not completed; files written before it, the results store and "
                     "finished runs are unchanged. Free some space, then run the same command again")


def describe_os_error(err: OSError, resume_hint: bool = False) -> str:
    """One line for an OSError that reached the command line: what the system refused, on which path,
    and what to do about it."""
    path = err.filename  # None when the write went through a file object; the writers fill it in where they can
    where = f" {path}" if path is not None else ""
    if err.errno in (errno.ENOSPC, errno.EDQUOT):
        what = "no space left on device" if err.errno == errno.ENOSPC else "disk quota exceeded"
        return (f"{what}{' writing' + where if where else ''}. " + _DISK_FULL_ADVICE
                + (" (with --resume)" if resume_hint else ""))
    if err.errno in (errno.EACCES, errno.EPERM):
        return f"permission denied:{where}; choose a path you can write to, or change its permissions"
    if err.errno == errno.EROFS:
        return f"read-only file system:{where}; write the output somewhere else"
    if err.errno == errno.ENOENT:  # also what creating a folder inside /proc or a vanished mount says
        return f"no such file or folder:{where}; check the path (a folder to write into must exist or be creatable)"
    if err.errno == errno.ENOTDIR:
        return f"a part of{where} is a file where a folder is needed; choose another path"
    if err.errno == errno.EISDIR:
        return f"{path} is a folder; give a file name" if path else "expected a file, found a folder"
    if err.errno == errno.EEXIST:
        return f"{path} exists and is not a folder; choose another path" if path else str(err)
    return f"{err.strerror or err}:{where}" if where else str(err)


def _join_torchrun_job(args: argparse.Namespace) -> None:
    """Under ``torchrun``: join the process group, take this rank's GPU, and keep every rank but
    rank 0 quiet on stdout (they run the same command; one copy of its output is enough)."""
    from robustloss import distributed

    if not distributed.launched_by_torchrun():
        return
    state, args.device = distributed.setup(args.device)
    if state is not None and not state.is_main:
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - lives as long as the process
        args.progress = False


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="robustloss", description=DESCRIPTION)
    parser.add_argument("--version", action="version", version=f"robustloss {__version__}")
    sub = parser.add_subparsers(metavar="COMMAND")

    add_demo_parser(sub)
    add_experiment_parsers(sub)
    add_analyze_parser(sub)
    add_train_parser(sub)
    add_eval_parser(sub)
    add_catalog_parsers(sub)
    return parser


if __name__ == "__main__":
    sys.exit(main())
