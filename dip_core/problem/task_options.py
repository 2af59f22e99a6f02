"""Which task takes which option: an option the task does not use is refused, never silently dropped.

A mask of the wrong size given to `denoise`, or `--factor 4` given to `deblur`, used to be read (or not) and
then ignored, and the run went on as if the user had not asked for anything: a result made from other inputs
than the user believes. The CLI, the API and the web page all check against this one table, made from the task
registry.
"""

from __future__ import annotations

from typing import Any

from dip_core.problem.registry import TASK_OPTIONS, Task, taken_by
from dip_core.problem.tasks import ProblemError

# option (a RunOptions field, or `mask`): the tasks that use it, from the task registry
TAKEN_BY: dict[str, frozenset[Task]] = {option: taken_by(option) for option in sorted(TASK_OPTIONS)}


def takes(task: Task | str, option: str) -> bool:
    """Whether `task` uses `option` (an option outside TAKEN_BY is used by every task)."""
    return Task(task) in TAKEN_BY.get(option, frozenset(Task))


def flag(option: str) -> str:
    """The option as the command line spells it."""
    return "--" + option.replace("_", "-")


def _given(option: str, value: Any) -> bool:
    """Whether the user asked for something with this option. Switches count when on: `keep_known=False` and
    `strict_mask=False` are what a task without a mask does anyway (bench scripts pass them for every task)."""
    if option in ("keep_known", "strict_mask"):
        return value is True
    return value is not None


def _who(option: str) -> str:
    names = [t.value for t in Task if t in TAKEN_BY[option]]
    return " and ".join(names)


def check_options_apply(task: Task | str, given: dict[str, Any]) -> None:
    """Raise a ProblemError naming every option in `given` (option -> value) that `task` does not use, and the
    tasks that take each; one line."""
    task = Task(task)
    unused = [o for o, v in given.items() if o in TAKEN_BY and _given(o, v) and not takes(task, o)]
    if unused:
        parts = [f"{flag(o)} (only {_who(o)} take{'s' * (len(TAKEN_BY[o]) == 1)} it)" for o in unused]
        raise ProblemError(f"{task.value} does not use {' or '.join(parts)}")
