#!/usr/bin/env bash
# dcdm's GPU check (issues 17 and 28): the CUDA paths against eager (GPU tests), both archs
# (quadrun's additive net and the authors' N=64 net) trained on the GPU at 32^3, then every
# paper baseline and DCDM with each arch at 128^3 through benchmarks/solvers.py: iterations,
# set-up, solve, time per iteration and peak memory, the ratios to CG from the same run.
# Run from the repository root on a machine with one CUDA GPU:
#     OUT=gpu_results bash benchmarks/gpu_check_dcdm.sh
# Everything is appended to $OUT/gpu_check_dcdm.txt. The step limits add up to 10 minutes;
# the check should take about 6 on an H100/H200. Packages the machine lacks (hydra-core,
# omegaconf, antlr4, pyamg) may lie as wheels in .whl/ (installed into /tmp/site).
# What to read (issue 28): DCDM's set-up + solve time against CG, IC and deflated PCG at
# 128^3 for each arch (the paper's timing claim, on this GPU), and against MG (quadrun's
# extension); the iterations of each arch at 128^3 against those at 32^3 and 64^3 (the run's
# table) for size independence.
CHECK=gpu_check_dcdm
. "$(dirname "$0")/gpu_lib.sh"
RUN=/tmp/gpu_dcdm28
step 10 "device" bash -c "nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv; \
    python3 -c 'import torch; print(\"torch\", torch.__version__, torch.cuda.get_device_name())'"
step 90 "GPU tests: graphed network and multigrid against eager, bf16, channels-last" \
    python3 -m pytest -q -m gpu -p no:cacheprovider tests/test_dcdm.py
step 200 "train: 3-D additive and paper nets at 32^3 on the GPU (one each), solve 32^3 and 64^3" \
    python3 -m quadrun experiment=dcdm device=cuda 'dcdm.dims=[3]' 'dcdm.train_n=[32]' \
    'dcdm.samples=[1000]' 'dcdm.ritz_m=[1000]' 'dcdm.ritz_theta=[50]' 'dcdm.max_n=[64]' \
    'dcdm.eval_factors=[1,2]' 'dcdm.archs=[additive,paper]' dcdm.nets=1 \
    'dcdm.eval_scenes=[box,two_obstacles]' hydra.run.dir=$RUN data_dir=/tmp/gpu_data28
[ -f $RUN/report/table.md ] && sed -n '1,80p' $RUN/report/table.md | tee -a "$REPORT"
B="python3 benchmarks/solvers.py --device cuda --n 128 --scene two_obstacles"
ADD=$RUN/checkpoints/model_3d_additive_0.pt
PAPER=$RUN/checkpoints/model_3d_paper_0.pt
if [ -f $ADD ]; then
    step 240 "128^3: CG, IC, deflated, MG and DCDM (additive net trained at 32^3)" \
        $B --solvers cg,ic,deflated,mg,dcdm --checkpoint $ADD --arch additive --coarsest 4
else
    step 240 "128^3: CG, IC, deflated, MG (no trained additive net)" $B --solvers cg,ic,deflated,mg
fi
if [ -f $PAPER ]; then
    step 60 "128^3: CG and DCDM with the authors' N=64 net trained at 32^3" \
        $B --solvers cg,dcdm --checkpoint $PAPER --arch paper
fi
echo "=== done $(date +%T)" | tee -a "$REPORT"
