"""The Typer application, its consoles, and the handling every command shares (errors, output paths)."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from typer.core import TyperGroup

from dip_core.backend import BackendName, Device
from dip_core.config import NETS
from dip_core.errors import UserError
from dip_core.precision import Precision


class _OneLineErrors(TyperGroup):
    """Usage errors (unknown task, bad option value, ...) as one line and exit code 2, like every other error."""

    def main(self, *args: Any, standalone_mode: bool = True, **kwargs: Any) -> Any:
        try:
            code = super().main(*args, standalone_mode=False, **kwargs)
        except typer.Abort:
            code = 130
        except typer.TyperException as exc:  # the command line's own errors (typer's click)
            code = getattr(exc, "exit_code", 2)
            if type(exc).__name__ == "NoArgsIsHelpError":
                exc.show()  # `dip` alone: the help
            else:
                message = " ".join(exc.format_message().split())
                err().print(f"[bold red]error:[/] {message} (see --help)", highlight=False, soft_wrap=True)
        if not standalone_mode:
            return code
        sys.exit(code if isinstance(code, int) else 0)


app = typer.Typer(
    cls=_OneLineErrors,
    help="Deep Image Prior: restore one image by fitting a random network to it. MLX first, PyTorch beside it.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


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
            err().print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None

    return wrapper  # type: ignore[return-value]


class UsageError(UserError):
    """A bad combination of options or paths."""


ConfigOpt = Annotated[
    str, typer.Option("--config", "-c", help=f"Network: one of {', '.join(NETS)}, or a JSON file of SkipConfig fields.")
]
DeviceOpt = Annotated[Device, typer.Option("--device", help="auto: Metal/CUDA/MPS when present, else the CPU.")]
BackendOpt = Annotated[BackendName, typer.Option("--backend", "-b", help="Framework to run on.")]
PrecisionOpt = Annotated[
    Precision | None,
    typer.Option(help="fp32, tf32 (TF32 products on NVIDIA GPUs) or bf16; default: fp32 on a CPU, tf32 on a GPU."),
]


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve() or (a.exists() and b.exists() and a.samefile(b))
    except OSError:
        return False


def check_outputs(outputs: list[Path], inputs: list[Path], force: bool) -> None:
    """Refuse to overwrite an input, an existing file without --force, or write into a missing folder."""
    for path in outputs:
        for inp in inputs:
            if _same_file(path, inp):
                raise UsageError(f"refusing to overwrite the input {inp}: choose another --out")
        if not path.parent.is_dir():
            raise UsageError(f"cannot write {path}: directory {path.parent} does not exist")
        if path.is_dir():
            raise UsageError(f"cannot write {path}: it is a directory")
        if path.exists() and not force:
            raise UsageError(f"{path} exists; add --force to overwrite it")
    if len({o.resolve() for o in outputs}) != len(outputs):
        raise UsageError("two outputs would be written to the same file")
