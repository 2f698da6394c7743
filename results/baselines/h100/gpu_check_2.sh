#!/bin/bash
# Issue 5's second device call (the first, gpu_check_1.sh, spent its time compiling fla's kernels
# beside the mamba-ssm CUDA build): the fla models and Mamba-2, most important checks first,
#   bash results/baselines/h100/gpu_check_2.sh   (with .whl/ carried; outputs under $OUT)
# Mamba-2 takes mamba-ssm's documented skip-build path: a pure-Python wheel (built on a CPU with
# MAMBA_FORCE_BUILD=TRUE MAMBA_SKIP_CUDA_BUILD=TRUE) whose module-level `import selective_scan_cuda`
# is met by an empty stub module, so the SSD Triton kernels run; Mamba-1 (needing the CUDA scan) is
# left out of this call.
set -u
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH=/tmp/site HARNESS_TRAIN_STEPS=${HARNESS_TRAIN_STEPS:-200}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/device.txt"
python3 -m pip install -q --no-index --no-deps --no-compile --upgrade --target /tmp/site .whl/fla_core-0.6.0-py3-none-any.whl \
    .whl/flash_linear_attention-0.6.0-py3-none-any.whl .whl/mamba_ssm-2.3.2.post1-py3-none-any.whl || exit 1
echo '"""Stub for the skip-build mamba-ssm wheel: no CUDA selective scan here."""' > /tmp/site/selective_scan_cuda.py
T=tests/test_baselines.py
G="$T::test_gpu_small_preset_training_reduces_the_loss"
O="$T::test_gpu_fla_chunk_kernels_match_naive_recurrences"
S="$T::test_gpu_step_and_prefill_equal_the_full_forward"
timeout ${BUDGET_S:-270} python3 -m pytest -s -q -p no:cacheprovider -W ignore \
    "$G[gla]" "$O[gla]" "$G[retnet]" "$O[retention]" "$G[deltanet]" "$O[delta_rule]" \
    "$G[gated_deltanet]" "$O[gated_delta_rule]" "$G[hgrn2]" \
    "$T::test_gpu_mamba2_ssd_kernel_matches_reference" "$G[mamba2]" \
    "$S[gla]" "$S[retnet]" "$S[hgrn2]" "$S[deltanet]" "$S[gated_deltanet]" "$S[mamba2]" \
    "$T::test_gpu_mamba_models_fast_path_matches_their_reference[mamba2]" \
    "$T::test_gpu_softmax_attention_matches_reference" "$T::test_gpu_packed_documents_equal_separate_sequences" \
    "$S[transformer]" "$S[sliding_softmax]" "$S[swat]" 2>&1 | tee "$OUT/checks2.log"
