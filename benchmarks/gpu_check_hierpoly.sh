#!/usr/bin/env bash
# The hierpoly part of the GPU check (issue 26): the headline regime at d = 64, 128, 256 with
# 5 seeds each on one GPU (scale=gpu: float32 Gram products on the GPU, float64 sums and
# solve), after a short benchmark of the stage-1 solve on CUDA and the GPU-tier test.
# Run from the repository root:
#     OUT=gpu_results bash benchmarks/gpu_check_hierpoly.sh
# Output is appended to $OUT/gpu_check_hierpoly.txt; the run folder goes to $OUT/runs/gpu.
# Limits: 10 + 120 + 120 + 1500 s; the scale=gpu run is estimated at 12-15 minutes on one
# H100 (d = 256: F = 33,153 features, up to 2^21 samples per seed). A stopped run resumes
# where it stopped: run the same command again (or `quadrun resume=$OUT/runs/gpu`).
CHECK=gpu_check_hierpoly
. "$(dirname "$0")/gpu_lib.sh"
step 10 "device" bash -c "nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv; \
    python3 -c 'import torch; print(\"torch\", torch.__version__, torch.cuda.get_device_name())'"
step 120 "GPU tier: the streamed ridge on CUDA equals the CPU's" \
    python3 -m pytest -q -m gpu tests/test_hierpoly.py
step 120 "stage-1 solve on CUDA at d = 128: Cholesky walk vs eigendecomposition, float32 products" \
    python3 benchmarks/hierpoly_stage1.py --device cuda --d 128 --ratio 4
SCALE=scale=gpu
step 1500 "headline regime, $SCALE: d = 64, 128, 256 x 5 seeds" \
    python3 -m quadrun experiment=hierpoly "$SCALE" device=cuda hydra.run.dir="$OUT/runs/gpu"
python3 - "$OUT/runs/gpu" <<'PY' 2>&1 | tee -a "$REPORT"
import json, sys, pathlib
s = json.loads((pathlib.Path(sys.argv[1]) / "summary.json").read_text())
print("status", s.get("status"))
for c in s.get("claims", []):
    print(f"| {c['id']} | {c['measured'][:400]} | {c['target']} | {c['verdict']} |")
for regime, per in s.get("time", {}).items():
    for learner, t in per.items():
        print("seconds per replicate", regime, learner, t)
PY
