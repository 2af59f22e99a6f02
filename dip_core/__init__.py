"""Framework-neutral core of dip: `dip_core.restore(task, image, backend="mlx", **overrides)`."""

from typing import Any

__all__ = ["Result", "restore"]


def __getattr__(name: str) -> Any:
    # Lazy, so that `import dip_core.model.config` stays light.
    if name in __all__:
        from dip_core.run import api

        return getattr(api, name)
    raise AttributeError(f"module 'dip_core' has no attribute {name!r}")
