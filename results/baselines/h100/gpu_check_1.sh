#!/bin/bash
# Issue 5's GPU checks of the baselines, one device call from the repository root:
#   bash results/baselines/h100/gpu_check_1.sh   (with .whl/ carried; outputs under $OUT)
# 1. install fla-core + flash-linear-attention 0.6.0 (pure wheels) into /tmp/site;
# 2. build mamba-ssm 2.3.2.post1 with CUDA kernels for sm_90 only, in the background (its setup.py
#    patched to `cc_flag = [-gencode arch=compute_90,code=sm_90]`); causal-conv1d is not built;
# 3. fast paths vs references (bf16, forward + backward), decode vs forward, packed documents,
#    for every model that needs no mamba-ssm; then 200 training steps of each at the small preset;
# 4. the same for mamba and mamba2 once the wheel is installed.
set -u
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH=/tmp/site HARNESS_TRAIN_STEPS=${HARNESS_TRAIN_STEPS:-200}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/device.txt"
python3 -c "import torch, triton, transformers; print('torch', torch.__version__, 'triton', triton.__version__, 'transformers', transformers.__version__)" | tee -a "$OUT/device.txt"
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site \
    .whl/fla_core-0.6.0-py3-none-any.whl .whl/flash_linear_attention-0.6.0-py3-none-any.whl || exit 1
( set -e; t0=$(date +%s); mkdir -p /tmp/mamba && tar xzf .whl/mamba_ssm-2.3.2.post1-sm90-src.tar.gz -C /tmp/mamba
  cd /tmp/mamba/mamba_ssm-2.3.2.post1
  MAMBA_FORCE_BUILD=TRUE MAX_JOBS=12 python3 -m pip wheel -q --no-build-isolation --no-deps -w /tmp/mamba/wheel .
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site /tmp/mamba/wheel/mamba_ssm-*.whl
  echo "mamba-ssm CUDA build + install: $(( $(date +%s) - t0 )) s" ) > "$OUT/mamba_build.log" 2>&1 &
BUILD=$!
PYTEST="python3 -m pytest tests/test_baselines.py -s -q -p no:cacheprovider -W ignore"
timeout 160 $PYTEST -k "gpu and not mamba and not training" 2>&1 | tee "$OUT/checks.log"
timeout 210 $PYTEST -k "training and not mamba" 2>&1 | tee "$OUT/train.log"
wait $BUILD; tail -3 "$OUT/mamba_build.log"
python3 -c "import selective_scan_cuda, mamba_ssm; print('mamba-ssm', mamba_ssm.__version__, 'with CUDA kernels')" 2>&1 | tee -a "$OUT/device.txt"
timeout 70 $PYTEST -k "gpu and mamba and not training" 2>&1 | tee "$OUT/checks_mamba.log"
timeout 120 $PYTEST -k "training and mamba" 2>&1 | tee "$OUT/train_mamba.log"
grep -h "fast-vs-reference\|step-vs-forward\|packed-vs-separate\|^training\|passed\|failed\|FAILED\|Error" \
    "$OUT"/checks.log "$OUT"/checks_mamba.log "$OUT"/train.log "$OUT"/train_mamba.log
