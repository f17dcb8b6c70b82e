# Sourced by the GPU check scripts (benchmarks/gpu_check*.sh), after they set CHECK=<name>:
# $OUT (default gpu_results) gets $CHECK.txt, the wheels in .whl/ (packages the GPU machine
# lacks: hydra-core, omegaconf, antlr4, pyamg...) go into /tmp/site, and step() runs one
# timed, time-limited step:   step SECONDS TITLE COMMAND...
set -u
OUT=${OUT:-gpu_results}
mkdir -p "$OUT"
REPORT="$OUT/${CHECK:-gpu_check}.txt"
if ls .whl/*.whl >/dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site
fi
export PYTHONPATH="${PYTHONPATH:+$PYTHONPATH:}$PWD" PYTHONUNBUFFERED=1
step() {
    local limit=$1 title=$2; shift 2
    echo "=== $title  ($(date +%T), limit ${limit}s)" | tee -a "$REPORT"
    local t0=$SECONDS
    timeout "$limit" "$@" 2>&1 | tee -a "$REPORT"
    echo "=== $title: exit ${PIPESTATUS[0]} after $((SECONDS - t0)) s" | tee -a "$REPORT"
}
