#!/usr/bin/env bash
# Wall time of the whole study as `make run` runs it (params/cpu.yaml, no pretrained download, two jobs at once)
# on the shared data, in a fresh run folder with a cold image and pair cache under a temporary results dir, on at
# most 2 cores. Prints the wall seconds and each stage's job seconds, then as the last line
# overhead=<study wall / machine time of every training epoch> (bench/study_overhead.py; target <= 1.25).
# Usage: bench/study_wall.sh [extra run_all.py args]   (DATA=/path/to/root to use another data root)
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
DATA=${DATA:-../shared/data}
PARAMS=${PARAMS:-params/cpu.yaml}
JOBS=${JOBS:-2}  # as `make run`: two jobs at once, the cores shared between them
results=$(mktemp -d "${TMPDIR:-/tmp}/cxr-study-wall.XXXXXX")
run="wall-$(date +%Y%m%d-%H%M%S)"
pin=()
if command -v taskset >/dev/null && [ "$(nproc)" -gt 2 ]; then pin=(taskset -c 0,1); fi
echo "results: $results/$run" >&2
start=$(date +%s.%N)
"${pin[@]}" "$PY" run_all.py --params "$PARAMS" --data "$DATA" --results "$results" --run "$run" --parallel "$JOBS" \
    --set model.weights=none "data.cache_dir=$results/cache" "$@"
code=$?
end=$(date +%s.%N)
echo "exit code: $code" >&2
wall=$(python3 -c "print(round($end - $start, 1))")
echo "wall_s=$wall"
"$PY" bench/study_overhead.py "$results/$run" "$wall"
exit $code
