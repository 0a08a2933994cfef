#!/usr/bin/env bash
# The whole paper study (params/paper.yaml: ResNet50, 256 -> 224 px, batch 8, <= 50 epochs, both tasks, five
# folds) on one GPU, timed: prints wall seconds, training images/s (from every fold's history.csv) and the mean
# GPU utilisation sampled by nvidia-smi while it ran. Target: <= 600 s on one H200.
# Usage: bench/paper_gpu.sh [extra run_all.py args]   (DATA=/path/to/root; weights none is fine for timing)
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
DATA=${DATA:-../shared/data}
results=$(mktemp -d "${TMPDIR:-/tmp}/cxr-paper-gpu.XXXXXX")
run="paper-gpu"
command -v nvidia-smi >/dev/null || { echo "no nvidia-smi: this benchmark needs an NVIDIA GPU" >&2; exit 2; }
nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader,nounits -l 2 > "$results/gpu.csv" &
smi=$!
start=$(date +%s.%N)
"$PY" run_all.py --params params/paper.yaml --data "$DATA" --results "$results" --run "$run" --no-html \
    --no-progress --set model.weights=none "$@"
code=$?
end=$(date +%s.%N)
kill "$smi" 2>/dev/null
wall=$(python3 -c "print(round($end - $start, 1))")
"$PY" - "$results/$run" "$results/gpu.csv" "$wall" <<'PY'
import sys
import pandas as pd
from cxrlib import io
from cxrlib.layout import RunLayout

run, gpu_csv, wall = sys.argv[1], sys.argv[2], float(sys.argv[3])
layout = RunLayout(run)
record = io.read_json(layout.record)
images = seconds = 0.0
for task in record.get("tasks", []):
    for fold in layout.task(task).folds(int(record["params"]["split"]["n_folds"])):
        if fold.history.exists():
            h = pd.read_csv(fold.history)
            images += float((h["images_per_s"] * h["seconds"]).sum())
            seconds += float(h["seconds"].sum())
util = pd.read_csv(gpu_csv, header=None, names=["util", "mem"])
print(f"wall_s={wall}")
print(f"train_images_per_s={images / seconds:.0f}" if seconds else "train_images_per_s=nan")
print(f"gpu_util_mean={util['util'].mean():.0f}%  gpu_mem_max_mib={util['mem'].max():.0f}")
PY
exit $code
