"""The Typer application, its consoles, and the handling every command shares (errors, output paths)."""

from __future__ import annotations

import contextlib
import difflib
import functools
import re
import shlex
import signal
import sys
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from typer.core import TyperGroup

from dip_core.backend import BackendName, Device
from dip_core.errors import UserError, UserErrors, messages
from dip_core.model.config import NETS
from dip_core.run.options import option_help
from dip_core.system.atomic import why_unwritable
from dip_core.system.precision import Precision

_ARGV: ContextVar[list[str] | None] = ContextVar("argv", default=None)


class _OneLineErrors(TyperGroup):
    """Usage errors (unknown task, bad option value, ...) as one line and exit code 2, like every other error."""

    def main(self, args: Any = None, *rest: Any, standalone_mode: bool = True, **kwargs: Any) -> Any:
        argv = list(args) if args is not None else sys.argv[1:]
        token = _ARGV.set(argv)  # the command line as given, for the reports
        try:
            code = super().main(argv, *rest, standalone_mode=False, **kwargs)
        except typer.Abort:
            code = 130
        except typer.TyperException as exc:  # the command line's own errors (typer's click)
            code = getattr(exc, "exit_code", 2)
            if type(exc).__name__ == "NoArgsIsHelpError":
                exc.show()  # `dip` alone: the help
            else:
                message = " ".join(exc.format_message().split()).replace(": Value error, ", ": ")
                message += did_you_mean(message)
                err().print(f"[bold red]error:[/] {escape(message)} (see --help)", highlight=False, soft_wrap=True)
        finally:
            _ARGV.reset(token)
        if not standalone_mode:
            return code
        sys.exit(code if isinstance(code, int) else 0)


_NOT_ONE_OF = re.compile(r"'([^']*)' is not one of ((?:'[^']*'(?:, )?)+)")


def did_you_mean(message: str) -> str:
    """For a value that is not one of the choices (a mistyped task, device...): ` Did you mean 'X'?` when one
    choice is close to it, else nothing."""
    found = _NOT_ONE_OF.search(message)
    if found is None:
        return ""
    choices = re.findall(r"'([^']*)'", found.group(2))
    close = difflib.get_close_matches(found.group(1).lower(), choices, n=1, cutoff=0.6)
    return f" Did you mean '{close[0]}'?" if close else ""


# rich_markup_mode=None: click's plain help, which keeps the descriptions at half of an 80-column terminal (the
# rich panels left them 18 columns) and shows no metavar for a flag.
app = typer.Typer(
    cls=_OneLineErrors,
    help="Deep Image Prior: restore one image by fitting a random network to it. MLX first, PyTorch beside it.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


def _show_version(value: bool) -> None:
    if value:
        from dip_core.system.version import dip_version

        out().print(f"dip {dip_version()}", highlight=False)
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[
        bool, typer.Option("--version", callback=_show_version, is_eager=True, help="Print dip's version and exit.")
    ] = False,
) -> None:
    pass


def command_line() -> str:
    """The command line of this invocation, as the user could type it again."""
    argv = _ARGV.get()
    return shlex.join(["dip", *(argv if argv is not None else sys.argv[1:])])


def out() -> Console:
    """Standard output (made per call, so that the terminal's width is read when printing)."""
    return Console()


def err() -> Console:
    return Console(stderr=True)


F = TypeVar("F", bound=Callable[..., Any])


def user_errors(fn: F) -> F:
    """Turn a user error raised by `fn` into a one-line message and exit code 2."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except UserError as exc:
            for message in messages(exc):
                err().print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None

    return wrapper  # type: ignore[return-value]


class UsageError(UserError):
    """A bad combination of options or paths."""


ConfigOpt = Annotated[
    str, typer.Option("--config", "-c", help=f"Network: one of {', '.join(NETS)}, or a JSON file of SkipConfig fields.")
]
DeviceOpt = Annotated[Device, typer.Option("--device", help=option_help("device"))]
BackendOpt = Annotated[BackendName, typer.Option("--backend", "-b", help=option_help("backend"))]
PrecisionOpt = Annotated[Precision | None, typer.Option(help=option_help("precision"))]


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve() or (a.exists() and b.exists() and a.samefile(b))
    except OSError:
        return False


def output_problems(outputs: list[Path], inputs: list[Path], force: bool) -> list[str]:
    """What stops writing `outputs`: an input among them, an existing file without --force, a missing or
    unwritable folder, two outputs on one file."""
    problems = []
    unwritable: dict[Path, str | None] = {}
    for path in outputs:
        clash = next((inp for inp in inputs if _same_file(path, inp)), None)
        if clash is not None:
            problems.append(f"refusing to overwrite the input {clash}: choose another --out")
        elif not path.parent.is_dir():
            problems.append(f"cannot write {path}: directory {path.parent} does not exist")
        elif path.is_dir():
            problems.append(f"cannot write {path}: it is a directory")
        elif path.exists() and not force:
            problems.append(f"{path} exists; add --force to overwrite it")
        else:
            folder = path.parent.resolve()
            if folder not in unwritable:
                unwritable[folder] = why_unwritable(folder)
                if unwritable[folder] is not None:
                    problems.append(f"cannot write into {path.parent}: {unwritable[folder]}")
    if len({o.resolve() for o in outputs}) != len(outputs):
        problems.append("two outputs would be written to the same file")
    return problems


def check_outputs(outputs: list[Path], inputs: list[Path], force: bool) -> None:
    """Raise every problem of `output_problems` at once."""
    problems = output_problems(outputs, inputs, force)
    if problems:
        raise UserErrors(problems)


class Problems:
    """Usage problems gathered from independent checks, so that one try reports them all."""

    def __init__(self) -> None:
        self.messages: list[str] = []

    @contextlib.contextmanager
    def check(self) -> Iterator[None]:
        """Run a check; a user error it raises is noted and the next check goes on."""
        try:
            yield
        except UserError as exc:
            for message in messages(exc):
                self.add(message)

    def add(self, message: str) -> None:
        if message not in self.messages:
            self.messages.append(message)

    def __bool__(self) -> bool:
        return bool(self.messages)

    def raise_any(self) -> None:
        if self.messages:
            raise UserErrors(self.messages)


class Held:
    signalled = False


@contextlib.contextmanager
def held_signals() -> Iterator[Held]:
    """Ctrl-C and SIGTERM wait until the block is done (writing the outputs): `.signalled` says one came."""
    held = Held()

    def note(signum: int, frame: Any) -> None:
        held.signalled = True

    try:
        previous = {sig: signal.signal(sig, note) for sig in (signal.SIGINT, signal.SIGTERM)}
    except ValueError:  # not the main thread: signals are not ours to hold
        yield held
        return
    try:
        yield held
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
