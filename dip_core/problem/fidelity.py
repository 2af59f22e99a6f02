"""The data-fidelity term of the loss, and the loss level a fit reaches when it matches the truth.

A task says how its observation relates to the truth: Gaussian noise (the mean squared error) or photon counts
(the Poisson deviance). The term also gives the stopping rule its discrepancy level: the loss expected at the
truth, sigma^2 for the squared error and about 1/peak for the Poisson deviance, so that the loop never assumes
Gaussian noise. The numpy functions here are the reference both backends' `fidelity.py` are tested against.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

import numpy as np

# Poisson: the network's output is clamped from below at this intensity before its log (a sigmoid can reach 0).
POISSON_FLOOR = 1e-6


class FidelityKind(str, Enum):
    MSE = "mse"  # Gaussian noise: mean((A(x) - y)^2)
    POISSON = "poisson"  # photon counts at `peak`: the mean Poisson deviance over the peak


@dataclass(frozen=True)
class Fidelity:
    """One data-fidelity term: its kind and, for photon counts, the count of a white pixel."""

    kind: FidelityKind = FidelityKind.MSE
    peak: float = 1.0  # Poisson: expected photons at intensity 1 (y is counts / peak)

    def __post_init__(self) -> None:
        object.__setattr__(self, "kind", FidelityKind(self.kind))
        if not self.peak > 0:
            raise ValueError(f"the peak is a photon count > 0, got {self.peak}")

    def loss(self, prediction: np.ndarray, observed: np.ndarray) -> float:
        """The loss of A(x) = `prediction` against y = `observed`, in numpy (float64)."""
        a, y = np.asarray(prediction, np.float64), np.asarray(observed, np.float64)
        if self.kind is FidelityKind.MSE:
            return float(np.mean((a - y) ** 2))
        mu, k = self.peak * np.maximum(a, POISSON_FLOOR), self.peak * y
        logs = np.log(np.maximum(k, np.finfo(np.float64).tiny)) - np.log(mu)
        return float(np.mean(2 * (k * logs - (k - mu))) / self.peak)

    def level(self, sigma: float | None = None) -> float:
        """The loss expected when A(x) is the truth: sigma^2 for Gaussian noise of std `sigma` (image units), 1/peak
        for photon counts (the deviance of a Poisson count averages about 1 once a pixel holds a few photons)."""
        if self.kind is FidelityKind.POISSON:
            return 1.0 / self.peak
        if sigma is None:
            raise ValueError("the squared error's level needs the noise's standard deviation")
        return sigma**2

    def describe(self) -> dict[str, float | str]:
        """As a report records it."""
        return {"kind": self.kind.value} | ({"peak": self.peak} if self.kind is FidelityKind.POISSON else {})


SQUARED_ERROR = Fidelity()  # Gaussian noise: every task but photon counts


def total_variation(image: np.ndarray) -> float:
    """The mean anisotropic total variation of an (H, W, C) image: the absolute differences between vertical and
    between horizontal neighbours, summed, over the number of values (the Deep Random Projector's regulariser)."""
    x = np.asarray(image, np.float64)
    return float((np.abs(np.diff(x, axis=0)).sum() + np.abs(np.diff(x, axis=1)).sum()) / x.size)


def projector_loss(
    fidelity: Fidelity, prediction: np.ndarray, observed: np.ndarray, output: np.ndarray, tv_weight: float
) -> float:
    """The Deep Random Projector's loss: the square root of the data term of A(x) = `prediction` against y, plus
    `tv_weight` x the total variation of the network's output x (numpy reference of both backends' drp.py)."""
    return float(np.sqrt(fidelity.loss(prediction, observed)) + tv_weight * total_variation(output))
