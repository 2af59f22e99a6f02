"""`dip`: Deep Image Prior on MLX or PyTorch, from the command line.

The commands live in dip_cli/, one module per group; here they are put together, in the order `dip --help`
lists them.
"""

from __future__ import annotations

import sys

try:
    from dip_cli import batch, bench, bench_all, bench_paper, check, data, info, run, ui
    from dip_cli.app import app
except KeyboardInterrupt:  # Ctrl-C while Python loads the command's libraries: nothing has started
    sys.exit(130)

for command in (run.run, batch.batch, data.degrade, data.example, info.presets, info.nets, check.crosscheck,
                info.backends, info.doctor, ui.ui):  # fmt: skip
    app.command()(command)
bench.bench_app.command("all")(bench_all.bench_all)
bench.bench_app.command("paper")(bench_paper.bench_paper)
app.add_typer(bench.bench_app, name="bench")

__all__ = ["app", "main"]


def main() -> None:
    from dip_cli.signals import quiet_after_exit

    try:
        app()
    finally:  # the outputs are written: a late Ctrl-C ends the process quietly
        quiet_after_exit()


if __name__ == "__main__":
    sys.exit(main())
