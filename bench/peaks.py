"""FP32 peak GFLOP/s of common GPUs, for the chip table's "% of peak" (and the measured matmul where none is known).

Apple GPUs: cores x 128 FP32 ALUs x 2 FLOP (fused multiply-add) x clock. Apple publishes the core counts, and for
M1 and M2 the TFLOPS (which the products below reproduce, within 2 %: for M1 Pro, Max and Ultra Apple quotes a
little under the 1.296 GHz their GPUs reach), but no clocks: the clocks are third-party figures, the
same within a generation. For M4 they differ between sources (1.47 to 1.68 GHz): the table's 1.578 GHz makes an
M4's % of peak uncertain by about 7 %. NVIDIA GPUs: the vendor's datasheet FP32 (non-tensor) figure; a GPU runs
dip's fp32 convolutions on its CUDA cores, while tf32 and bf16 runs use its tensor cores and may pass 100 %.

Anything else, and every CPU, gets the fp32 matmul rate measured on the same device in the same run.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

ALUS_PER_APPLE_CORE = 128


@dataclass(frozen=True)
class Peak:
    """One table row: the chip as named in reports, its FP32 peak, how it was found, and where it is published."""

    name: str
    gflops: float
    how: str
    source: str


WIKI_M1 = "https://en.wikipedia.org/wiki/Apple_M1"
WIKI_M2 = "https://en.wikipedia.org/wiki/Apple_M2"
M3_SOURCE = "https://hmc-tech.com/gpu/apple_10_core_m3"
M3_PRO_SOURCE = "https://hmc-tech.com/gpu/apple-8-core-m4-fl-vs-apple-18-core-m3-pro"
M3_MAX_SOURCE = "https://hmc-tech.com/gpu/apple-8-core-m4-fl-vs-apple-40-core-m3-max"
M4_SOURCE = "https://hmc-tech.com/gpu/apple-8-core-m4-fl-vs-apple-24-core-m1-max"

# chip, GPU core counts sold, GPU clock (GHz), where the clock is published.
APPLE_CHIPS: tuple[tuple[str, tuple[int, ...], float, str], ...] = (
    ("Apple M1", (7, 8), 1.278, WIKI_M1),
    ("Apple M1 Pro", (14, 16), 1.296, WIKI_M1),
    ("Apple M1 Max", (24, 32), 1.296, WIKI_M1),
    ("Apple M1 Ultra", (48, 64), 1.296, WIKI_M1),
    ("Apple M2", (8, 10), 1.398, WIKI_M2),
    ("Apple M2 Pro", (16, 19), 1.398, WIKI_M2),
    ("Apple M2 Max", (30, 38), 1.398, WIKI_M2),
    ("Apple M2 Ultra", (60, 76), 1.398, WIKI_M2),
    ("Apple M3", (8, 10), 1.398, M3_SOURCE),
    ("Apple M3 Pro", (14, 18), 1.398, M3_PRO_SOURCE),
    ("Apple M3 Max", (30, 40), 1.398, M3_MAX_SOURCE),
    ("Apple M4", (8, 10), 1.578, M4_SOURCE),
    ("Apple M4 Pro", (16, 20), 1.578, M4_SOURCE),
    ("Apple M4 Max", (32, 40), 1.578, M4_SOURCE),
)


def _apple_table() -> dict[tuple[str, int], Peak]:
    table = {}
    for chip, counts, ghz, source in APPLE_CHIPS:
        for cores in counts:
            gflops = cores * ALUS_PER_APPLE_CORE * 2 * ghz
            how = f"{cores} cores x {ALUS_PER_APPLE_CORE} ALUs x 2 FLOP x {ghz:.3f} GHz"
            table[(chip, cores)] = Peak(f"{chip}, {cores}-core GPU", gflops, how, source)
    return table


APPLE = _apple_table()

DATASHEET = "vendor datasheet"
# First match wins (so each variant comes before its family), searched in the name CUDA reports, case-insensitively.
NVIDIA: tuple[tuple[str, Peak], ...] = (
    (r"H100.*NVL", Peak("NVIDIA H100 NVL", 60_000, DATASHEET, "https://www.nvidia.com/en-us/data-center/h100/")),
    (r"H100.*PCIe", Peak("NVIDIA H100 PCIe", 51_000, DATASHEET, "https://www.nvidia.com/en-us/data-center/h100/")),
    # The SXM part reports itself as "NVIDIA H100 80GB HBM3".
    (r"H100.*(SXM|HBM3)", Peak("NVIDIA H100 SXM", 67_000, DATASHEET, "https://www.nvidia.com/en-us/data-center/h100/")),
    (r"H200.*NVL", Peak("NVIDIA H200 NVL", 60_000, DATASHEET, "https://www.nvidia.com/en-us/data-center/h200/")),
    (r"H200", Peak("NVIDIA H200 SXM", 67_000, DATASHEET, "https://www.nvidia.com/en-us/data-center/h200/")),
    (r"A100.*SXM", Peak("NVIDIA A100 SXM", 19_500, DATASHEET, "https://www.nvidia.com/en-us/data-center/a100/")),
    (r"A100.*PCI", Peak("NVIDIA A100 PCIe", 19_500, DATASHEET, "https://www.nvidia.com/en-us/data-center/a100/")),
    (r"\bL40S\b", Peak("NVIDIA L40S", 91_600, DATASHEET, "https://www.nvidia.com/en-us/data-center/l40s/")),
    (r"\bL4\b", Peak("NVIDIA L4", 30_300, DATASHEET, "https://www.nvidia.com/en-us/data-center/l4/")),
    (r"\bA10\b", Peak("NVIDIA A10", 31_200, DATASHEET, "https://www.nvidia.com/en-us/data-center/products/a10-gpu/")),
    (r"\bT4\b", Peak("NVIDIA T4", 8_100, DATASHEET, "https://www.nvidia.com/en-us/data-center/tesla-t4/")),
    (
        r"V100-?\s?SXM",
        Peak("NVIDIA V100 SXM2", 15_700, DATASHEET, "https://www.nvidia.com/en-us/data-center/v100/"),
    ),
    (
        r"V100-?\s?PCI",
        Peak("NVIDIA V100 PCIe", 14_000, DATASHEET, "https://www.nvidia.com/en-us/data-center/v100/"),
    ),
    (
        r"RTX 3090\b(?!\s*Ti)",
        Peak(
            "NVIDIA GeForce RTX 3090",
            35_580,
            "vendor specifications: 10,496 CUDA cores x 2 FLOP x 1.695 GHz boost",
            "https://www.nvidia.com/en-us/geforce/graphics-cards/30-series/rtx-3090-3090ti/",
        ),
    ),
    (
        r"RTX 4090\b(?!\s*D)",
        Peak(
            "NVIDIA GeForce RTX 4090",
            82_580,
            "vendor specifications: 16,384 CUDA cores x 2 FLOP x 2.52 GHz boost",
            "https://www.nvidia.com/en-us/geforce/graphics-cards/40-series/rtx-4090/",
        ),
    ),
)

MEASURED = "measured matmul"


def apple_chip(machine: dict[str, Any]) -> str | None:
    """The Apple chip's name ("Apple M3 Pro") from a machine description: its chip, GPU or CPU field."""
    for key in ("chip", "gpu", "cpu"):
        name = machine.get(key)
        if isinstance(name, str) and name.startswith("Apple M"):
            return " ".join(name.removesuffix(" GPU").split())
    return None


def table_peak(machine: dict[str, Any]) -> Peak | None:
    """The GPU's row in the table, if it has one (an Apple chip needs its GPU core count: the bins differ)."""
    chip = apple_chip(machine)
    if chip is not None:
        cores = machine.get("gpu_cores")
        return APPLE.get((chip, cores)) if isinstance(cores, int) else None
    gpu = machine.get("gpu")
    if not isinstance(gpu, str):
        return None
    return next((peak for pattern, peak in NVIDIA if re.search(pattern, gpu, re.IGNORECASE)), None)


def peak_gflops(
    machine: dict[str, Any], backend: str, device: str, measured: dict[str, float]
) -> tuple[float | None, str]:
    """The FP32 peak a row's GFLOP/s are compared with, and where it came from: "table: <row>" for a known GPU,
    "measured matmul" (this backend's fp32 matmul on this device, same run) for CPUs and unknown GPUs."""
    if device == "gpu":
        peak = table_peak(machine)
        if peak is not None:
            return float(peak.gflops), f"table: {peak.name}"
    rate = measured.get(f"{backend}/{device}")
    if rate is not None and rate > 0:
        return float(rate), MEASURED
    return None, "no peak known (not in the table, no matmul measured)"
