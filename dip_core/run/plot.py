"""The picture of a run: loss and PSNR curves, input and output side by side."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np

from dip_core.system.atomic import atomic_write


def show(ax: Any, pixels: np.ndarray, title: str) -> None:
    """An image in a matplotlib axis, clipped to [0, 1] (grey for one channel), titled, without axes."""
    p = np.clip(pixels, 0, 1)
    if p.shape[2] == 1:
        ax.imshow(p[..., 0], cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    else:
        ax.imshow(p, interpolation="nearest")
    ax.set_title(title, fontsize=9)
    ax.axis("off")


def plot_run(
    path: str | Path,
    report: dict[str, Any],
    corrupted: np.ndarray,
    result: np.ndarray,
    reference: np.ndarray | None = None,
) -> None:
    """Write a PNG: curves on top, corrupted / result (/ reference) below."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = 3 if reference is not None else 2
    fig = plt.figure(figsize=(4 * panels, 7.5), constrained_layout=True)
    grid = fig.add_gridspec(2, panels, height_ratios=[1, 1.4])
    ax = fig.add_subplot(grid[0, :])
    loss = np.asarray(report["loss_curve"], dtype=float)
    steps = np.arange(1, loss.size + 1)
    ax.semilogy(steps, loss, color="tab:blue", lw=0.8, label="loss")
    ax.set_xlabel("iteration")
    ax.set_ylabel("loss (MSE)", color="tab:blue")
    title = f"{report['task']} · {report['backend']} ({report['device']}) · {report['ms_per_iter']:.0f} ms/iter"
    if report.get("psnr_curve"):
        ax2 = ax.twinx()
        ax2.plot(steps[: len(report["psnr_curve"])], report["psnr_curve"], color="tab:orange", lw=0.8, label="PSNR")
        if report.get("psnr_ema") is not None:
            ax2.plot(
                steps[: len(report["psnr_ema_curve"])],
                report["psnr_ema_curve"],
                color="tab:red",
                lw=1.0,
                label="PSNR (EMA)",
            )
        if report.get("best_iter"):
            ax2.axvline(report["best_iter"], color="gray", ls=":", lw=0.8)
        ax2.set_ylabel("PSNR vs reference (dB)", color="tab:orange")
        ax2.legend(loc="lower right", fontsize=8)
        title += f" · best {report['best_psnr']:.2f} dB at {report['best_iter']}"
    elif report.get("variance_curve"):
        ax2 = ax.twinx()
        var = report["variance_curve"]
        ax2.semilogy(steps[-len(var) :], var, color="tab:green", lw=0.8)
        ax2.set_ylabel("output variance (window)", color="tab:green")
        ax2.axvline(report["result_iter"], color="gray", ls=":", lw=0.8)
    ax.set_title(title, fontsize=10)
    if reference is not None:
        show(fig.add_subplot(grid[1, 0]), corrupted, f"input · {report['psnr_input']:.2f} dB")
        show(fig.add_subplot(grid[1, 1]), result, f"result · {report['psnr_result']:.2f} dB")
        show(fig.add_subplot(grid[1, 2]), reference, "reference")
    else:
        show(fig.add_subplot(grid[1, 0]), corrupted, "input")
        show(fig.add_subplot(grid[1, 1]), result, f"result (iteration {report['result_iter']})")
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    with atomic_write(path) as fh:
        fh.write(buf.getvalue())
