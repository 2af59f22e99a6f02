"""The heap thresholds: a large buffer is served from the heap once dip has tuned the allocator."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from dip_core.system.allocator import _libc

pytestmark = pytest.mark.skipif(_libc() is None, reason="glibc only")

# Allocates 64 MiB with malloc and prints how much of it glibc mmapped (mallinfo2's hblkhd).
PROBE = textwrap.dedent(
    """
    import ctypes, os, sys
    from dip_core.system.allocator import tune_allocator
    print(tune_allocator(), file=sys.stderr)
    class Info(ctypes.Structure):
        _fields_ = [(n, ctypes.c_size_t) for n in
                    "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost".split()]
    libc = ctypes.CDLL("libc.so.6")
    libc.mallinfo2.restype = Info
    libc.malloc.restype = ctypes.c_void_p
    before = libc.mallinfo2().hblkhd
    p = libc.malloc(64 << 20)
    print(libc.mallinfo2().hblkhd - before)
    """
)


def _mmapped(env_value: str | None) -> int:
    env = {"PATH": "/usr/bin:/bin"}
    if env_value is not None:
        env["DIP_MALLOC"] = env_value
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, env=env, check=True)
    return int(out.stdout.strip())


def test_large_buffers_come_from_the_heap_once_tuned() -> None:
    assert _mmapped(None) == 0


def test_default_allocator_mmaps_them() -> None:
    """The control: the same probe with tuning switched off maps the buffer."""
    assert _mmapped("default") >= 64 << 20
