#!/usr/bin/env bash
# The GPU check: GPU-tier tests, one CUDA smoke run of every experiment, the training and
# solver benchmarks, one epoch of QResNet20 relinear_sg on CIFAR-shaped data, and packing
# several jobs onto the GPU. Each experiment has a deeper check of its own:
# benchmarks/gpu_check_<experiment>.sh.
# Run from the repository root on a machine with one CUDA GPU:
#     OUT=gpu_results bash benchmarks/gpu_check.sh [DCDM_MODEL_3D.pt]
# Everything is appended to $OUT/gpu_check.txt. Each step has its own time limit, so one
# slow step cannot starve the rest; the whole check is sized for under 8 minutes on an H100
# (the limits add up to 12; an earlier version took 4 min 53 s on one H100:
# results/gpu_check_h100.txt). DCDM_MODEL_3D.pt: a trained 3-D
# DCDM net (arch additive) for the solver benchmarks; by default the one step "dcdm" trains.
# Packages the machine lacks (hydra-core, omegaconf, antlr4, pyamg) may lie as wheels in
# .whl/; they are installed into /tmp/site first.
CHECK=gpu_check
. "$(dirname "$0")/gpu_lib.sh"
MODEL=${1:-}
step 10 "device" bash -c "nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv; \
    python3 -c 'import torch; print(\"torch\", torch.__version__, torch.cuda.get_device_name())'"
step 90 "benchmark: training step, fp32 (with the same training without CUDA graphs)" \
    python3 benchmarks/train.py --device cuda --steps 40 --rounds 5 --batch 128 --breakdown
step 200 "GPU-tier tests (CUDA graphs vs eager; a CUDA smoke run of every experiment)" \
    python3 -m pytest -q -m gpu -p no:cacheprovider --durations=12 tests/test_gpu.py
step 60 "benchmark: training step, bf16" \
    python3 benchmarks/train.py --device cuda --steps 40 --rounds 5 --batch 128 --precision bf16
step 45 "relinear: one epoch QResNet20 relinear_sg, 50000 CIFAR-shaped images, bf16" \
    python3 -m quadrun experiment=relinear scale=smoke device=cuda precision=bf16 \
    relinear.strategy=relinear_sg relinear.dataset=synthetic relinear.image_size=32 \
    relinear.width=16 relinear.pad=4 relinear.train_size=50000 relinear.test_size=10000 \
    relinear.eval_batch=1000 relinear.train.epochs=1 relinear.train.batch_size=128 \
    'relinear.train.milestones=[]' relinear.train.log_every=100 hydra.run.dir=/tmp/gpu_relinear
step 150 "dcdm: train 3-D at 32^3, solve table at 32^3 and 64^3 with every solver" \
    python3 -m quadrun experiment=dcdm device=cuda 'dcdm.dims=[3]' 'dcdm.train_n=[32]' \
    'dcdm.samples=[1000]' hydra.run.dir=/tmp/gpu_dcdm data_dir=/tmp/gpu_data
[ -f /tmp/gpu_dcdm/report/table.md ] && cat /tmp/gpu_dcdm/report/table.md | tee -a "$REPORT"
[ -f /tmp/gpu_dcdm/checkpoints/model_3d.pt ] && MODEL=/tmp/gpu_dcdm/checkpoints/model_3d.pt
CKPT=()
[ -n "$MODEL" ] && [ -f "$MODEL" ] && CKPT=(--checkpoint "$MODEL" --arch additive --coarsest 4)
step 40 "benchmark: solvers 3-D 64^3" python3 benchmarks/solvers.py --device cuda --n 64 --repeats 1 --solvers cg,mg,dcdm "${CKPT[@]}"
step 60 "benchmark: solvers 3-D 128^3" python3 benchmarks/solvers.py --device cuda --n 128 --repeats 1 --solvers cg,mg,dcdm "${CKPT[@]}"
step 120 "packing: 8 QResNet20 jobs (batch 128), 1, 2, 4 and 8 at once on the GPU" \
    python3 benchmarks/packing.py --jobs 8 --per-device 1,2,4,8 --threads 0 -- device=cuda \
    scale=smoke relinear.dataset=synthetic relinear.image_size=32 relinear.width=16 \
    relinear.train_size=10000 relinear.test_size=1000 relinear.train.epochs=2 \
    relinear.train.batch_size=128 'relinear.train.milestones=[]'
echo "=== done $(date +%T)" | tee -a "$REPORT"
