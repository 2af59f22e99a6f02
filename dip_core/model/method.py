"""Which fitting method a run uses: the paper's DIP, or the Deep Random Projector (DRP).

DIP (Ulyanov et al. 2018) trains every weight of the network from a fixed random input z. DRP (Li, Wang, Zhuang
and Sun, CVPR 2023, "Deep Random Projector: Accelerated Deep Image Prior") keeps the randomly initialised
convolutions fixed and trains only the input z and the BatchNorm affine parameters of a shallow network (one
scale), with the square root of the data term plus a total-variation term as its loss: far fewer and far cheaper
steps for a similar result. The layout and the backends' freezing read `trains` here, so both agree on it.
"""

from __future__ import annotations

from enum import Enum


class Method(str, Enum):
    DIP = "dip"  # every weight trained, z fixed (plus input noise)
    DRP = "drp"  # convolutions frozen at their random init; z and the BatchNorm scales and shifts trained


def is_batch_norm(name: str) -> bool:
    """Whether a canonical parameter name is a BatchNorm scale or shift (dip_core.model.params' layout)."""
    return ".bn." in name or ".merge_bn." in name or name.startswith("input_bn.")


def trains(method: Method, name: str) -> bool:
    """Whether `method` trains the canonical parameter `name` (z, trained by DRP, is not a network parameter)."""
    return method is Method.DIP or is_batch_norm(name)
