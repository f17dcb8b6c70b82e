#!/usr/bin/env bash
# dcdm's GPU check (issue 17): CUDA-graph / channels-last / bf16 paths of the solve against
# eager, a 3-D network trained on the GPU, then benchmarks/solvers.py at 64^3 and 128^3
# with every solver (CG, IC, deflated, AMG on the host, MG, DCDM) and its variants.
# Run from the repository root on a machine with one CUDA GPU:
#     OUT=gpu_results bash benchmarks/gpu_check_dcdm.sh [DCDM_MODEL_3D.pt ARCH]
# Everything is appended to $OUT/gpu_check_dcdm.txt. Each step has its own time limit (they
# add up to 11 minutes; the whole check should take about 6 on an H100/H200). The target
# (issue 17): DCDM's set-up + solve time below CG's at 128^3 and within 2x of MG's; the
# tables print the ratios to CG, and DCDM/MG is their quotient.
# DCDM_MODEL_3D.pt (with its arch, default additive): a trained 3-D net; by default the step
# "train" makes one (arch additive, trained at 32^3 on the box). Packages the machine lacks
# (hydra-core, omegaconf, antlr4, pyamg) may lie as wheels in .whl/ (installed into /tmp/site).
CHECK=gpu_check_dcdm
. "$(dirname "$0")/gpu_lib.sh"
MODEL=${1:-}
ARCH=${2:-additive}
step 10 "device" bash -c "nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv; \
    python3 -c 'import torch; print(\"torch\", torch.__version__, torch.cuda.get_device_name())'"
step 90 "GPU tests: graphed network and multigrid against eager, bf16, channels-last" \
    python3 -m pytest -q -m gpu -p no:cacheprovider tests/test_dcdm.py
if [ -z "$MODEL" ]; then
    step 150 "train: 3-D additive net at 32^3 on the GPU, solve table 32^3 and 64^3" \
        python3 -m quadrun experiment=dcdm device=cuda 'dcdm.dims=[3]' 'dcdm.train_n=[32]' \
        'dcdm.samples=[1000]' hydra.run.dir=/tmp/gpu_dcdm17 data_dir=/tmp/gpu_data17
    [ -f /tmp/gpu_dcdm17/report/table.md ] && head -20 /tmp/gpu_dcdm17/report/table.md | tee -a "$REPORT"
    [ -f /tmp/gpu_dcdm17/checkpoints/model_3d.pt ] && MODEL=/tmp/gpu_dcdm17/checkpoints/model_3d.pt
fi
CKPT=()
[ -n "$MODEL" ] && [ -f "$MODEL" ] && CKPT=(--checkpoint "$MODEL" --arch "$ARCH" --coarsest 4)
B="python3 benchmarks/solvers.py --device cuda"
step 180 "solvers: every solver, 64^3 and 128^3, fp32 network, CUDA graphs, float64 vectors" \
    $B --n 64 128 "${CKPT[@]}"
step 60 "solvers: bf16 network" $B --n 64 128 --solvers cg,mg,dcdm --precision bf16 "${CKPT[@]}"
step 60 "solvers: float32 Krylov vectors" $B --n 64 128 --solvers cg,mg,dcdm --dtype float32 "${CKPT[@]}"
step 60 "solvers: without CUDA graphs" $B --n 64 128 --solvers cg,mg,dcdm --no-graphs "${CKPT[@]}"
step 60 "solvers: the authors' N=64 net (untrained), time per iteration, fp32 and bf16" \
    bash -c "$B --n 64 128 --solvers cg,dcdm --arch paper; $B --n 64 128 --solvers cg,dcdm --arch paper --precision bf16"
step 30 "solvers: the authors' protocol (CG, deflated to an absolute tol)" \
    $B --n 64 --solvers cg,deflated --protocol authors
echo "=== done $(date +%T)" | tee -a "$REPORT"
