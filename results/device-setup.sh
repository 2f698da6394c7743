# Sourced by the device scripts (results/comparison/device.sh, results/scaling/device.sh) from the
# repository root on a CUDA machine with `.whl/` carried: one environment for every call. Sets OUT,
# G (.gpu/, git-ignored: everything installed or written there), LOG and `say`; copies carried
# Triton autotuning results into the cache (results/triton-autotune.tgz, committed: the choices of
# earlier sessions' calls, which spares each fla kernel minutes of tuning on a fresh machine; then
# .gpu-carry/triton, those of this session's earlier calls); installs the wheels (fla 0.6.0,
# lm-eval and its datasets stack; `.whl/` is built by results/device-wheels.sh) once per machine; builds mamba-ssm's CUDA kernels for sm_90 in the
# background (MAMBA_JOBS compile jobs, default 10; `wait_mamba` blocks until it is done, and
# "$G/mamba.done" marks it; MAMBA_BUILD=0 skips it, e.g. for a call that measures speed and needs
# the CPUs quiet); logs the GPU, driver, torch and Triton. Pass HARNESS_COMMIT=<the commit
# sent>: the device copy's git HEAD can be stale, and rows record it.
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
G=$PWD/.gpu; mkdir -p "$G/site" "$G/triton"
export PYTHONPATH=$G/site PYTHONUNBUFFERED=1 TRITON_CACHE_DIR=$G/triton HARNESS_CACHE=$G/hc \
       HF_DATASETS_OFFLINE=1 HF_HUB_OFFLINE=1
[ -n "${HARNESS_COMMIT:-}" ] && export HARNESS_COMMIT
LOG=$OUT/log.txt
say() { echo "[$(date -u +%T)] $*" | tee -a "$LOG"; }
[ -f results/triton-autotune.tgz ] && tar xzf results/triton-autotune.tgz -C "$G/triton" --skip-old-files
[ -d .gpu-carry/triton ] && cp -rn .gpu-carry/triton/. "$G/triton/"
if [ ! -f "$G/site/.wheels" ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --target "$G/site" .whl/fla_core-*.whl \
    .whl/flash_linear_attention-*.whl .whl/lm_eval-*.whl .whl/datasets-*.whl .whl/dill-*.whl \
    .whl/multiprocess-*.whl .whl/sqlitedict-*.whl && touch "$G/site/.wheels" || exit 1
fi
# mamba-ssm with its CUDA kernels, sm_90 only (setup.py patched in the carried source), in the background
if [ "${MAMBA_BUILD:-1}" = 0 ]; then
  :
elif ! ls "$G"/site/selective_scan_cuda*.so >/dev/null 2>&1; then
  ( t0=$(date +%s); rm -rf "$G/mamba"; mkdir -p "$G/mamba" && tar xzf .whl/mamba_ssm-*-sm90-src.tar.gz -C "$G/mamba" &&
    cd "$G"/mamba/mamba_ssm-* && MAMBA_FORCE_BUILD=TRUE MAX_JOBS=${MAMBA_JOBS:-10} python3 -m pip wheel -q \
      --no-build-isolation --no-deps -w "$G/mamba/wheel" . && python3 -m pip install -q --no-index --no-deps \
      --no-compile --target "$G/site" "$G"/mamba/wheel/mamba_ssm-*.whl && echo "mamba-ssm CUDA build: $(( $(date +%s) - t0 )) s";
    touch "$G/mamba.done" ) > "$OUT/mamba_build.log" 2>&1 &
else
  touch "$G/mamba.done"
fi
wait_mamba() {
  [ -f "$G/mamba.done" ] || say "waiting for the mamba-ssm build"
  while [ ! -f "$G/mamba.done" ]; do sleep 5; done
}
say "$(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader)"
say "$(python3 -c 'import torch,triton;print("torch",torch.__version__,"triton",triton.__version__)')"
