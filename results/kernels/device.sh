#!/usr/bin/env bash
# Issue 24's kernel measurements, from the repository root with `.whl/` carried (fla, a peer), on a
# CUDA machine; each mode fits one 10-minute device call, and `bench` resumes on a warm machine:
#   OUT=folder HARNESS_COMMIT=<sent commit> [SWEEPS=tiles,decode] [WINDOWS=512,1024] [HEAD_DIMS=64] [LENGTH=4096] [TESTS=gpu] [GATE_S=150] bash results/kernels/device.sh tune
#   OUT=folder HARNESS_COMMIT=<sent commit> [HEAD_DIMS=64,128] [TESTS=expr] [GATE_S=150] [BUDGET_S=570] bash results/kernels/device.sh bench
#   OUT=folder HARNESS_COMMIT=<sent commit> [BUDGET_S=570] bash results/kernels/device.sh decode
#   OUT=folder HARNESS_COMMIT=<sent commit> [TESTS=expr] [GATE_S=150] [BUDGET_S=570] bash results/kernels/device.sh attention
#   OUT=folder HARNESS_COMMIT=<sent commit> ROWS=ere [HEAD_DIMS=64] [WINDOWS=128,T] [TESTS=expr] [GATE_S=150] [BUDGET_S=570] bash results/kernels/device.sh rows
# tune:  the GPU tests of the kernels (realistic shapes with both backwards, every dtype and head
#        size; the whole file compiled took over 150 s, so it belongs in a study call's GPU_TESTS;
#        TESTS=every_dtype runs only the test of every dtype and head size, 211 s on a fresh H200,
#        most of it fp32 at d = 128's first compiles: give it GATE_S=300),
#        then `python -m harness.bench.tune --sweeps $SWEEPS` (tile configs of every pass, FUSED_DQ
#        against the two-pass backward; decode launch configs, ACC_2D and SUM_IN_KERNEL among them,
#        144 configs at 18 shapes: give SWEEPS=decode a call of its own; the sigmoid's modes, each
#        timed and its error against the fp32 kernel measured, at T = 16K; the backward's spread
#        from round to round, SWEEPS=spread WINDOWS=128, about 2 minutes; the program orders,
#        SWEEPS=order, at the bench's lengths; HEAD_DIMS and LENGTH narrow the tiles and sigmoid
#        sweeps, e.g. SWEEPS=tiles HEAD_DIMS=64 LENGTH=4096 WINDOWS=T) as tune.jsonl, written row by
#        row (a sweep cut at the time limit keeps what it measured); the winners go into
#        harness/ops/swat/function.py by hand, with the numbers in NOTES.md.
# bench: with TESTS, the kernel's GPU tests matching it first (as attention's), no bench if one failed;
#        then `harness bench kernels` at the issue's shapes (T 4K/16K/32K, W 128/512/2048/T, fwd and
#        fwd+bwd, then decode at batch 1, 8, 64) into .gpu/results/kernels, packed as kernels.tgz;
#        a cut run goes on where it stopped when called again on the same machine.
# decode: after a change to the decode alone, the GPU decode tests, and only if none failed, the
#        bench's decode rows measured again (batch 1, 8, 64) into a copy of this GPU's committed
#        folder, whose forward and backward rows are kept as they are; packed as kernels.tgz.
# attention: after a change to the forward and backward alone, their GPU tests (TESTS, a pytest -k
#        expression, default the Hopper path's and the realistic shapes'; about 90 s), and only if
#        none failed, the bench's forward and forward + backward rows measured again into a copy of
#        this GPU's committed folder, whose decode rows are kept as they are; packed as kernels.tgz.
# rows:  as attention, for the forward and forward + backward rows of kernels.csv that ROWS (an
#        extended regex of a row's first fields, mode,head_dim,seq_len,window,batch,heads,peer)
#        matches alone (the shapes a change reaches, or a row to time again); HEAD_DIMS and
#        WINDOWS narrow the bench to the shapes those rows are in.
# mamba-ssm is not built (MAMBA_BUILD=0): the CPUs stay quiet beside the timings. `timeout -k`:
# a command that ignores the first SIGTERM (one call's bench, inside a Triton compile) is killed
# 10 s later, so that the packing still runs before the call's own limit.
set -u
T0=$(date +%s)
MAMBA_BUILD=0 . results/device-setup.sh
left() { echo $(( ${BUDGET_S:-570} - ($(date +%s) - T0) )); }
# gate EXPR: the kernel's GPU tests matching EXPR (a pytest -k expression) into gpu_tests.log, each
# test's outcome named (-rA), within GATE_S seconds (default 150); the call stops there when one
# failed or the limit cut them, so that no bench times a kernel whose results are wrong or unchecked
gate() {
  timeout -k 10 "${GATE_S:-150}" python3 -m pytest tests/test_swat_kernel.py -p no:cacheprovider -W ignore -rA \
    -k "$1" > "$OUT/gpu_tests.log" 2>&1
  rc=$?
  say "tests: $(tail -1 "$OUT/gpu_tests.log")"
  if [ $rc = 124 ] || [ $rc = 137 ]; then say "the tests ran past ${GATE_S:-150} s: no bench"; exit 1; fi
  if grep -Eq "^(FAILED|ERROR) " "$OUT/gpu_tests.log"; then say "a test failed: no bench"; exit 1; fi
}
# remeasure ROWS MODES: the bench's MODES measured again into a copy of this GPU's committed folder
# without its rows whose first fields match ROWS (an extended regex), the others kept as they are
remeasure() {
  D=$(python3 -c "from harness.results.provenance import device_name, device_slug; print(device_slug(device_name('cuda')))")
  mkdir -p "$G/results/kernels/$D"
  if [ -f "results/kernels/$D/kernels.csv" ]; then
    grep -Ev "^($1)," "results/kernels/$D/kernels.csv" > "$G/results/kernels/$D/kernels.csv"
    cp "results/kernels/$D/run.json" "$G/results/kernels/$D/"  # the earlier runs' record, kept under `earlier`
  fi
  say "bench kernels, $2 only, into a copy of results/kernels/$D ($(( $(left) - 20 )) s at most)"
  timeout -k 10 $(( $(left) - 30 )) python3 -m harness bench kernels --out "$G/results/kernels" \
    --head-dims "${HEAD_DIMS:-64,128}" ${WINDOWS:+--windows "$WINDOWS"} --modes "$2" --decode-batches 1,8,64 >> "$LOG" 2>&1
  say "bench exit $?"
  tar czf "$OUT/kernels.tgz" -C "$G/results" kernels
}
case "${1:-}" in
  tune)
    say "kernel tests on the GPU (the realistic shapes, every dtype and head size)"
    timeout -k 10 "${GATE_S:-150}" python3 -m pytest tests/test_swat_kernel.py -p no:cacheprovider -W ignore -rfEs -k "${TESTS:-gpu}" \
      > "$OUT/gpu_tests.log" 2>&1; say "tests: $(tail -1 "$OUT/gpu_tests.log")"
    say "sweeps ${SWEEPS:-tiles,decode} ($(( $(left) - 15 )) s at most)"
    timeout -k 10 $(( $(left) - 25 )) python3 -m harness.bench.tune --sweeps "${SWEEPS:-tiles,decode}" \
      ${WINDOWS:+--windows "$WINDOWS"} ${HEAD_DIMS:+--head-dims "$HEAD_DIMS"} ${LENGTH:+--length "$LENGTH"} \
      --out "$OUT/tune.jsonl" > "$OUT/tune.txt" 2>&1; say "tune exit $?" ;;
  bench)
    if [ -n "${TESTS:-}" ]; then gate "$TESTS"; fi
    say "bench kernels, d=${HEAD_DIMS:-64,128} ($(( $(left) - 20 )) s at most)"
    timeout -k 10 $(( $(left) - 30 )) python3 -m harness bench kernels --out "$G/results/kernels" \
      --head-dims "${HEAD_DIMS:-64,128}" --modes fwd,fwd_bwd,decode --decode-batches 1,8,64 >> "$LOG" 2>&1
    say "bench exit $?"
    tar czf "$OUT/kernels.tgz" -C "$G/results" kernels ;;
  decode)
    gate "gpu and decode"
    remeasure decode decode ;;
  attention)
    gate "${TESTS:-gpu and (hopper or realistic)}"
    remeasure 'fwd(_bwd)?' fwd,fwd_bwd ;;
  rows)
    gate "${TESTS:-gpu and (hopper or realistic)}"
    remeasure "${ROWS:?ROWS: an extended regex of the rows to measure again}" fwd,fwd_bwd ;;
  *) echo "usage: device.sh tune|bench|decode|attention|rows" >&2; exit 2 ;;
esac
say "done ($(( $(date +%s) - T0 )) s)"
