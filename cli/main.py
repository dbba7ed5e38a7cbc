"""The `opro` command: parse the arguments, call the library once with `asyncio.run`.

`build_parser` assembles the commands (each module's `register`); `main` parses, dispatches
and turns errors into exit codes. Every failure a user can cause or fix (bad flags, missing
data, a rejected key, an unwritable cache) is an `OproError` and ends as one line on stderr
and a non-zero exit, never a traceback. Results already obtained are in the cache by then, so
rerunning the same command after a fix pays only for what is missing. Any other exception is
a bug in this package, not a user error: it keeps its traceback, followed by one line saying
so.
"""

from __future__ import annotations

import argparse
import sys
import traceback
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from opro.cli.ablate import cmd_ablate
from opro.cli.ablate import register as register_ablate
from opro.cli.cache import cmd_cache
from opro.cli.cache import register as register_cache
from opro.cli.demo import cmd_demo
from opro.cli.demo import register as register_demo
from opro.cli.evaluate import cmd_evaluate
from opro.cli.evaluate import register as register_evaluate
from opro.cli.help import HelpFormatter, add_command, version
from opro.cli.logs import add_logging_options, configure_logging
from opro.cli.optimize import cmd_optimize
from opro.cli.optimize import register as register_optimize
from opro.cli.report import cmd_report
from opro.cli.report import register as register_report
from opro.cli.sweep import cmd_sweep
from opro.cli.sweep import register as register_sweep
from opro.errors import OproError
from opro.tasks import list_tasks

DESCRIPTION = """\
opro: find a better instruction for an LLM task with OPRO ("Large Language Models as
Optimizers", Yang et al. 2023).

An optimizer model proposes instructions, a scorer model answers the task's questions with
each one, and the best-scoring instructions guide the next proposals. Every answer is cached
on disk, calls are rate-limited, retried and held to a budget. With no --scorer/--optimizer
the embedded SmolLM2-135M runs in-process: no key, no network."""

EPILOG = """\
examples:
  opro optimize --task synthetic/boolean_expressions --steps 3    # offline, embedded model
  opro evaluate --task bbh/navigate --instruction "Let's think step by step." \\
      --scorer openai/gpt-4o-mini --budget-usd 1
  opro optimize --task bbh/navigate --scorer openai/gpt-4o-mini --optimizer openai/gpt-4o \\
      --budget-usd 20 --dry-run
  opro tasks

`opro COMMAND --help` shows a command's options, grouped, with units and defaults."""


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage mistake is one line on stderr, like every other error.

    Every parser of the command is one (subcommands inherit the class), so each carries
    `-v/--verbose` and `--log-file`.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        add_logging_options(self)

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _add_global_options(parser: argparse.ArgumentParser) -> None:
    """Options of `opro` itself, before the command."""
    parser.add_argument(
        "--version", action="version", version=f"%(prog)s {version()}", help="print the version"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="opro", description=DESCRIPTION, epilog=EPILOG, formatter_class=HelpFormatter
    )
    _add_global_options(parser)
    sub = parser.add_subparsers(title="commands", dest="command", required=True, metavar="COMMAND")
    register_optimize(sub)
    register_evaluate(sub)
    register_sweep(sub)
    register_ablate(sub)
    register_demo(sub)
    register_report(sub)
    register_cache(sub)
    ts = add_command(
        sub,
        "tasks",
        "List the tasks --task accepts, with their sizes and answer types.",
        ["opro tasks", "opro tasks --data-dir ../shared/data"],
        short="list the tasks",
    )
    ts.add_argument(
        "--data-dir",
        metavar="DIR",
        help="the paper's data release (default: $OPRO_DATA_DIR, else ../shared/data)",
    )
    return parser


def cmd_tasks(args: argparse.Namespace) -> int:
    rows = list_tasks(args.data_dir)
    width = max(len(r.name) for r in rows)
    for r in rows:
        print(f"{r.name:<{width}}  {r.count:>6}  {r.answer_type}")
    return 0


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "evaluate": cmd_evaluate,
    "tasks": cmd_tasks,
    "optimize": cmd_optimize,
    "demo": cmd_demo,
    "report": cmd_report,
    "sweep": cmd_sweep,
    "ablate": cmd_ablate,
    "cache": cmd_cache,
}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        configure_logging(args)
        return COMMANDS[args.command](args)
    except KeyboardInterrupt:
        print("opro: interrupted; finished results are in the cache", file=sys.stderr)
        return 130
    except Exception as exc:
        user_error = _user_error(exc)
        if user_error is None:
            traceback.print_exc()
            print(BUG_REPORT, file=sys.stderr)
            return 1
        print(f"opro: error: {' '.join(str(user_error).splitlines())}", file=sys.stderr)
        return 2


BUG_REPORT = (
    "opro: internal error: this is a bug in opro-engine, not a problem with your input; "
    "please report it to the opro-engine maintainers with the traceback above and the command "
    "you ran (remove any API keys)"
)


def _user_error(exc: BaseException) -> OproError | None:
    """The error to show as one line, or None for a bug (anything that is not an OproError).

    Concurrent code raises groups: a group whose every member is a user error is one too.
    """
    if isinstance(exc, OproError):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        found = [_user_error(e) for e in exc.exceptions]
        if found and all(e is not None for e in found):
            return found[0]
    return None


if __name__ == "__main__":
    sys.exit(main())
