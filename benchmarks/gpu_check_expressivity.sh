#!/usr/bin/env bash
# expressivity's GPU check (issue 16; about 5 minutes on one H100/H200, the limits add up to
# 10). Run from the repository root on a machine with one CUDA GPU:
#     OUT=gpu_results bash benchmarks/gpu_check_expressivity.sh
# Everything is appended to $OUT/gpu_check_expressivity.txt; the run folders land in $OUT/.
# What it measures:
#   1. the expressivity tests with device=auto (the smoke run trains on CUDA);
#   2. the cpu-scale run on CUDA with 5 replicates instead of 20 (wall time; the dimension
#      part is numpy/CPU either way, the 80 fits train on the GPU) and its claims;
#   3. the paper-scale dimension table alone (19 architectures up to degree 512, exact
#      rank and float check), its wall time and whether every row's float rank agrees.
# Packages the machine lacks may lie as wheels in .whl/; they are installed into /tmp/site.
CHECK=gpu_check_expressivity
. "$(dirname "$0")/gpu_lib.sh"
Q="python3 -m quadrun"
summary() {  # summary RUN_FOLDER: the claims and the dimension rows' agreement
    python3 - "$1" <<'PY' | tee -a "$REPORT"
import json, sys
s = json.load(open(sys.argv[1] + "/summary.json"))
for c in s["claims"]:
    print(f"{c['verdict']:>13}  {c['id']}: {c['measured']}")
dims = [r for r in s["records"] if r.get("part") == "dimension"]
print(f"dimension rows {len(dims)}: primes agree {sum(bool(r['primes_agree']) for r in dims)}, "
      f"float agrees {sum(bool(r['agrees']) for r in dims)}, dim == bound "
      f"{sum(r['dim'] == r['bound'] for r in dims)}, exact {sum(r['exact_s'] for r in dims):.2f} s, "
      f"float {sum(r['float_s'] or 0 for r in dims):.2f} s")
PY
}
step 10 "device" bash -c "nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv; \
    python3 -c 'import torch; print(\"torch\", torch.__version__, torch.cuda.get_device_name())'"
step 180 "expressivity tests, device=auto (CUDA)" \
    python3 -m pytest -q -p no:cacheprovider --durations=5 tests/test_expressivity.py
step 300 "cpu-scale run on CUDA (wall time)" \
    $Q experiment=expressivity device=cuda expressivity.replicates=5 \
    hydra.run.dir="$OUT/cpu_scale_cuda"
summary "$OUT/cpu_scale_cuda"
step 120 "paper-scale dimension table only (wall time)" \
    $Q experiment=expressivity scale=paper 'expressivity.targets=[]' device=cuda \
    hydra.run.dir="$OUT/paper_dimension"
summary "$OUT/paper_dimension"
echo "=== done $(date +%T)" | tee -a "$REPORT"
