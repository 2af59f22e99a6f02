#!/usr/bin/env bash
# Install, then denoise an example image the project makes itself (MLX backend).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
mkdir -p demo
dip=.venv/bin/dip
$dip example demo/scene.png --size 64 80 --force
$dip degrade denoise demo/scene.png --out demo --sigma 25 --force
$dip run denoise demo/scene_noisy25.png --backend mlx --iters 300 --reference demo/scene.png \
    --out demo/scene_denoised.png --report demo/report.json --plot demo/plot.png --force
echo "demo: see demo/scene_denoised.png and demo/plot.png"
