#!/usr/bin/env bash
# The kernels' program order, before and after band_program (NOTES.md v14), in one device call:
# SWAT alone at the issue's shapes (`harness bench kernels --peers swat`, forward and forward +
# backward), first the new order (this tree), then the old one (the tree at OLD_COMMIT, unpacked
# beside it as ab_old/ before the call: `mkdir -p ab_old && git archive <OLD_COMMIT> harness | tar -x
# -C ab_old`), the old one with T = 4096 last, so that an order effect in the bench (4K was the first
# length of the committed run) shows apart from the shape. The GPU tests of the Hopper path and the
# realistic shapes run first, and a failure stops the call.
#   OUT=folder HARNESS_COMMIT=<sent commit> OLD_COMMIT=<old commit> bash results/kernels/program-order/device.sh
set -u
T0=$(date +%s)
MAMBA_BUILD=0 . results/device-setup.sh
timeout -k 10 150 python3 -m pytest tests/test_swat_kernel.py -p no:cacheprovider -W ignore -rA \
  -k "gpu and (hopper or realistic)" > "$OUT/gpu_tests.log" 2>&1
say "tests: $(tail -1 "$OUT/gpu_tests.log")"
if grep -Eq "^(FAILED|ERROR) " "$OUT/gpu_tests.log"; then say "a test failed: no bench"; exit 1; fi
say "new order ($HARNESS_COMMIT)"
python3 -m harness bench kernels --peers swat --modes fwd,fwd_bwd --out "$OUT/new" >> "$LOG" 2>&1
say "exit $?; old order ($OLD_COMMIT), T = 4096 last"
(cd ab_old && HARNESS_COMMIT=$OLD_COMMIT python3 -m harness bench kernels --peers swat --modes fwd,fwd_bwd \
  --lengths 16384,32768,4096 --out "$OUT/old") >> "$LOG" 2>&1
say "exit $?; done ($(( $(date +%s) - T0 )) s)"
