#!/usr/bin/env bash
# The relinear part of the GPU check (about 6 minutes on one H100/H200; the limits add up
# to 9). Run from the repository root on a machine with one CUDA GPU:
#     OUT=gpu_results bash benchmarks/gpu_check_relinear.sh
# Everything is appended to $OUT/gpu_check_relinear.txt; the run folders land in $OUT/.
# What it measures (none of it can be measured on the 2-core development machine):
#   1. the relinear tests on CUDA (the default tier, device=auto picks CUDA);
#   2. the cpu-scale ablation on CUDA, one seed per strategy: every strategy trains and
#      the report pools them (claims need 5 seeds: the counts are not the point here);
#   3. paper-length epochs on CIFAR-shaped images (synthetic 3x32x32, width 16, batch 128,
#      4 px crop + flip): images/s of conventional, relinear_sg and relinear_rezero in
#      fp32 and bf16, which sizes the 200-epoch paper runs (CIFAR-10 itself is not on the
#      machine and cannot be downloaded there);
#   4. the authors' frozen compact variant (form=compact gamma=0) on CUDA: W_b stays 0.
# Packages the machine lacks may lie as wheels in .whl/; they are installed into /tmp/site.
CHECK=gpu_check_relinear
. "$(dirname "$0")/gpu_lib.sh"
Q="python3 -m quadrun"
step 10 "device" bash -c "nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv; \
    python3 -c 'import torch; print(\"torch\", torch.__version__, torch.cuda.get_device_name())'"
step 120 "relinear tests, device=auto (CUDA)" \
    python3 -m pytest -q -p no:cacheprovider --durations=5 tests/test_relinear.py
step 180 "cpu-scale ablation on CUDA, seed 0, six strategies (wall time of the sweep)" \
    $Q -m experiment=relinear device=cuda seed=0 \
    relinear.strategy=conventional,plain,relinear_init,relinear_sg,relinear_sw,relinear_rezero \
    hydra.sweep.dir="$OUT/ablation_cuda"
step 30 "report of that sweep" python3 -m quadrun.report "$OUT/ablation_cuda"
for precision in fp32 bf16; do
    step 120 "one CIFAR-shaped epoch (50000 images), conventional / relinear_sg / rezero, $precision" \
        $Q -m experiment=relinear device=cuda precision=$precision \
        relinear.strategy=conventional,relinear_sg,relinear_rezero relinear.dataset=synthetic \
        relinear.image_size=32 relinear.width=16 relinear.pad=4 relinear.flip=true \
        relinear.train_size=50000 relinear.test_size=10000 relinear.eval_batch=1000 \
        relinear.train.epochs=1 relinear.train.batch_size=128 'relinear.train.milestones=[]' \
        relinear.train.log_every=100 hydra.sweep.dir="$OUT/epoch_$precision"
    python3 - "$OUT/epoch_$precision" <<'PY' | tee -a "$REPORT"
import json, pathlib, sys
for f in sorted(pathlib.Path(sys.argv[1]).glob("*/summary.json")):
    s = json.loads(f.read_text())
    ips = s.get("train/images_per_s") or 0
    print(f"{s.get('strategy'):>16}: {ips:8.0f} images/s -> 200 epochs of 50k: "
          f"{200 * 50000 / ips / 3600 if ips else float('nan'):.2f} h of training steps")
PY
done
step 60 "frozen compact variant (form=compact gamma=0) on CUDA" \
    $Q experiment=relinear device=cuda relinear.form=compact relinear.gamma=0 \
    relinear.train.epochs=10 hydra.run.dir="$OUT/compact_frozen"
python3 -c "import json,sys; s=json.load(open(sys.argv[1])); print('compact frozen: W_b', \
    s.get('norm/W_b'), 'quad_b', s.get('norm/quad_b'), 'test/acc', s.get('test/acc'))" \
    "$OUT/compact_frozen/summary.json" 2>&1 | tee -a "$REPORT"
echo "=== done $(date +%T)" | tee -a "$REPORT"
