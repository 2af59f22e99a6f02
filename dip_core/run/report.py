"""The one report type: what a run (whole or tiled) measured and every setting it used, as `dip run --report`
writes it, `dip batch` keeps it per image, `dip ui` serves it and `dip bench` reads it.

A `Report` is a plain JSON object, so it stays a dict; the type names every key a writer may set and a reader may
look up, so that the type checker catches a misspelt key. Keys marked "reference" are there only when the run had a
clean image to compare with; keys marked "tiled" only for a run in tiles.
"""

from __future__ import annotations

from typing import Any, TypedDict


class Report(TypedDict, total=False):
    # What ran, and where.
    task: str  # the task's name (Task's value)
    backend: str  # "mlx" | "torch"
    device: str  # e.g. "cpu", "gpu"
    precision: str  # Precision's value
    threads: int | None  # CPU threads of the backend
    step: dict[str, Any]  # how the session ran the step: dip_core.backend.STEP_KEYS
    platform: str
    dip_version: str  # set by the command that ran it (CLI, batch, UI)
    command: str  # the command line, where one ran it
    output: str  # where the result image went (dip run)
    ui: dict[str, Any]  # dip ui: the upload's name and the page's request
    # The run's settings.
    method: str  # "dip" | "drp" (dip_core.model.method)
    seed: int
    params: int  # trainable parameters of the network
    preset: dict[str, Any]  # Preset.to_dict() with the overrides applied
    net: dict[str, Any]  # SkipConfig.to_dict()
    keep: str  # Keep's value: which output is the result
    keep_known: bool  # the known pixels were pasted back (inpaint, restore)
    sources: dict[str, Any]  # where each input came from: paths, "array", a kernel spec
    input: dict[str, Any]  # the input image's path and mode
    size: list[int]  # [height, width] of the result
    padding: dict[str, Any]  # mode, the padded size and the image's offset in it
    # The stop rule's settings and the noise level (noise_sigma or peak, and its source; noise_level_sigma: the
    # estimate, used where it reads below a given noise_sigma).
    stopping: dict[str, Any]
    checkpoint: dict[str, Any]  # path, every, resumed
    # How it went.
    iters: int  # iterations run (all tiles together for a tiled run)
    iters_planned: int  # the most the run could take (the preset's, or --iters)
    ms_per_iter: float
    seconds: float
    interrupted: bool  # Ctrl-C ended it: the result is the best so far
    finished: bool
    rollbacks: int  # backtracking after a collapse of the loss
    final_lr: float | None
    selection: str  # how the result was chosen: "psnr" | "wmv" | "last" | "tiles"
    result_iter: int | None  # the iteration the result comes from
    stopped_early: bool  # auto-stop ended the run before iters_planned
    stop_iter: int | None  # the automatic choice's iteration
    auto_rule: str | None  # "wmv" | "discrepancy": the rule that made the automatic choice
    discrepancy_iter: int | None  # the first iteration whose loss reached the noise level
    loss_curve: list[float]
    variance_curve: list[float]
    warnings: list[str]
    # reference: PSNR (dB) and SSIM against the clean image.
    psnr_input: float  # the corrupted input (for sr: the input at the result's size is not defined; see bicubic)
    psnr: float  # net(z) after the last step
    psnr_ema: float | None  # the EMA of outputs after the last step
    psnr_result: float  # the result image as saved (known pixels pasted back where they are)
    psnr_auto: float  # what a run without the reference returns: the automatic choice
    auto_gap: float  # psnr_result - psnr_auto: what the reference bought
    psnr_bicubic: float  # sr: bicubic upscaling of the input
    best_psnr: float | None  # the best network output seen (before any pasting back)
    best_iter: int | None
    ssim: float
    psnr_curve: list[float]  # per step: the output the step was computed from
    psnr_ema_curve: list[float]
    psnr_output_curve: list[float]  # per step: net(z) (with trace_output)
    # tiled: one summary per finished tile and the tiling.
    tiles: list[dict[str, Any]]
    tiles_total: int
    tiles_resumed: int
    tile: int  # tile size (input pixels)
    overlap: int
