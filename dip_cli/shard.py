"""`dip batch --shard I/N`: a deterministic share of a folder, so that N independent jobs cover it exactly once.

Image k of the folder's sorted list goes to shard k mod N. The split depends on nothing but the list, so the
N jobs of a SLURM array (or of any scheduler) agree on it without talking to each other.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeVar

from dip_core.errors import UserError

T = TypeVar("T")

SLURM_HINT = "for a SLURM array: --shard $((SLURM_ARRAY_TASK_ID - SLURM_ARRAY_TASK_MIN))/$SLURM_ARRAY_TASK_COUNT"


class ShardError(UserError):
    """A --shard that is not I/N with 0 <= I < N."""


@dataclass(frozen=True)
class Shard:
    """Shard `index` (0-based) of `count`."""

    index: int
    count: int

    def __post_init__(self) -> None:
        if self.count < 1 or not 0 <= self.index < self.count:
            raise ShardError(
                f"--shard {self.index}/{self.count}: the index counts from 0 and must be below the count "
                f"(0..{max(self.count - 1, 0)}); {SLURM_HINT}"
            )

    @classmethod
    def parse(cls, text: str) -> Shard:
        """`I/N`, e.g. `0/4`; anything else is a one-line user error."""
        index, slash, count = text.strip().partition("/")
        if not (slash and index.strip().isdigit() and count.strip().isdigit()):
            raise ShardError(f"--shard takes I/N (shard I of N, I counted from 0), got {text!r}; {SLURM_HINT}")
        return cls(int(index), int(count))

    def pick(self, items: Sequence[T]) -> list[T]:
        """This shard's items: the k-th goes to shard k mod count."""
        return [item for k, item in enumerate(items) if k % self.count == self.index]

    @property
    def suffix(self) -> str:
        """What tells this shard's files from the others' (`.shard-0-of-4`)."""
        return f".shard-{self.index}-of-{self.count}"

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"
