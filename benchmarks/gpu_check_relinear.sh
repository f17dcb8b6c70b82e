#!/usr/bin/env bash
# The relinear part of the GPU check (about 12 minutes on one H100/H200; the limits add up
# to 16). Run from the repository root on a machine with one CUDA GPU:
#     OUT=gpu_results bash benchmarks/gpu_check_relinear.sh
# Everything is appended to $OUT/gpu_check_relinear.txt; the run folders land in $OUT/.
# What it measures (none of it can be measured on the 2-core development machine):
#   1. the relinear tests on CUDA (the default tier, device=auto picks CUDA);
#   2. scale=paper, relinear_sg, 1 seed, as far as 8 minutes allow: QResNet20 on CIFAR-10
#      from data_dir when it is there; otherwise on CIFAR-shaped generated images (3x32x32,
#      50000 training / 10000 test, the same tensors and steps: quadrun's CIFAR reader
#      refuses files whose checksums are not the official ones, so generated files in the
#      pickle format would not load). One epoch first gives images/s; the second run trains
#      as many epochs as fit (the lr milestones scaled to that length) and prints images/s
#      and the final accuracies;
#   3. images/s of the parameter-matched controls beside it (conventional,
#      conventional_matched, relinear_rezero, conventional_rezero; one epoch each, bf16);
#   4. the authors' frozen compact variant (form=compact gamma=0) on CUDA: W_b stays 0.
# Packages the machine lacks may lie as wheels in .whl/; they are installed into /tmp/site.
CHECK=gpu_check_relinear
. "$(dirname "$0")/gpu_lib.sh"
Q="python3 -m quadrun"
DATA=${DATA:-data}
if python3 -c "import sys; from quadrun.data.cifar import available; sys.exit(not available('$DATA'))"; then
    IMAGES="data_dir=$DATA"
else
    IMAGES="relinear.dataset=synthetic relinear.image_size=32 relinear.train_size=50000 relinear.test_size=10000"
fi
echo "paper-scale images: $IMAGES" | tee -a "$REPORT"
speed() {  # images/s, accuracies and epochs of the run folders under $1
    python3 - "$1" <<'PY' | tee -a "$REPORT"
import json, pathlib, sys
for f in sorted(pathlib.Path(sys.argv[1]).glob("**/summary.json")):
    s = json.loads(f.read_text())
    ips = s.get("train/images_per_s") or 0
    print(f"{s.get('strategy'):>20}: {ips:8.0f} images/s, {s.get('epochs')} epochs, test/acc "
          f"{s.get('test/acc')}, status {s.get('status')} -> 200 epochs of 50k: "
          f"{200 * 50000 / ips / 3600 if ips else float('nan'):.2f} h of training steps")
PY
}
step 10 "device" bash -c "nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv; \
    python3 -c 'import torch; print(\"torch\", torch.__version__, torch.cuda.get_device_name())'"
step 150 "relinear tests, device=auto (CUDA)" \
    python3 -m pytest -q -p no:cacheprovider --durations=5 tests/test_relinear.py
step 90 "scale=paper relinear_sg, one epoch (images/s)" \
    $Q experiment=relinear scale=paper device=cuda precision=bf16 seed=0 $IMAGES \
    relinear.strategy=relinear_sg relinear.train.epochs=1 'relinear.train.milestones=[]' \
    hydra.run.dir="$OUT/paper_epoch"
speed "$OUT/paper_epoch"
EPOCHS=$(python3 -c "import json; s=json.load(open('$OUT/paper_epoch/summary.json')); \
    print(max(1, min(200, int(420 * s['train/images_per_s'] / 50000))))" 2>/dev/null || echo 5)
M1=$(( EPOCHS / 2 )); M2=$(( EPOCHS * 3 / 4 ))
step 480 "scale=paper relinear_sg, seed 0, $EPOCHS epochs (milestones $M1, $M2)" \
    $Q experiment=relinear scale=paper device=cuda precision=bf16 seed=0 $IMAGES \
    relinear.strategy=relinear_sg relinear.train.epochs=$EPOCHS \
    "relinear.train.milestones=[$M1,$M2]" hydra.run.dir="$OUT/paper_sg"
speed "$OUT/paper_sg"
step 150 "one CIFAR-shaped epoch: the controls beside the quadratic nets (bf16)" \
    $Q -m experiment=relinear scale=paper device=cuda precision=bf16 seed=0 \
    relinear.dataset=synthetic relinear.image_size=32 relinear.train_size=50000 \
    relinear.test_size=10000 \
    relinear.strategy=conventional,conventional_matched,relinear_rezero,conventional_rezero \
    relinear.train.epochs=1 'relinear.train.milestones=[]' hydra.sweep.dir="$OUT/controls"
speed "$OUT/controls"
step 60 "frozen compact variant (form=compact gamma=0) on CUDA" \
    $Q experiment=relinear device=cuda relinear.form=compact relinear.gamma=0 \
    relinear.train.epochs=10 hydra.run.dir="$OUT/compact_frozen"
python3 -c "import json,sys; s=json.load(open(sys.argv[1])); print('compact frozen: W_b', \
    s.get('norm/W_b'), 'quad_b', s.get('norm/quad_b'), 'test/acc', s.get('test/acc'))" \
    "$OUT/compact_frozen/summary.json" 2>&1 | tee -a "$REPORT"
echo "=== done $(date +%T)" | tee -a "$REPORT"
