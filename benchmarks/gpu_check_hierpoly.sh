#!/usr/bin/env bash
# The hierpoly part of the GPU check: the streamed stage-1 ridge on CUDA at d = 64,
# n = 256 d^2 (float64 and float32 products), one headline seed at d = 64 through the real
# CLI on CUDA (the torch path of quadrun.nn.ridge), and a timed slice of the paper regime
# (joint training, d = 16) to size the paper sweep. Run from the repository root:
#     OUT=gpu_results bash benchmarks/gpu_check_hierpoly.sh
# Output is appended to $OUT/gpu_check_hierpoly.txt; run folders go under $OUT/runs. Each
# step has its own limit (they add up to 9.5 minutes; the check should take about 5).
CHECK=gpu_check_hierpoly
. "$(dirname "$0")/gpu_lib.sh"
step 10 "device" bash -c "nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv; \
    python3 -c 'import torch; print(\"torch\", torch.__version__, torch.cuda.get_device_name())'"
step 90 "stage 1 on CUDA, float64: d = 64, n = 256 d^2" \
    python3 benchmarks/hierpoly_stage1.py --device cuda
step 60 "stage 1 on CUDA, float32 products: d = 64, n = 256 d^2" \
    python3 benchmarks/hierpoly_stage1.py --device cuda --gram-dtype float32
step 150 "headline regime on CUDA: d = 64, one seed, n up to 64 d^2 (claims not_measured: one d)" \
    python3 -m quadrun experiment=hierpoly device=cuda hierpoly.regimes=[headline] \
    hierpoly.headline.dims=[64] hierpoly.headline.seeds_at_largest_d=1 \
    hydra.run.dir="$OUT/runs/headline_d64"
step 240 "paper regime slice on CUDA: joint + NTK at d = 16, n = 0.25 and 1 d^3, 20 epochs" \
    python3 -m quadrun experiment=hierpoly scale=paper device=cuda hierpoly.paper.dims=[16] \
    hierpoly.paper.seeds=1 hierpoly.paper.ratios=[0.25,1] hierpoly.joint.train.epochs=20 \
    hydra.run.dir="$OUT/runs/paper_d16"
python3 - "$OUT/runs" <<'PY' 2>&1 | tee -a "$REPORT"
import json, sys, pathlib
for s in sorted(pathlib.Path(sys.argv[1]).glob("*/summary.json")):
    d = json.loads(s.read_text())
    print(s.parent.name, d.get("status"))
    for r in d.get("records", []):
        print("  ", r["regime"], r["learner"], "d", r["d"], "n", r["n"], "mse", r["test_mse"],
              "corr", r["corr"], "seconds", round(r["seconds"], 2), r["status"])
PY
